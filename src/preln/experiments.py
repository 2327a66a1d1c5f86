"""Grids of runs from study files (``studies/*.toml``): expand, execute, skip what is done.

A study file names a base config per preset, seeds, and conditions: explicit ``[[condition]]``
tables and/or ``[[grid]]`` tables whose factors expand to their cartesian product. Every value
is a ``--set`` override, so any config key can be a factor. A study with ``kind = "analysis"``
runs ``preln analyze`` instead (the Fig. 3 measurements).

Each run trains in its own folder ``OUT/<study>/<condition>-s<seed>`` as a ``preln train``
subprocess (log in ``train.log``), then ``preln evaluate`` scores test BLEU. Rerunning skips
completed and diverged runs and resumes interrupted ones (the trainer does). ``jobs > 1`` runs
that many subprocesses at once, each with ``cpus // jobs`` threads.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from . import config
from .config import ConfigError
from .decode import LENPEN, MAX_LEN_A, MAX_LEN_B
from .runs import RunFolder


@dataclass(frozen=True)
class RunSpec:
    condition: str
    seed: int
    config: str
    overrides: tuple[str, ...]
    group: str = ""
    """The grid (or "") the condition came from: the report draws one panel per group."""

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
    kind: str = "train"
    analysis: tuple[str, tuple[str, ...]] | None = None
    """kind = "analysis": (``preln analyze`` preset, its --set overrides)."""
    claims: tuple[dict, ...] = field(default_factory=tuple)
    """The paper's claims the report puts beside measured values (see studies/*.toml); a claim on a
    condition left out of the preset reports "not run"."""
    decode: tuple[str, ...] = ()
    """Extra ``preln evaluate`` flags of the preset (``evaluate = ["--max-len-b", "10"]``)."""
    paper: tuple[str, str] = ("", "")
    """(the paper's setting in words, the paper's corpus name): the report says where ours differs."""


def _factor_values(p: Path, key: str, spec: object, preset: str) -> list[tuple[str, object]]:
    """A factor is a list of values, or a table with one list per preset and optional ``labels``
    (names shared across presets, e.g. warm-up none/short/long)."""
    if isinstance(spec, list):
        return [(str(v), v) for v in spec]
    if isinstance(spec, dict) and preset in spec:
        values, labels = spec[preset], spec.get("labels", [str(v) for v in spec[preset]])
        if len(labels) != len(values):
            raise ConfigError(f"{p}: grid factor {key!r}: {len(labels)} labels for {len(values)} values")
        return list(zip(labels, values))
    raise ConfigError(f"{p}: grid factor {key!r} needs a list or a table with a {preset!r} list")


def _grid_conditions(p: Path, grids: list[dict], preset: str) -> list[dict]:
    """Reserved keys of a grid: ``name`` (prefix of its conditions' names), ``set`` and
    ``<preset>`` (overrides common to the grid); every dotted key is a factor."""
    out = []
    for grid in grids:
        factors = {k: _factor_values(p, k, v, preset) for k, v in grid.items() if "." in k}
        fixed = list(grid.get("set", [])) + list(grid.get(preset, []))
        prefix = grid.get("name", "")
        for combo in itertools.product(*factors.values()):
            sets = fixed + [f"{k}={config._toml_value(v)}" for k, (_, v) in zip(factors, combo)]
            parts = [f"{k.split('.')[-1]}={label}" for k, (label, _) in zip(factors, combo)]
            out.append({"name": ",".join([prefix, *parts] if prefix else parts), "set": sets, "group": prefix})
    return out


STUDY_KEYS = {"title", "kind", "baseline", "compare", "paper_setting", "paper_corpus", "preset", "condition"}
STUDY_KEYS |= {"grid", "claim"}
PRESET_KEYS = {"config", "seeds", "set", "evaluate", "analysis"}
CLAIM_KEYS = {"text", "paper", "condition", "metric", "better_than"}


def _check_keys(p: Path, where: str, table: object, allowed: set[str], dotted: bool = False) -> None:
    """Unknown keys in a study file are errors (a typo would otherwise silently change the grid)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{p}: {where} must be a table")
    for key in table:
        if key not in allowed and not (dotted and "." in key):
            raise ConfigError(f"{p}: {where}: unknown key {key!r} (known: {', '.join(sorted(allowed))})")


def check_study_file(p: Path, raw: dict) -> None:
    """The whole file's shape, for every preset: keys, and seeds as a list of integers."""
    _check_keys(p, "top level", raw, STUDY_KEYS)
    presets = raw.get("preset", {})
    _check_keys(p, "[preset]", presets, set(presets))
    for name, pre in presets.items():
        _check_keys(p, f"[preset.{name}]", pre, PRESET_KEYS)
        seeds = pre.get("seeds", [1])
        if not (
            isinstance(seeds, list) and seeds and all(isinstance(x, int) and not isinstance(x, bool) for x in seeds)
        ):
            raise ConfigError(f"{p}: [preset.{name}] seeds must be a non-empty list of integers, got {seeds!r}")
    for i, c in enumerate(raw.get("condition", []), 1):
        _check_keys(p, f"[[condition]] #{i}", c, {"name", "set", "presets", *presets})
        name = c.get("name")
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise ConfigError(f"{p}: [[condition]] #{i}: name must be a folder-safe string, got {name!r}")
    for i, g in enumerate(raw.get("grid", []), 1):
        _check_keys(p, f"[[grid]] #{i}", g, {"name", "set", *presets}, dotted=True)
    for i, c in enumerate(raw.get("claim", []), 1):
        _check_keys(p, f"[[claim]] #{i}", c, CLAIM_KEYS)


def load_study(path: str | Path, preset: str, root: Path | None = None) -> Study:
    """Expand a study file for ``preset``; every run's config is loaded once to check it."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{p}: cannot read study file ({e})") from None
    check_study_file(p, raw)
    if preset not in raw.get("preset", {}):
        raise ConfigError(f"{p}: no [preset.{preset}] (has {', '.join(raw.get('preset', {})) or 'none'})")
    pre = raw["preset"][preset]
    title, claims = raw.get("title", p.stem), tuple(raw.get("claim", []))
    if raw.get("kind", "train") == "analysis":
        from . import analysis

        sets = tuple(pre.get("set", []))
        try:
            analysis.with_overrides(analysis.preset(pre.get("analysis", "cpu")), list(sets), None)
        except (ConfigError, ValueError, KeyError) as e:
            raise ConfigError(f"{p}: {e}") from None
        return Study(p.stem, title, None, (), (), "analysis", (pre.get("analysis", "cpu"), sets), claims)
    base = str((root or Path.cwd()) / pre["config"])
    conditions = list(raw.get("condition", [])) + _grid_conditions(p, raw.get("grid", []), preset)
    if not conditions:
        raise ConfigError(f"{p}: no [[condition]] or [[grid]]")
    runs = []
    for c in conditions:
        if preset not in c.get("presets", [preset]):  # a condition may be left out of some presets
            continue
        overrides = tuple(pre.get("set", [])) + tuple(c.get("set", [])) + tuple(c.get(preset, []))
        for seed in pre.get("seeds", [1]):
            over = (*overrides, f"train.seed={seed}", "train.progress=false")
            spec = RunSpec(c["name"], int(seed), base, over, c.get("group", ""))
            try:
                config.load(spec.config, list(spec.overrides))
            except ConfigError as e:
                raise ConfigError(f"{p}: condition {c['name']!r}: {e}") from None
            runs.append(spec)
    names = [c["name"] for c in conditions]
    if len(set(names)) != len(names):
        raise ConfigError(f"{p}: duplicate condition names")
    claimed = [x for c in claims for x in (c.get("condition"), c.get("better_than"))]
    for key in [raw.get("baseline"), *raw.get("compare", []), *claimed]:
        if key is not None and key not in names:
            raise ConfigError(f"{p}: {key!r} is not a condition of this study (has {', '.join(names)})")
    paper = (raw.get("paper_setting", ""), raw.get("paper_corpus", ""))
    decode = tuple(str(x) for x in pre.get("evaluate", []))
    allowed = {"--" + k.replace("_", "-") for k in _decode_settings(1, ()) if k != "beam"}
    if len(decode) % 2 or not set(decode[::2]) <= allowed:
        raise ConfigError(
            f"{p}: [preset.{preset}] evaluate: pairs of --lenpen/--max-len-a/--max-len-b/--limit and a value"
        )
    return Study(
        p.stem,
        title,
        raw.get("baseline"),
        tuple(raw.get("compare", [])),
        tuple(runs),
        claims=claims,
        decode=decode,
        paper=paper,
    )


def run_status(folder: Path) -> str | None:
    return (RunFolder(folder, writer=False).status() or {}).get("status")


def _last_update(folder: Path) -> int:
    """The newest update in a run's metrics (for the progress display)."""
    rows = RunFolder(folder, writer=False).metrics()
    return int(rows[-1].get("update", 0)) if rows else 0


def _needed(step: str, folder: Path, expect: dict | None = None) -> bool:
    """Whether a step of a job still has to run (its result is not in the folder yet). An
    evaluation counts only if ``bleu.json`` scored the test split with the settings ``expect``s
    (a partial or differently decoded ``preln evaluate`` by hand does not pass for the study's)."""
    if step == "analyze":
        return not (folder / "analysis.json").is_file()
    status = run_status(folder)
    if step == "train":
        return status not in ("completed", "diverged")
    if status != "completed":  # evaluate
        return False
    try:
        done = json.loads((folder / "bleu.json").read_text())
    except (OSError, ValueError):
        return True
    same = all(done.get(k) == v for k, v in (expect or {}).items())
    return not (same and "test" in done.get("splits", {}))


def _decode_settings(beam: int, flags: tuple[str, ...]) -> dict:
    """What ``preln evaluate`` records in bleu.json for these flags (its defaults otherwise)."""
    out = {"beam": beam, "lenpen": LENPEN, "max_len_a": MAX_LEN_A, "max_len_b": MAX_LEN_B, "limit": 0}
    for flag, value in zip(flags[::2], flags[1::2]):
        key = flag.lstrip("-").replace("-", "_")
        out[key] = int(value) if key in ("limit", "max_len_b") else float(value)
    return out


def _write_study_json(study: Study, sdir: Path) -> None:
    runs = [
        {"condition": r.condition, "group": r.group, "seed": r.seed, "folder": r.folder, "config": r.config}
        | {"overrides": list(r.overrides)}
        for r in study.runs
    ]
    meta = {"title": study.title, "kind": study.kind, "baseline": study.baseline, "compare": list(study.compare)}
    meta |= {"claims": list(study.claims), "paper_setting": study.paper[0], "paper_corpus": study.paper[1]}
    meta |= {"runs": runs}
    (sdir / "study.json").write_text(json.dumps(meta, indent=1))


@dataclass
class Job:
    """One unit of work: a list of commands run in order in ``folder`` (train then evaluate,
    or analyze), skipped where their results already exist."""

    name: str
    folder: Path
    size: int  # updates (training) or 1: the progress display's weight
    train: list[str] | None = None
    evaluate: list[str] | None = None
    analyze: list[str] | None = None
    expect: dict | None = None
    """The decoding settings the evaluation must have recorded in ``bleu.json`` to count."""


def plan(studies: list[Study], out: Path, beam: int) -> list[Job]:
    """Write each study's ``study.json`` and return the jobs not yet finished."""
    jobs = []
    for study in studies:
        sdir = out / study.name
        sdir.mkdir(parents=True, exist_ok=True)
        _write_study_json(study, sdir)
        if study.kind == "analysis":
            pre, sets = study.analysis
            cmd = ["analyze", "--preset", pre, "--out", str(sdir), *[x for s in sets for x in ("--set", s)]]
            if _needed("analyze", sdir):  # weight ~ the cpu preset's time in updates
                jobs.append(Job(study.name, sdir, 200, analyze=cmd))
            continue
        for spec in study.runs:
            folder = sdir / spec.folder
            cfg = config.load(spec.config, list(spec.overrides))
            train = ["train", spec.config, "--out", str(folder), *[x for o in spec.overrides for x in ("--set", o)]]
            ev = ["evaluate", str(folder), "--splits", "test", "--beam", str(beam), *study.decode]
            ev = ev if cfg.model.task == "translation" else None
            expect = _decode_settings(beam, study.decode)
            if not _needed("train", folder) and (ev is None or not _needed("evaluate", folder, expect)):
                continue
            jobs.append(
                Job(f"{study.name}/{spec.folder}", folder, cfg.train.max_updates or 1, train, ev, expect=expect)
            )
    return jobs


def _child_setup() -> None:
    """In the child: die with the parent (a killed `reproduce` must not leave orphans writing
    into run folders), via Linux's PR_SET_PDEATHSIG = 1, SIGTERM (graceful stop in train)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class RunFailed(RuntimeError):
    """A command of the grid failed (not diverged): a bug or a setup problem; its log's tail."""


def _tail(path: Path, n: int = 3) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").replace("\r", "\n").splitlines() if ln.strip()]
    except OSError:
        return ""
    return "\n".join(lines[-n:])


class _Slot:
    def __init__(self, job: Job, threads: int, gpu: str | None = None):
        self.job, self.threads, self.gpu, self.started = job, threads, gpu, time.time()
        self.steps = [s for s in ("analyze", "train", "evaluate") if getattr(job, s)]
        self.proc: subprocess.Popen | None = None

    def next_step(self) -> bool:
        """Start the next command; False when there is none (or the run diverged)."""
        while self.steps:
            step = self.steps.pop(0)
            if not _needed(step, self.job.folder, self.job.expect):
                continue
            self.job.folder.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
            if self.gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = self.gpu
            log = open(self.job.folder / f"{step}.log", "a")
            cmd = [sys.executable, "-m", "preln", *getattr(self.job, step)]
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, preexec_fn=_child_setup)
            log.close()
            self.step = step
            return True
        return False


def execute(
    jobs: list[Job], jobs_at_once: int = 1, gpus: list[str] | None = None, poll_s: float = 1.0
) -> dict[str, str]:
    """Run the jobs, ``jobs_at_once`` subprocesses at a time (with ``gpus``: one GPU each, via
    CUDA_VISIBLE_DEVICES), with one progress bar over all of them (weighted by updates). A
    diverged run is recorded and the rest goes on; a failing command stops the others gracefully
    and raises RunFailed with its log. Ctrl-C / SIGTERM: the children finish their update and
    checkpoint, then this raises KeyboardInterrupt (rerun to resume).
    Returns {job name: "completed" | "diverged" | "done"}."""
    cpus = os.cpu_count() or 1
    if jobs_at_once < 1 or jobs_at_once > cpus:
        raise ConfigError(f"--jobs {jobs_at_once}: use 1..{cpus} (the CPU cores; more processes would thrash)")
    if gpus is not None and len(gpus) < jobs_at_once:
        raise ConfigError(f"--jobs {jobs_at_once} needs as many GPUs, --gpus lists {len(gpus)}")
    threads, free_gpus = max(1, cpus // jobs_at_once), list(gpus or [])
    pending, running, results, finished = list(jobs), [], {}, 0

    def release(slot: _Slot) -> None:
        nonlocal finished
        free_gpus.extend([slot.gpu] if slot.gpu is not None else [])
        results[slot.job.name], finished = _finish(slot, bar), finished + slot.job.size

    bar = tqdm(total=sum(j.size for j in jobs), desc="reproduce", unit="upd", dynamic_ncols=True, smoothing=0.05)
    stop = _Interrupts()
    try:
        while pending or running:
            while pending and len(running) < jobs_at_once and not stop.requested:
                slot = _Slot(pending.pop(0), threads, free_gpus.pop(0) if gpus else None)
                if slot.next_step():
                    running.append(slot)
                else:
                    release(slot)
            for slot in list(running):
                rc = slot.proc.poll()
                if rc is None:
                    continue
                if rc == 130 or stop.requested:
                    running.remove(slot)
                    continue
                if rc not in (0, 1) or (rc == 1 and slot.step != "train"):
                    running.remove(slot)
                    stop.terminate(running)
                    log = slot.job.folder / f"{slot.step}.log"
                    raise RunFailed(f"{slot.job.name}: `preln {slot.step}` failed (exit {rc}); {log}:\n{_tail(log)}")
                if not slot.next_step():
                    running.remove(slot)
                    release(slot)
            if stop.requested and not running:
                raise KeyboardInterrupt
            _show(bar, finished, running)
            time.sleep(poll_s)
    except KeyboardInterrupt:
        if not stop.requested or running:  # a second interrupt: abort
            stop.kill(running)
        raise
    finally:
        stop.restore()
        bar.close()
    return results


def _show(bar: tqdm, finished: int, running: list[_Slot]) -> None:
    live = {s.job.name: min(_last_update(s.job.folder), s.job.size) if s.job.train else 0 for s in running}
    bar.n = finished + sum(live.values())
    bar.set_postfix_str(" ".join(f"{n}@{u}" for n, u in live.items()), refresh=False)
    interval = 1.0 if sys.stderr.isatty() else 30.0  # a log file gets a line every 30 s, not every second
    if time.time() - getattr(bar, "_shown", 0.0) >= interval:
        bar.refresh()
        bar._shown = time.time()


def _finish(slot: _Slot, bar: tqdm) -> str:
    status = run_status(slot.job.folder) if slot.job.train else "done"
    msg = f"{slot.job.name}: {status} in {time.time() - slot.started:.0f} s"
    if (slot.job.folder / "bleu.json").is_file():
        test = json.loads((slot.job.folder / "bleu.json").read_text())["splits"].get("test", {})
        if "sacrebleu" in test:
            msg += f", test sacreBLEU {test['sacrebleu']:.2f}"
        msg += f", tok-lc BLEU {test.get('tok_lc', float('nan')):.2f}"
    bar.write(f"[preln] {msg}", file=sys.stderr)
    return status or "missing"


class _Interrupts:
    """First Ctrl-C / SIGTERM: stop starting jobs, let the children stop gracefully (they get
    SIGINT from the terminal; SIGTERM is forwarded). Second: kill the children."""

    def __init__(self):
        self.requested, self.running = False, None
        self.old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\n[preln] stopping: runs finish their update and checkpoint (again to abort)", file=sys.stderr)
        if signum == signal.SIGTERM:
            for pid in _children():
                os.kill(pid, signal.SIGTERM)

    def kill(self, running: list[_Slot]) -> None:
        for s in running:
            s.proc.kill()

    def terminate(self, running: list[_Slot], timeout: float = 120.0) -> None:
        """Graceful stop (SIGTERM: finish the update, checkpoint), then wait."""
        for s in running:
            s.proc.terminate()
        for s in running:
            try:
                s.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                s.proc.kill()

    def restore(self) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)


def _children() -> list[int]:
    try:
        me = os.getpid()
        return [int(p) for p in Path(f"/proc/{me}/task/{me}/children").read_text().split()]
    except OSError:
        return []


def _machine() -> str:
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{os.cpu_count()} cores ({cpu}){gpu}, {platform.system()}, torch {torch.__version__}"


def _commit(root: Path) -> str:
    try:
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "-uno"], capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return (r.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")) or "unknown"


def record_invocation(out: Path, root: Path, preset: str, studies: list[Study], jobs: int, started: float) -> None:
    """Append this ``reproduce`` invocation (what, where, when, how long) to ``OUT/reproduce.json``,
    which the report's header reads: a rerun that resumes adds a line, so the wall time of a
    reference run is the sum over its invocations."""
    from . import __version__

    path = out / "reproduce.json"
    try:
        history = json.loads(path.read_text()).get("invocations", [])
    except (OSError, ValueError):
        history = []
    history.append(
        {
            "preln": __version__,
            "commit": _commit(root),
            "preset": preset,
            "studies": [s.name for s in studies],
            "jobs": jobs,
            "machine": _machine(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
            "seconds": round(time.time() - started),
        }
    )
    path.write_text(json.dumps({"invocations": history}, indent=1) + "\n")
