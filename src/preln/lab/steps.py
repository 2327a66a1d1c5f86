"""What a study's jobs run: each step's ``preln`` command, its folder and log, whether it still has
to run, and the plan of the jobs not yet finished (``execute.py`` and ``launch.py`` run it).

Steps are named as ``studies.Step`` parses them; the k-th fine-tuning of a model (k >= 2) runs
in ``<folder>-ft-<task>[-random]-r<k>`` with its own seed (``Step.seed``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .. import config, tasks
from ..finetune import default_out
from ..runs import RunFolder
from .evaluation import Evaluation
from .studies import JobSpec, Step, Study, write_study_json


def run_status(folder: Path) -> str | None:
    return (RunFolder(folder, writer=False).status() or {}).get("status")


def last_update(folder: Path) -> int:
    """The newest update in a run's metrics (for the progress display)."""
    rows = RunFolder(folder, writer=False).metrics()
    return int(rows[-1].get("update", 0)) if rows else 0


def finetune_folder(folder: Path, step: str) -> Path:
    """Where step ``finetune:<task>`` (``control:<task>``) of the pretraining run in ``folder``
    fine-tunes: ``<folder>-ft-<task>`` (``-random``) beside it, as ``preln finetune`` names it;
    the k-th fine-tuning of the same model (k >= 2) in ``...-r<k>``."""
    s = Step.parse(step)
    out = default_out(folder, s.task, random_init=s.kind == "control")
    return out.with_name(out.name + s.suffix)


def log_name(step: str) -> str:
    """The log file of a step in its job's folder: ``train.log``, ``finetune-paraphrase.log`` (a
    task that is a folder of TSVs by the folder's name; ``-r<k>`` for the k-th fine-tuning)."""
    s = Step.parse(step)
    if not s.task:
        return f"{s.kind}.log"
    return f"{s.kind}-{Path(s.task).name}{s.suffix}.log"


def needed(step: str, folder: Path, expect: dict | None = None) -> bool:
    """Whether a step of a job still has to run (its result is not in the folder yet). An
    evaluation counts only if ``bleu.json`` scored the test split with the settings ``expect``s
    (a partial or differently decoded ``preln evaluate`` by hand does not pass for the study's)."""
    if step == "analyze":
        return not (folder / "analysis.json").is_file()
    status = run_status(folder)
    if step == "train":
        return status not in ("completed", "diverged")
    if Step.parse(step).finetunes:  # once the pretraining completed (a diverged model is not fine-tuned)
        return status == "completed" and run_status(finetune_folder(folder, step)) not in ("completed", "diverged")
    if status != "completed":  # evaluate
        return False
    try:
        done = json.loads((folder / "bleu.json").read_text())
    except (OSError, ValueError):
        return True
    same = all(done.get(k) == v for k, v in (expect or {}).items())
    return not (same and "test" in done.get("splits", {}))


def still_to_run(names: tuple[str, ...] | list[str], folder: Path, expect: dict | None = None) -> list[str]:
    """The steps of a job that will run: those ``needed`` now, and every one after a training
    that has still to run (an evaluation or a fine-tuning is not ``needed`` before the model it
    uses has completed)."""
    training = "train" in names and needed("train", folder, expect)
    return [s for s in names if training or (s != "train" and needed(s, folder, expect))]


def command(step: str, job: JobSpec, folder: Path, evaluation: Evaluation) -> list[str]:
    """The ``preln`` command line of one step of ``job``, run in ``folder``."""
    sets = [x for o in job.overrides for x in ("--set", o)]
    s = Step.parse(step)
    if step == "train":
        return ["train", job.config, "--out", str(folder), *sets]
    if step == "evaluate":
        return ["evaluate", str(folder), "--splits", "test", *evaluation.flags()]
    if step == "analyze":
        return ["analyze", "--preset", job.analysis, "--out", str(folder), *sets]
    if s.finetunes:
        ft = [x for o in job.finetune for x in ("--set", o)]
        ft += ["--set", f"train.seed={s.seed(job.seed)}"] if s.replicate > 1 else []
        ft += ["--random-init"] if s.kind == "control" else []
        return ["finetune", str(folder), "--task", s.task, "--out", str(finetune_folder(folder, step)), *ft]
    raise ValueError(f"unknown step {step!r}")  # a bug: STEPS and this function disagree


@dataclass
class Job:
    """One unit of work: commands run in order in ``folder``, each skipped where its result
    already exists (``needed``)."""

    study: str
    """The study it belongs to (the time left's rates are per study and step)."""
    name: str
    """``study/folder``, or the study's name for a study of one job (the folder is the study's)."""
    folder: Path
    size: int
    """Updates (training) or ~ the analysis's time in updates: the progress display's weight."""
    steps: list[tuple[str, list[str]]]
    """(step, its ``preln`` command line)."""
    expect: dict | None = None
    """The decoding settings the evaluation must have recorded in ``bleu.json`` to count."""
    done: frozenset[str] = frozenset()
    """The steps whose results the folder already held when the grid was planned (a resumed
    grid): the time left does not count them (running skips them by ``needed``)."""


def plan(studies: list[Study], out: Path, beam: int) -> list[Job]:
    """Write each study's ``study.json`` and return the jobs not yet finished."""
    jobs = []
    for study in studies:
        sdir = out / study.name
        sdir.mkdir(parents=True, exist_ok=True)
        write_study_json(study, sdir)
        evaluation = study.evaluation.with_beam(beam)
        for spec in study.jobs:
            folder = sdir / spec.folder if spec.folder else sdir
            if "train" in spec.steps and not needed("train", folder):  # another preset's run is not this one
                RunFolder(folder, writer=False).check_finished(
                    tasks.check(config.load(spec.config, list(spec.overrides)))
                )
            left = still_to_run(spec.steps, folder, evaluation.expected())
            if not left:  # every step's result is there
                continue
            steps = [(step, command(step, spec, folder, evaluation)) for step in spec.steps]
            name = f"{study.name}/{spec.folder}" if spec.folder else study.name
            done = frozenset(spec.steps) - set(left)
            jobs.append(Job(study.name, name, folder, spec.size, steps, evaluation.expected(), done))
    return jobs
