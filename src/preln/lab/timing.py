"""Where a ``preln reproduce`` spent its time: the commands it ran (``steps.jsonl`` in each job's
folder, one line per ended command), summed per study and kind of step, beside the wall time that
``reproduce.json`` records. The report's last section; a profile of the main job starts here."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .document import Block, Heading, Para, Table
from .studies import Step

STEPS_LOG = "steps.jsonl"


@dataclass(frozen=True)
class StepTime:
    """One command a ``reproduce`` ran."""

    study: str
    """The study folder it ran under (the first folder below the runs folder)."""
    step: str
    """Its kind: ``train``, ``evaluate``, ``analyze``, ``finetune``, ``control``."""
    seconds: float
    """From its start to its end (local processes: to the executor's poll that saw it end)."""


def record_step(folder: Path, step: str, seconds: float, rc: int) -> None:
    """Append an ended command to ``folder``'s ``steps.jsonl``. Both launchers call it (local
    processes and submitit's nodes); interrupted and failed commands count too: they took the time."""
    line = {"step": step, "seconds": round(seconds, 2), "exit": rc}
    line["ended"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    with open(folder / STEPS_LOG, "a") as f:
        f.write(json.dumps(line) + "\n")


def read_steps(out: Path) -> list[StepTime]:
    """Every recorded command under the runs folder ``out`` (damaged lines skipped: a killed
    ``reproduce`` may leave half a line)."""
    found = []
    for path in sorted(out.rglob(STEPS_LOG)):
        study = path.relative_to(out).parts[0] if path.parent != out else ""
        for line in path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
                found.append(StepTime(study, Step.parse(str(rec["step"])).kind, float(rec["seconds"])))
            except (ValueError, KeyError, TypeError):
                continue
    return found


def time_blocks(out: Path, wall_s: float | None, jobs: int) -> list[Block]:
    """The section: a table of job time per study and step (commands, minutes, mean seconds per
    command, share), and how busy the ``jobs`` slots were over the wall time. [] without records."""
    steps = read_steps(out)
    if not steps:
        return []
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for s in steps:
        cells[(s.study, s.step)].append(s.seconds)
    total = sum(s.seconds for s in steps)
    rows = []
    for (study, step), xs in sorted(cells.items(), key=lambda kv: -sum(kv[1])):
        job_s = sum(xs)
        rows.append(
            [
                study or "(runs folder)",
                step,
                str(len(xs)),
                f"{job_s / 60:.1f}",
                f"{job_s / len(xs):.1f}",
                f"{job_s / total:.0%}",
            ]
        )
    text = f"{len(steps)} commands, {minutes(total)} of job time in all"
    if wall_s:
        busy = total / (wall_s * jobs)
        text += f"; wall time {minutes(wall_s)} with {jobs} at a time: the slots were busy {busy:.0%} of it"
    head = ["study", "step", "commands", "job time (min)", "per command (s)", "share"]
    return [Heading("Where the time went", 2), Para(text + "."), Table(head, rows)]


class Work(NamedTuple):
    """A step running or still to run, as the time-left estimate sees it."""

    study: str
    step: str
    weight: float
    """Its share of the bar (``execute.step_weight``)."""
    spent: float
    """Seconds it has run so far (0 for a step not started)."""


class TimeLeft:
    """The job seconds a grid still needs, from the commands that ended: each kind of step of
    each study (``train`` of ``lr``, ``finetune`` of ``fig5``, ...) has its own seconds per unit
    of weight (the bar's units: a job's ``size`` shared by its steps). Counting units alone
    misleads: in the main job an `lr` update costs more than a Fig. 5 fine-tuning's, and at 46 of
    80 minutes the update-counting estimate said 7 minutes were left. A kind none of whose
    commands has ended yet takes the mean rate of all that have."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.weight: dict[tuple[str, str], float] = defaultdict(float)

    def ended(self, study: str, step: str, weight: float, seconds: float, completed: bool = True) -> None:
        """A command ended; one that diverged or was interrupted ran short and sets no rate."""
        if completed and weight > 0:
            key = _kind(study, step)
            self.seconds[key] += seconds
            self.weight[key] += weight

    def rate(self, study: str, step: str) -> float | None:
        key = _kind(study, step)
        if self.weight.get(key):
            return self.seconds[key] / self.weight[key]
        total = sum(self.weight.values())
        return sum(self.seconds.values()) / total if total else None

    def untimed(self, work: list[Work]) -> list[str]:
        """The studies with a kind of step in ``work`` that no ended command has timed: their
        share of the estimate is a guess at the mean rate (the main job's `lr` updates cost 5x a
        Fig. 5 pretraining's)."""
        return list(dict.fromkeys(st for st, step, _, _ in work if not self.weight.get(_kind(st, step))))

    def left(self, work: list[Work]) -> float | None:
        """Job seconds for every step in ``work``; None until some command has ended."""
        out = 0.0
        for study, step, weight, spent in work:
            rate = self.rate(study, step)
            if rate is None:
                return None
            out += max(rate * weight - spent, 0.0)
        return out


def _kind(study: str, step: str) -> tuple[str, str]:
    """What a rate is kept for: the study and the step's kind (``finetune@2:x`` is ``finetune``)."""
    return study, Step.parse(step).kind


def minutes(seconds: float) -> str:
    """A duration for the report: tenths of a minute below ten minutes, whole minutes above."""
    return f"{seconds / 60:.1f} min" if seconds < 600 else f"{seconds / 60:.0f} min"
