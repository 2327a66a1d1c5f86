"""Causal language modelling: a decoder-only model (``CausalLM``) on text, every placement;
validation perplexity; ``preln generate`` continues prompts (greedy or top-k sampling). (Torch
and the data are imported where used: see ``tasks/__init__.py``.)"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..config import ModelConfig, RunConfig
from .base import Task

if TYPE_CHECKING:
    from torch import Tensor, nn

    from ..data.batching import Batch


class CausalLMTask(Task):
    name = "causal"
    uses = "generate"
    export = "causal"
    unused_parameters = False

    def checks(self, cfg: RunConfig) -> list[tuple[bool, str]]:
        why = "data.mlm_pairs packs segment pairs for masked-LM pretraining; a causal LM reads plain text"
        return [(not cfg.data.mlm_pairs, why)]

    def build_model(self, c: ModelConfig, pad_id: int = 0) -> nn.Module:
        from ..model import CausalLM

        return CausalLM(c, pad_id)

    def load_data(self, cfg: RunConfig, tokenizer_file: Path | None = None) -> tuple:
        from ..data.datasets import CausalData, finish, read_text_corpus

        d = cfg.data
        text, notes = read_text_corpus(cfg, tokenizer_file, "a causal language model")
        data = CausalData(text.segments, d.max_tokens, cfg.train.seed, len(text.tok), d.batch_size_multiple)
        data.token_ids, data.counts, data.entry = text.provenance(), text.arrays.get("train.counts"), text.entry
        return finish(data, notes, cfg), text.tok

    def loss(self, model: nn.Module, batch: Batch, eps: float) -> tuple[Tensor, Tensor]:
        from ..losses import label_smoothed_nll

        t = batch.tensors
        return label_smoothed_nll(model(t["ids"]), t["targets"], eps)
