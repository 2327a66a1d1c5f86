"""What a study's run folders hold, read once into typed records that the claims, the reports and
``claims.json`` all use: per training run its status, validation curve, greedy validation BLEU
and test BLEU; per fine-tuning run its dev curve and dev/test scores; and the values of a claim's
metric per condition, with the runs that diverged or never ran counted, not silently dropped."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..runs import RunFolder
from .metrics import Metric
from .steps import finetune_folder
from .studies import CONTROL, Step, Study


@dataclass(frozen=True)
class Run:
    """One training run of a study (a condition and a seed)."""

    folder: Path
    condition: str
    seed: int
    group: str
    status: str
    """completed, diverged, running, interrupted, failed, or missing (never started)."""
    update: int | None
    curve: tuple[tuple[int, float], ...]
    """(update, validation NLL) at every validation."""
    valid_bleu: tuple[tuple[int, float], ...] = ()
    """(update, greedy validation BLEU) where the run measured it."""
    test_bleu: dict[str, float] = field(default_factory=dict)
    """``bleu.json``'s test split: ``sacrebleu`` and ``tok_lc``, where measured."""
    scale: str = ""
    """Where it was measured, in words (corpus, size, length)."""
    baselines: dict[str, float] = field(default_factory=dict)
    """Trivial models' losses on the run's data (masked LM: ``unigram_nll``), as the run recorded."""

    @property
    def unigram_nll(self) -> float | None:
        """The unigram model's validation NLL (masked LM), where the run recorded it."""
        return self.baselines.get("unigram_nll")

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"


@dataclass(frozen=True)
class FinetuneRun:
    """One fine-tuning run of a pretrained run (or of the random-init control)."""

    condition: str
    seed: int
    task: str
    status: str
    curve: tuple[tuple[int, float], ...]
    """(epoch, dev accuracy)."""
    dev: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    replicate: int = 1
    """Which fine-tuning of the same pretrained model (the preset's ``finetune_seeds``)."""

    @property
    def one_class(self) -> bool:
        """The final model predicts one class for every example of dev or test (``top_class``
        100%: a fine-tuning that never left the constant classifier); False where not recorded."""
        return any(scores.get("top_class", 0.0) >= 100.0 for scores in (self.dev, self.test))


@dataclass(frozen=True)
class Sample:
    """A metric's values for one condition, from its completed runs only (a diverged run has no
    final score; it is counted in ``diverged``), with what is missing counted."""

    values: tuple[float, ...]
    runs: int
    """Runs of the condition in the study (seeds), whatever their outcome."""
    diverged: int = 0
    not_run: int = 0
    """Runs not started or not finished (no value yet)."""
    one_class: tuple[int, int] = (0, 0)
    """Fine-tuning metrics: (fine-tunings whose model predicts one class, fine-tunings with a
    score). Those are left out of their model's mean, as a diverged run is; a model whose every
    fine-tuning did so has no value."""
    fine_tunings: tuple[int, ...] = ()
    """Fine-tuning metrics: per value (a model), how many fine-tunings its mean is of."""

    def note(self) -> str:
        """ "2 of 3 diverged" and the like; "" when every run gave a value."""
        parts = []
        if self.diverged:
            parts.append(f"{self.diverged} of {self.runs} diverged")
        if self.one_class[0]:
            parts.append(f"{self.one_class[0]} of {self.one_class[1]} fine-tunings predict one class: left out")
        if self.not_run:
            parts.append(f"{self.not_run} of {self.runs} without a result")
        return ", ".join(parts)


@dataclass(frozen=True)
class StudyResults:
    name: str
    study: Study
    conditions: dict[str, list[Run]]
    """Per condition (the study file's order), its runs by seed."""
    finetune: dict[str, dict[str, list[FinetuneRun]]] = field(default_factory=dict)
    """Per task, per pretraining condition (the control last), the fine-tuning runs."""

    def sample(self, m: Metric, condition: str) -> Sample:
        """The values of metric ``m`` for ``condition`` (per-task metrics from the fine-tuning runs)."""
        if m.task:
            ft = self.finetune.get(m.task, {}).get(condition, [])
            split, key = m.name.split(":")[0].split("_", 1)
            pre = {r.seed: r for r in self.conditions.get(condition, [])}
            # one value per pretrained model (the mean of its fine-tunings): the models are the
            # independent replicates; fine-tunings of one model share its pretraining's luck
            # a fine-tuning whose model predicts one class failed to train (BERT's restarts): left
            # out and counted, as a diverged pretraining is
            scored = [r for r in ft if key in getattr(r, split)]
            failed = sum(r.one_class for r in scored)
            per_model: dict[int, list[float]] = {}
            for r in scored:
                if not r.one_class:
                    per_model.setdefault(r.seed, []).append(getattr(r, split)[key])
            values = tuple(sum(v) / len(v) for v in per_model.values())
            div = sum(1 for r in pre.values() if r.diverged) if condition != CONTROL else 0
            runs = len(pre) if condition != CONTROL else len({r.seed for r in ft})
            counts = tuple(len(v) for v in per_model.values())
            return Sample(values, runs, div, runs - div - len(values), (failed, len(scored)), counts)
        runs = self.conditions.get(condition, [])
        done = [r for r in runs if r.completed and r.curve]
        if m.name == "test_bleu":
            values = tuple(r.test_bleu["tok_lc"] for r in done if "tok_lc" in r.test_bleu)
        elif m.name == "test_sacrebleu":
            values = tuple(r.test_bleu["sacrebleu"] for r in done if "sacrebleu" in r.test_bleu)
        elif m.name == "final_nll":
            values = tuple(r.curve[-1][1] for r in done)
        elif m.name == "best_nll":
            values = tuple(min(v for _, v in r.curve) for r in done)
        elif m.name == "context_gain":
            values = tuple(r.unigram_nll - r.curve[-1][1] for r in done if r.unigram_nll is not None)
        else:
            raise ValueError(f"metric {m.name!r} has no per-run value")  # a bug: the caller checks
        div = sum(r.diverged for r in runs)
        return Sample(values, len(runs), div, len(runs) - div - len(values))


def read_run(sdir: Path, folder: str, condition: str, seed: int, group: str) -> Run:
    path = sdir / folder
    run = RunFolder(path, writer=False)
    valid = [x for x in run.metrics() if x.get("kind") == "valid" and {"update", "valid_nll"} <= x.keys()]
    status = run.status() or {}
    try:
        bleu = json.loads((path / "bleu.json").read_text()).get("splits", {}).get("test", {})
    except (OSError, ValueError, AttributeError):
        bleu = {}
    key = "valid_bleu_greedy_tok_lc" if any("valid_bleu_greedy_tok_lc" in x for x in valid) else "valid_bleu_greedy"
    return Run(
        path,
        condition,
        seed,
        group,
        status.get("status", "missing"),
        status.get("update"),
        tuple((int(x["update"]), float(x["valid_nll"])) for x in valid),
        tuple((int(x["update"]), float(x[key])) for x in valid if key in x),
        {k: float(v) for k, v in bleu.items() if k in ("sacrebleu", "tok_lc") and isinstance(v, int | float)},
        scale(path),
        {k: float(v) for x in run.metrics() if x.get("kind") == "baseline" for k, v in x.items() if k.endswith("_nll")},
    )


def read_finetune(folder: Path, condition: str, seed: int, task: str, replicate: int = 1) -> FinetuneRun:
    run = RunFolder(folder, writer=False)
    status = (run.status() or {}).get("status", "missing")
    epochs = tuple((int(x["epoch"]), float(x["valid_accuracy"])) for x in run.metrics() if "valid_accuracy" in x)
    try:
        final = json.loads((folder / "scores.json").read_text())
    except (OSError, ValueError):
        final = {}
    return FinetuneRun(condition, seed, task, status, epochs, final.get("valid", {}), final.get("test", {}), replicate)


def study_results(sdir: Path, study: Study) -> StudyResults:
    """Every run of ``study`` in its folder ``sdir``, read once."""
    by_cond: dict[str, list[Run]] = {}
    finetune: dict[str, dict[str, list[FinetuneRun]]] = {}
    for job in study.jobs:
        if "train" in job.steps:
            by_cond.setdefault(job.condition, []).append(read_run(sdir, job.folder, job.condition, job.seed, job.group))
        for step in job.steps:
            s = Step.parse(step)
            if s.finetunes:
                name = Path(s.task).name  # a folder of TSVs goes by its name (claims: test_accuracy:<name>)
                cond = CONTROL if s.kind == "control" else job.condition
                ft = read_finetune(finetune_folder(sdir / job.folder, step), cond, job.seed, name, s.replicate)
                finetune.setdefault(name, {}).setdefault(cond, []).append(ft)
    for task, conds in finetune.items():  # the control last
        finetune[task] = dict(sorted(conds.items(), key=lambda kv: kv[0] == CONTROL))
    return StudyResults(sdir.name, study, by_cond, finetune)


def scale(folder: Path) -> str:
    """Where a run was measured, in words: corpus, model size, length (from its config.toml)."""
    try:
        c = tomllib.loads((folder / "config.toml").read_text())
        m, d, t = c["model"], c["data"], c["train"]
        corpus = Path(d["path"]).name or d["corpus"]
        layers = f"{m['encoder_layers']}+{m['decoder_layers']}" if m["task"] == "translation" else m["encoder_layers"]
        length = f"{t['max_updates']} updates" if t["max_updates"] else f"{t['max_epochs']} epochs"
    except (OSError, ValueError, KeyError, TypeError):  # ValueError: not TOML, not UTF-8 (damaged)
        return ""
    return f"{corpus}, d {m['d_model']}, {layers} layers, {length}"
