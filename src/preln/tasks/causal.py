"""Causal language modelling: a decoder-only model (``CausalLM``) on text, every placement;
validation perplexity; ``preln generate`` continues prompts (greedy or top-k sampling)."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from ..config import ModelConfig, RunConfig
from ..data.batching import Batch
from ..data.corpus import CorpusError
from ..data.datasets import CausalData, finish, read_text_corpus
from ..losses import label_smoothed_nll
from ..model import CausalLM
from .base import Task


class CausalLMTask(Task):
    name = "causal"
    uses = "generate"
    unused_parameters = False

    def build_model(self, c: ModelConfig, pad_id: int = 0) -> nn.Module:
        return CausalLM(c, pad_id)

    def load_data(self, cfg: RunConfig, tokenizer_file: Path | None = None) -> tuple:
        d = cfg.data
        if d.mlm_pairs:
            raise CorpusError("data.mlm_pairs packs segment pairs for masked-LM pretraining; a causal LM reads text")
        text, notes = read_text_corpus(cfg, tokenizer_file, "a causal language model")
        data = CausalData(text.segments, d.max_tokens, cfg.train.seed, len(text.tok), d.batch_size_multiple)
        data.token_ids = text.provenance()
        return finish(data, notes, cfg), text.tok

    def loss(self, model: nn.Module, batch: Batch, eps: float) -> tuple[Tensor, Tensor]:
        t = batch.tensors
        return label_smoothed_nll(model(t["ids"]), t["targets"], eps)
