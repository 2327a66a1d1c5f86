"""Sentence-pair classification (fine-tuning, ``preln finetune``): a pretrained masked LM's
encoder through its pooled classifier head, on a pairs corpus; accuracy (and F1) at every
validation and on dev and test at the end. (Torch and the data are imported where used: see
``tasks/__init__.py``.)"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..config import ModelConfig, RunConfig
from .base import Task
from .mlm import PAIR_RULE

if TYPE_CHECKING:
    from torch import Tensor, nn

    from ..data.batching import Batch


class ClassifyTask(Task):
    name = "classify"
    uses = "predict"
    scored_splits = ("valid", "test")
    export = "encoder"
    hf_head = "SequenceClassification"

    def checks(self, cfg: RunConfig) -> list[tuple[bool, str]]:
        m, d = cfg.model, cfg.data
        labels = f"model.num_classes ({m.num_classes}) must equal the number of data.pair_labels ({len(d.pair_labels)})"
        return [
            (m.num_classes == len(d.pair_labels), labels),
            (d.max_len >= 5, f"data.max_len={d.max_len}: {PAIR_RULE}"),
        ]

    def build_model(self, c: ModelConfig, pad_id: int = 0) -> nn.Module:
        from ..model import MaskedLM

        return MaskedLM(c, pad_id)  # the same encoder; its classifier head

    def load_data(self, cfg: RunConfig, tokenizer_file: Path | None = None) -> tuple:
        from ..data.corpus import CorpusError
        from ..data.datasets import PairData, finish, read_pair_examples
        from ..data.tokenizer import Tokenizer

        d = cfg.data
        if d.corpus != "pairs":
            raise CorpusError("sentence-pair classification needs a pairs corpus (data.corpus = pairs)")
        if tokenizer_file is None:
            raise CorpusError("classification uses a pretrained run's vocabulary: set train.init_from")
        tok = Tokenizer(tokenizer_file)
        examples, notes, got = read_pair_examples(cfg, tok)
        data = PairData(examples, d.max_tokens, cfg.train.seed, d.batch_size_multiple)
        data.token_ids, data.entry = got.provenance(), got.entry
        return finish(data, notes, cfg), tok

    def loss(self, model: nn.Module, batch: Batch, eps: float) -> tuple[Tensor, Tensor]:
        from ..losses import label_smoothed_nll

        t = batch.tensors  # one target per example
        return label_smoothed_nll(model(t["ids"], segments=t["segments"], classify=True), t["labels"], eps)

    def counted_loss(self, model: nn.Module, batch: Batch, eps: float) -> tuple[Tensor, Tensor, Tensor]:
        import torch

        from ..losses import label_smoothed_nll

        t = batch.tensors
        logits = model(t["ids"], segments=t["segments"], classify=True)  # (B, C)
        c = logits.shape[-1]
        confusion = torch.bincount(t["labels"] * c + logits.argmax(-1), minlength=c * c)  # (C*C,) [label, prediction]
        return (*label_smoothed_nll(logits, t["labels"], eps), confusion)

    def scores(self, counts: list[float]) -> dict:
        from ..scores import confusion_scores

        return confusion_scores(counts)
