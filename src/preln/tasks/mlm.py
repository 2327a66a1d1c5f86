"""Masked-LM pretraining (BERT): an encoder on text, single segments or segment pairs. (Torch and
the data are imported where used: see ``tasks/__init__.py``.)"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..config import ModelConfig, RunConfig
from .base import Task

if TYPE_CHECKING:
    from torch import Tensor, nn

    from ..data.batching import Batch

PAIR_RULE = "a sentence pair <cls> A <sep> B <sep> needs at least 5 tokens"


class MaskedLMTask(Task):
    name = "mlm"
    uses = "predict"
    export = "encoder"
    hf_head = "MaskedLM"
    pretrains = True

    def checks(self, cfg: RunConfig) -> list[tuple[bool, str]]:
        d = cfg.data
        return [(d.max_len >= 5 or not d.mlm_pairs, f"data.max_len={d.max_len}: {PAIR_RULE}")]

    def build_model(self, c: ModelConfig, pad_id: int = 0) -> nn.Module:
        from ..model import MaskedLM

        return MaskedLM(c, pad_id)

    def load_data(self, cfg: RunConfig, tokenizer_file: Path | None = None) -> tuple:
        from ..data.datasets import MLMData, finish, read_text_corpus

        d = cfg.data
        text, notes = read_text_corpus(cfg, tokenizer_file, "masked-LM")
        data = MLMData(
            text.segments, d.max_tokens, cfg.train.seed, d.mask_prob, len(text.tok), d.batch_size_multiple, d.mlm_pairs
        )
        data.token_ids, data.counts, data.entry = text.provenance(), text.arrays.get("train.counts"), text.entry
        return finish(data, notes, cfg), text.tok

    def loss(self, model: nn.Module, batch: Batch, eps: float) -> tuple[Tensor, Tensor]:
        from ..losses import label_smoothed_nll

        t = batch.tensors
        chosen = t["targets"] != -100  # (B, T) masked positions only
        logits = model(t["ids"], segments=t.get("segments"), mlm_positions=chosen)  # segments: pair-packed MLM
        return label_smoothed_nll(logits, t["targets"][chosen], eps)
