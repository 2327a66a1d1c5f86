"""The tasks, by name: ``get(cfg.model.task)`` is the one place a run's kind is looked up.

Adding a task: a module here with a ``Task`` subclass (``base.py``), its name in ``config.Task``
and in ``TASKS`` below. The task modules import torch, models and data inside their methods, so
that ``preln config`` checks a config against its task (``check``) without loading torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..config import ConfigError, ModelConfig, RunConfig
from .base import Task
from .causal import CausalLMTask
from .classify import ClassifyTask
from .mlm import MaskedLMTask
from .translation import TranslationTask

if TYPE_CHECKING:
    from torch import nn

TASKS: dict[str, Task] = {t.name: t for t in (TranslationTask(), MaskedLMTask(), ClassifyTask(), CausalLMTask())}


def get(name: str) -> Task:
    return TASKS[name]


def check(cfg: RunConfig) -> RunConfig:
    """``cfg`` if it keeps its task's rules, else the first broken rule as a ``ConfigError``."""
    for ok, msg in get(cfg.model.task).checks(cfg):
        if not ok:
            raise ConfigError(msg)
    return cfg


def load_data(cfg: RunConfig, tokenizer_file: Path | None = None) -> tuple:
    """(dataset, tokenizer) of ``cfg``'s task: read, tokenize (training a cached tokenizer unless
    ``tokenizer_file`` is given), batch."""
    return get(cfg.model.task).load_data(cfg, tokenizer_file)


def build_model(c: ModelConfig, pad_id: int = 0) -> nn.Module:
    """The model of ``c.task`` (Seq2Seq, MaskedLM, CausalLM), freshly initialized."""
    return get(c.task).build_model(c, pad_id)


def compute_loss(model: nn.Module, batch, eps: float):
    """Summed (label-smoothed loss, nll) of ``batch`` for an unwrapped model of any task (its
    ``config`` says which): the analysis's and Admin's profiling forward."""
    return get(model.config.task).loss(model, batch, eps)


__all__ = ["TASKS", "Task", "build_model", "check", "compute_loss", "get", "load_data"]
