"""Grids of runs from study files (``studies/*.toml``): expand, execute, skip what is done.

A study file names a base config per preset, seeds, and conditions (explicit ``[[condition]]``
tables and/or ``[[grid]]`` tables whose factors expand to their cartesian product); every value
is a ``--set`` override, so any config key can be a factor. Each run trains in its own folder
``OUT/<study>/<condition>-s<seed>`` as a ``preln train`` subprocess (its log in ``train.log``);
rerunning skips completed and diverged runs and resumes interrupted ones (the trainer does).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from . import config
from .config import ConfigError


@dataclass(frozen=True)
class RunSpec:
    condition: str
    seed: int
    config: str
    overrides: tuple[str, ...]

    @property
    def folder(self) -> str:
        return f"{self.condition}-s{self.seed}"


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    baseline: str | None
    compare: tuple[str, ...]
    runs: tuple[RunSpec, ...]


def _grid_conditions(grids: list[dict]) -> list[dict]:
    out = []
    for grid in grids:
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)):
            sets = [f"{k}={config._toml_value(v)}" for k, v in zip(keys, values)]
            name = ",".join(f"{k.split('.')[-1]}={v}" for k, v in zip(keys, values))
            out.append({"name": name, "set": sets})
    return out


def load_study(path: str | Path, preset: str, root: Path | None = None) -> Study:
    """Expand a study file for ``preset``; every run's config is loaded once to check it."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{p}: cannot read study file ({e})") from None
    if preset not in raw.get("preset", {}):
        raise ConfigError(f"{p}: no [preset.{preset}] (has {', '.join(raw.get('preset', {})) or 'none'})")
    pre = raw["preset"][preset]
    base = str((root or Path.cwd()) / pre["config"])
    conditions = list(raw.get("condition", [])) + _grid_conditions(raw.get("grid", []))
    if not conditions:
        raise ConfigError(f"{p}: no [[condition]] or [[grid]]")
    runs = []
    for c in conditions:
        overrides = tuple(pre.get("set", [])) + tuple(c.get("set", [])) + tuple(c.get(preset, []))
        for seed in pre.get("seeds", [1]):
            spec = RunSpec(c["name"], int(seed), base, (*overrides, f"train.seed={seed}", "train.progress=false"))
            try:
                config.load(spec.config, list(spec.overrides))
            except ConfigError as e:
                raise ConfigError(f"{p}: condition {c['name']!r}: {e}") from None
            runs.append(spec)
    names = {c["name"] for c in conditions}
    for key in [raw.get("baseline"), *raw.get("compare", [])]:
        if key is not None and key not in names:
            raise ConfigError(f"{p}: {key!r} is not a condition of this study")
    return Study(p.stem, raw.get("title", p.stem), raw.get("baseline"), tuple(raw.get("compare", [])), tuple(runs))


def run_status(folder: Path) -> str | None:
    p = folder / "status.json"
    return json.loads(p.read_text())["status"] if p.is_file() else None


def _train(spec: RunSpec, folder: Path, threads: int) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "preln", "train", spec.config, "--out", str(folder)]
    for o in spec.overrides:
        cmd += ["--set", o]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with open(folder / "train.log", "a") as log:
        return subprocess.run(cmd, stdout=log, stderr=log, env=env).returncode


def execute(study: Study, out: Path, evaluate: dict | None = None) -> dict[str, str]:
    """Train every run not yet completed or diverged, one at a time (parallel torch processes
    thrash 2-core machines); then BLEU for completed translation runs without ``bleu.json``.
    Returns {run folder: final status}."""
    sdir = out / study.name
    sdir.mkdir(parents=True, exist_ok=True)
    (sdir / "study.json").write_text(
        json.dumps(
            {
                "title": study.title,
                "baseline": study.baseline,
                "compare": list(study.compare),
                "runs": [
                    {
                        "condition": r.condition,
                        "seed": r.seed,
                        "folder": r.folder,
                        "config": r.config,
                        "overrides": list(r.overrides),
                    }
                    for r in study.runs
                ],
            },
            indent=1,
        )
    )
    statuses = {}
    bar = tqdm(study.runs, desc=study.name, unit="run", dynamic_ncols=True)
    for spec in bar:
        folder = sdir / spec.folder
        bar.set_postfix_str(spec.folder)
        if run_status(folder) not in ("completed", "diverged"):
            rc = _train(spec, folder, threads=os.cpu_count() or 1)
            if rc == 130:
                raise KeyboardInterrupt
            if rc not in (0, 1):  # 1 = diverged, recorded in its folder
                raise RuntimeError(f"run {folder} failed (exit {rc}); see {folder / 'train.log'}")
        statuses[spec.folder] = run_status(folder) or "missing"
        if evaluate is not None and statuses[spec.folder] == "completed" and not (folder / "bleu.json").exists():
            from .evaluate import evaluate_run

            cfg = config.load(folder / "config.toml")
            if cfg.model.task == "translation":
                evaluate_run(folder, ("test",), **evaluate)
    bar.close()
    return statuses
