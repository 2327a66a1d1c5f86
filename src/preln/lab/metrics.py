"""The metrics a study's claims can name: one table of their direction, unit, convention and
non-inferiority margin, read by the claims, the reports and the study-file check (a claim that
names an unknown metric is an error when the study is loaded, not after its grid has trained)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..config import ConfigError


@dataclass(frozen=True)
class Metric:
    name: str
    """As a claim names it: ``test_bleu``, ``final_nll``, ``test_accuracy:paraphrase``..."""
    label: str
    """In words, with its convention."""
    unit: str
    higher_is_better: bool
    margin: float
    """Non-inferiority margin ("at least as good as" allows this much worse), in ``unit``."""
    digits: int = 2
    task: str = ""
    """The fine-tuning task of a ``<metric>:<task>`` name."""
    comparable: bool = True
    """False: reported as a value only (a count); no ordering rule applies."""

    def fmt(self, x: float) -> str:
        return f"{x:.{self.digits}f}"


_TABLE = {
    m.name: m
    for m in (
        Metric("test_bleu", "test BLEU, tokenized and lowercased (the paper's convention)", "tok-lc BLEU", True, 1.0),
        Metric("test_sacrebleu", "test sacreBLEU on detokenized text (13a)", "BLEU", True, 1.0),
        Metric("final_nll", "validation NLL at the run's end", "nats", False, 0.05),
        Metric("best_nll", "lowest validation NLL of the run", "nats", False, 0.05),
        Metric("diverged", "runs that diverged", "runs", False, 0.0, 0, comparable=False),
        Metric(
            "context_gain", "unigram model's validation NLL minus the run's (> 0: context learned)", "nats", True, 0.05
        ),
        Metric("speed_ratio", "updates to a common target validation NLL, first / second", "ratio", False, 0.0),
        Metric(
            "lr_sensitivity", "LR sensitivity: mean over the lr grid of capped loss minus the best", "nats", False, 0.05
        ),
        Metric("test_accuracy", "test accuracy of the fine-tuned model", "%", True, 1.0, 1),
        Metric("dev_accuracy", "dev accuracy of the fine-tuned model", "%", True, 1.0, 1),
        Metric("test_f1", "test F1 of class 1 (as MRPC is reported)", "%", True, 1.0, 1),
    )
}
PER_TASK = ("test_accuracy", "dev_accuracy", "test_f1")


def metric(name: str) -> Metric:
    """The metric a claim names; a one-line error listing the known ones otherwise."""
    base, _, task = name.partition(":")
    m = _TABLE.get(base)
    if m is None or (base in PER_TASK) != bool(task):
        known = [n for n in _TABLE if n not in PER_TASK] + [f"{n}:<task>" for n in PER_TASK]
        raise ConfigError(f"claim metric {name!r}: use one of {', '.join(known)}")
    return replace(m, name=name, task=task, label=f"{m.label} ({task})" if task else m.label)
