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
    import torch
    from torch import Tensor, nn

    from ..data.batching import Batch


class ClassifyTask(Task):
    name = "classify"
    uses = "predict"
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

    def valid_scores(self, model: nn.Module, data, device: torch.device) -> dict:
        return scores(model, data, "valid", device)

    def final_scores(self, model: nn.Module, data, device: torch.device) -> dict[str, dict]:
        return {s: scores(model, data, s, device) for s in ("valid", "test") if s in data.examples}


def scores(model: nn.Module, data, split: str, device: torch.device) -> dict:
    """Accuracy (and F1) of a pair classifier on a split of its ``PairData``."""
    import torch

    from ..scores import accuracy_f1

    model.eval()
    predictions, labels = [], []
    with torch.no_grad():
        for k in range(data.num_batches(split)):
            t = data.batch(split, 0, k).to(device).tensors
            predictions += model(t["ids"], segments=t["segments"], classify=True).argmax(-1).tolist()
            labels += t["labels"].tolist()
    return accuracy_f1(predictions, labels)
