"""Where a ``preln reproduce`` spent its time: the commands it ran (``steps.jsonl`` in each job's
folder, one line per ended command), summed per study and kind of step, beside the wall time that
``reproduce.json`` records. The report's last section; a profile of the main job starts here."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

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


def minutes(seconds: float) -> str:
    """A duration for the report: tenths of a minute below ten minutes, whole minutes above."""
    return f"{seconds / 60:.1f} min" if seconds < 600 else f"{seconds / 60:.0f} min"
