"""Masked-LM pretraining (BERT): an encoder on text, single segments or segment pairs."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from ..config import ModelConfig, RunConfig
from ..data.batching import Batch
from ..data.datasets import MLMData, finish, read_text_corpus
from ..losses import label_smoothed_nll
from ..model import MaskedLM
from .base import Task


class MaskedLMTask(Task):
    name = "mlm"
    uses = "predict"
    export = "encoder"
    hf_head = "MaskedLM"
    pretrains = True

    def build_model(self, c: ModelConfig, pad_id: int = 0) -> nn.Module:
        return MaskedLM(c, pad_id)

    def load_data(self, cfg: RunConfig, tokenizer_file: Path | None = None) -> tuple:
        d = cfg.data
        text, notes = read_text_corpus(cfg, tokenizer_file, "masked-LM")
        data = MLMData(
            text.segments, d.max_tokens, cfg.train.seed, d.mask_prob, len(text.tok), d.batch_size_multiple, d.mlm_pairs
        )
        data.token_ids = text.provenance()
        return finish(data, notes, cfg), text.tok

    def loss(self, model: nn.Module, batch: Batch, eps: float) -> tuple[Tensor, Tensor]:
        t = batch.tensors
        chosen = t["targets"] != -100  # (B, T) masked positions only
        logits = model(t["ids"], segments=t.get("segments"), mlm_positions=chosen)  # segments: pair-packed MLM
        return label_smoothed_nll(logits, t["targets"][chosen], eps)
