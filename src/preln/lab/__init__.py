"""The experiments wing, above the library: studies (grids of runs from ``studies/*.toml``),
their execution, the analysis at initialization, the paper's predictions, and the reports,
which read run folders' files only.

``analyze`` and ``reproduce`` are the library calls behind ``preln analyze`` and ``preln
reproduce``; the modules are imported when called, so that ``import preln.lab`` stays cheap.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parents[1]
"""Where the shipped ``studies/`` and ``configs/`` are: inside the package, so that an installed
preln finds them from any directory (the checkout's top-level ``configs``, ``studies`` link here)."""
DEFAULT_STUDIES = "fig3,fig5,fig4,lr"
"""``preln reproduce``'s studies unless told: the longest jobs first; fig2, lr-mlm and placements opt
in (lr-mlm's claims cannot decide at CPU size: docs/reproduce.md)."""


def analyze(
    preset: str,
    overrides: list[str],
    out: Path,
    parts: str | None = None,
    data: str | None = None,
    placements: str | None = None,
):
    """``preln analyze``: measure, write ``analysis.json``, the figures and ``summary.md`` into
    ``out``; returns the written files. ``parts``: comma-separated subset of ``analysis.PARTS``;
    ``placements``: comma-separated ``model.norm`` values to measure side by side."""
    import json

    from ..config import ConfigError
    from . import analysis, analysis_report

    if placements:
        from .. import config

        overrides = [*overrides, f"placements={config.toml_value([p.strip() for p in placements.split(',')])}"]
    a = analysis.with_overrides(analysis.preset(preset), overrides, data)
    known = (*analysis.PARTS, "placements")
    chosen = tuple(p.strip() for p in parts.split(",")) if parts else analysis.PARTS
    unknown = set(chosen) - set(known)
    if unknown:
        raise ConfigError(f"--only: unknown part(s) {', '.join(sorted(unknown))} (parts: {', '.join(known)})")
    if "placements" in chosen and not a.placements:
        raise ConfigError("--only placements: name them with --placements, e.g. --placements post,pre,sandwich")
    chosen = tuple(p for p in chosen if p != "placements")
    res = analysis.run_analysis(a, out, chosen)
    (out / "analysis.json").write_text(json.dumps(res, indent=1))
    return [out / "analysis.json", *analysis_report.write_analysis_report(out)]


@dataclass(frozen=True)
class Reproduce:
    """What ``preln reproduce`` runs, and where and how."""

    preset: str = "quick"
    """The studies' preset: quick, long, smoke, paper."""
    studies: str | None = None
    """Comma-separated names of shipped studies, or paths of study files (their ``config`` paths
    relative to ``root``); None: those of ``DEFAULT_STUDIES`` that have the preset (the others are
    named on stdout, e.g. ``--preset long`` leaves out fig3 and fig4)."""
    out: Path | None = None
    """The runs folder (default ``runs/reproduce-<preset>``)."""
    jobs: int = 1
    """Processes at once, each with cores/jobs threads."""
    gpus: tuple[str, ...] = ()
    """GPU ids: one run per GPU at a time, or ``jobs_per_gpu`` (checked against free memory)."""
    beam: int = 5
    """Beam for test BLEU."""
    root: Path | None = None
    """Where ``studies/`` and ``configs/`` are (default the package's)."""
    jobs_per_gpu: int = 1
    launcher: Literal["processes", "slurm", "local"] = "processes"
    """``processes``: here; ``slurm`` / ``local``: through submitit (``launch.py``)."""
    launcher_params: tuple[tuple[str, object], ...] = ()
    """submitit parameters, e.g. (("timeout_min", 600),)."""


def reproduce(r: Reproduce) -> tuple[Path, Path]:
    """``preln reproduce``: expand the studies for the preset, run what is not done into the runs
    folder, write the report; returns (report.md, report.html). Raises ``execute.RunFailed`` when
    a run of the grid fails."""
    from ..locks import hold_lock, release_lock
    from .launch import check
    from .studies import load_study

    params = dict(r.launcher_params)
    check(r.launcher, params)  # before anything is planned or written
    root = r.root or ROOT
    out = r.out or Path(f"runs/reproduce-{r.preset}")
    paths = [root / "studies" / f"{n}.toml" if "/" not in n else Path(n) for n in study_names(r, root)]
    loaded = [load_study(p, r.preset, root) for p in paths]
    gpus = list(r.gpus) or None
    if gpus:
        from .. import config
        from .gpus import check_fit, check_gpus

        check_gpus(gpus)
        cfgs = [config.load(run.config, list(run.overrides)) for s in loaded for run in s.runs]
        check_fit(cfgs, gpus, r.jobs_per_gpu)
        gpus = [g for g in gpus for _ in range(r.jobs_per_gpu)]  # a slot per run, several per GPU
    lock = hold_lock(out)  # one `reproduce` per runs folder (each run folder has its own lock too)
    try:
        return _reproduce(r.preset, loaded, out, r.jobs, gpus, r.beam, root, (r.launcher, params))
    finally:
        release_lock(lock)


def study_names(r: Reproduce, root: Path) -> list[str]:
    """The studies named, or the default ones that have the preset (an explicitly named study
    without it is ``load_study``'s error)."""
    from ..config import ConfigError
    from .studies import has_preset

    if r.studies is not None:
        return r.studies.split(",")
    names = DEFAULT_STUDIES.split(",")
    kept = [n for n in names if has_preset(root / "studies" / f"{n}.toml", r.preset)]
    if not kept:
        raise ConfigError(f"no default study ({', '.join(names)}) has a {r.preset!r} preset: name them with --studies")
    if left := [n for n in names if n not in kept]:
        print(f"[preln] {', '.join(left)}: no {r.preset!r} preset, left out (studies: {', '.join(kept)})", flush=True)
    return kept


def _reproduce(preset: str, studies: list, out: Path, jobs: int, gpus, beam: int, root: Path, launch: tuple):
    from . import execute, report
    from .steps import plan

    todo = plan(studies, out, beam)
    nruns = sum(len(s.runs) for s in studies)
    nother = sum(len(s.jobs) - len(s.runs) for s in studies)
    at_once = jobs if not gpus or jobs > 1 else len(gpus)
    print(
        f"[preln] {len(studies)} studies, {nruns} runs + {nother} {'analysis' if nother == 1 else 'analyses'}; "
        f"{len(todo)} to do, {at_once} at a time -> {out}",
        file=sys.stderr,
    )
    # the steal share of this machine's CPUs: only where the commands run on it (not Slurm's nodes)
    t0, cpu0 = time.time(), execute.host_cpu_times() if launch[0] == "processes" else None
    try:
        launcher, params = launch
        if launcher == "processes":
            results = execute.execute(todo, at_once, gpus)
        else:
            from .launch import submit

            results = submit(todo, launcher, out / "submitit", params)
    finally:  # interrupted invocations count toward the wall time too
        if todo:
            execute.record_invocation(out, root, preset, studies, jobs, t0, cpu0)
    if todo:
        counts = {k: list(results.values()).count(k) for k in sorted(set(results.values()))}
        print(f"[preln] {len(todo)} jobs in {time.time() - t0:.0f} s: {counts}", file=sys.stderr)
    return report.write_report(out)
