"""What every task answers: its model, its data, how a batch becomes a loss, what it validates
and scores, how its trained models are used and exported. One subclass a kind of model (a file
each in this package), registered by name in ``tasks/__init__.py``; no other module asks which
task a run is, it asks the run's ``Task``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from ..config import ModelConfig, RunConfig

if TYPE_CHECKING:  # the tasks load torch only when a model or data is made (see tasks/__init__.py)
    from torch import Tensor, nn

    from ..data.batching import Batch
    from ..data.tokenizer import Tokenizer


class Task:
    name: ClassVar[str]
    uses: ClassVar[Literal["translate", "predict", "generate"]]
    """The command that uses a trained model of this task."""
    export: ClassVar[Literal["seq2seq", "encoder", "causal", "none"]] = "none"
    """How ``preln export --format hf`` writes it: FSMT, a BERT-like encoder, GPT-2, or not at all."""
    hf_head: ClassVar[str] = ""
    """The Transformers head class suffix of an ``encoder`` export (``MaskedLM``, ...)."""
    pretrains: ClassVar[bool] = False
    """Its runs are what ``preln finetune`` starts from."""
    evaluated: ClassVar[bool] = False
    """``preln evaluate`` scores its runs (test BLEU): a study's ``evaluate`` step applies."""
    decodes_at_epoch_end: ClassVar[bool] = False
    """Validation decodes at epoch ends (greedy BLEU; ``train.valid_bleu``)."""
    unused_parameters: ClassVar[bool] = True
    """Some of the model's parameters get no gradient (another task's head): DDP must know."""
    scored_splits: ClassVar[tuple[str, ...]] = ()
    """The splits the final model is scored on at the run's end (``scores.json``; ``scores``)."""

    def checks(self, cfg: RunConfig) -> list[tuple[bool, str]]:
        """This task's rules on a config (beyond the config's own), as (holds, message) pairs."""
        return []

    def build_model(self, c: ModelConfig, pad_id: int = 0) -> nn.Module:
        raise NotImplementedError

    def load_data(self, cfg: RunConfig, tokenizer_file: Path | None = None) -> tuple:
        """(dataset, tokenizer): read, tokenize (training a cached tokenizer unless
        ``tokenizer_file`` is given), batch."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Batch, eps: float) -> tuple[Tensor, Tensor]:
        """Summed (label-smoothed loss, nll) of one batch. Calls ``model(...)`` (never a
        submodule) so that a DDP/FSDP wrapper sees the whole forward."""
        raise NotImplementedError

    def layers(self, c: ModelConfig) -> int:
        """Transformer layers of the model (a memory estimate's activations)."""
        return c.encoder_layers

    def counted_loss(self, model: nn.Module, batch: Batch, eps: float) -> tuple[Tensor, Tensor, Tensor | None]:
        """``loss`` with the batch's counts for ``scores`` from the same forward (classification:
        its confusion matrix), or None when the task scores nothing beside the loss. Counts, not
        predictions, so that they sum over batches and ranks like the loss."""
        return (*self.loss(model, batch, eps), None)

    def scores(self, counts: list[float]) -> dict:
        """Scores from a split's summed counts (``counted_loss``), as ``{"accuracy": ..., "n": ...}``."""
        return {}

    def epoch_scores(self, model: nn.Module, tok: Tokenizer, cfg: RunConfig) -> dict:
        """Scores that decode, at epoch ends (``decodes_at_epoch_end``)."""
        return {}
