"""Studies (``studies/*.toml``): parse, expand for a preset, and plan what is left to do.

A study file names a base config per preset, seeds, and conditions: explicit ``[[condition]]``
tables and/or ``[[grid]]`` tables whose factors expand to their cartesian product. Every value
is a ``--set`` override, so any config key can be a factor.

A study is a list of jobs, each a list of steps run in order in one folder: ``steps = ["train",
"evaluate"]`` (the default: one job per condition and seed in ``OUT/<study>/<condition>-s<seed>``,
``preln train`` then test BLEU by ``preln evaluate`` for translation runs) or ``steps =
["analyze"]`` (one job in ``OUT/<study>``: ``preln analyze`` with the preset's ``analysis``
preset and ``set``) or ``steps = ["train", "finetune"]`` (masked-LM pretraining, then fine-tuning
on the preset's tasks). What each step runs and when it is done is written once, in
``steps.py``; ``execute.py`` runs the jobs, skipping the steps whose results exist.
"""

from __future__ import annotations

import itertools
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .. import atomic, config
from ..config import ConfigError
from ..finetune import TASKS as FINETUNE_TASKS
from ..tasks import check as check_task
from ..tasks import get as task_of
from .evaluation import Evaluation, evaluation_of
from .study_checks import CLAIM_KEYS, check_study_file, folder_safe

STEPS = ("train", "evaluate", "analyze", "finetune")
# A study with steps ["train", "finetune"] pretrains masked-LM runs and fine-tunes each on the
# preset's ``finetune`` tasks: job steps "finetune:<task>" (from the pretrained weights) and, for
# the preset's ``control`` condition (each seed, or the first ``control_seeds``), "control:<task>"
# (from random weights).


@dataclass(frozen=True)
class JobSpec:
    """One job of a study, independent of where the study's folder is."""

    steps: tuple[str, ...]
    folder: str = ""
    """Under the study's folder ("" = the study folder itself)."""
    condition: str = ""
    seed: int = 0
    group: str = ""
    """The grid (or "") the condition came from: the report draws one panel per group."""
    config: str = ""
    """train: the base config file."""
    overrides: tuple[str, ...] = ()
    """``--set`` items of its ``train`` or ``analyze`` step."""
    analysis: str = ""
    """analyze: the ``preln analyze`` preset."""
    finetune: tuple[str, ...] = ()
    """``--set`` items of its ``finetune:<task>`` and ``control:<task>`` steps."""
    size: int = 1
    """Weight in the progress display: updates (training) or ~ the analysis's time in updates."""


@dataclass(frozen=True)
class Claim:
    """A statement of the paper (or beyond it) that the report puts beside what was measured: the
    value of ``metric`` for ``condition`` and, where it compares, the verdict of the metric's rule
    against the other condition (``lab/claims.py``; the rules in docs/statistics.md)."""

    text: str
    paper: str = ""
    """The paper's number or words."""
    condition: str = ""
    metric: str = "test_bleu"
    """A name of ``lab/metrics.py``'s table."""
    better_than: str = ""
    """Ordering: ``condition`` is better than this one (higher BLEU/accuracy, lower NLL; for
    ``speed_ratio``: needs fewer updates)."""
    worse_than: str = ""
    """Ordering the other way: ``condition`` is worse than this one."""
    as_good_as: str = ""
    """Non-inferiority: ``condition`` is at least as good as this one, up to the metric's margin."""
    above: float | None = None
    """Bound: ``condition``'s mean lies above this value (the interval over its runs)."""
    if_no: str = ""
    """Why the claim may not show at the preset's scale: the report prints it under a claim
    decided no (each "no" explained; a "no" without it says the study file gives no reason)."""

    @property
    def other(self) -> str:
        return self.better_than or self.worse_than or self.as_good_as

    @classmethod
    def from_dict(cls, d: dict) -> Claim:
        return cls(**{k: v for k, v in d.items() if k in CLAIM_KEYS and k != "presets"})

    def to_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if v != "" and v is not None}


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    jobs: tuple[JobSpec, ...]
    claims: tuple[Claim, ...] = field(default_factory=tuple)
    """The claims the report puts beside measured values (see studies/*.toml); a claim on a
    condition left out of the preset reports "not run"."""
    evaluation: Evaluation = field(default_factory=lambda: Evaluation())
    """How its translation runs are scored (the preset's ``evaluate = ["--max-len-b", "10"]``)."""
    paper: tuple[str, str] = ("", "")
    """(the paper's setting in words, the paper's corpus name): the report says where ours differs."""
    reference: tuple[tuple[str, float], ...] = ()
    """Fine-tuning: (task, accuracy %) of a shallow reference model the report draws beside ours."""
    preset: str = ""
    """The preset it was expanded for (``quick``, ``long``, ...; "" in an older preln's
    study.json): a folder filled by several invocations may hold studies of different presets."""

    @property
    def runs(self) -> tuple[JobSpec, ...]:
        """The jobs that train a model."""
        return tuple(j for j in self.jobs if "train" in j.steps)


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


def _spread(keys: str, value: object) -> list[tuple[str, object]]:
    """(key, value) pairs of a factor: a key joined by ``+`` sets every key to the value, or, where
    the value is a list of one value per key, each key to its own (``"model.norm+schedule.warmup"
    = [["post", 0], ["pre", 40]]``)."""
    ks = keys.split("+")
    if len(ks) > 1 and isinstance(value, list) and len(value) == len(ks):
        return list(zip(ks, value))
    return [(k, value) for k in ks]


def _grid_conditions(p: Path, grids: list[dict], preset: str) -> list[dict]:
    """Reserved keys of a grid: ``name`` (prefix of its conditions' names), ``set`` and
    ``<preset>`` (overrides common to the grid); every dotted key is a factor. A factor key of
    several keys joined by ``+`` sets them all to each value (``"model.encoder_layers+
    model.decoder_layers" = [6, 12]``), or each to its own element of a list value, named after
    the first."""
    out = []
    for grid in grids:
        if preset not in grid.get("presets", [preset]):  # a grid may be left out of some presets
            continue
        factors = {k: _factor_values(p, k, v, preset) for k, v in grid.items() if "." in k}
        fixed = list(grid.get("set", [])) + list(grid.get(preset, []))
        prefix = grid.get("name", "")
        for combo in itertools.product(*factors.values()):
            sets = fixed + [
                f"{k}={config.toml_value(x)}" for ks, (_, v) in zip(factors, combo) for k, x in _spread(ks, v)
            ]
            parts = [f"{k.split('+')[0].split('.')[-1]}={label}" for k, (label, _) in zip(factors, combo)]
            out.append({"name": ",".join([prefix, *parts] if prefix else parts), "set": sets, "group": prefix})
    return out


def has_preset(path: Path, preset: str) -> bool:
    """Whether study file ``path`` has a ``[preset.<preset>]`` table (an unreadable file: False;
    ``load_study`` names its error)."""
    try:
        return preset in tomllib.loads(path.read_text()).get("preset", {})
    except (OSError, tomllib.TOMLDecodeError):
        return False


def load_study(path: str | Path, preset: str, root: Path | None = None) -> Study:
    """Expand a study file for ``preset``; every job's settings are loaded once to check them."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{p}: cannot read study file ({e})") from None
    check_study_file(p, raw)
    if preset not in raw.get("preset", {}):
        raise ConfigError(f"{p}: no [preset.{preset}] (has {', '.join(raw.get('preset', {})) or 'none'})")
    pre = raw["preset"][preset]
    steps = tuple(raw.get("steps", ["train", "evaluate"]))
    jobs, names = _train_jobs(p, raw, preset, steps, root) if "train" in steps else (_analysis_job(p, pre), [])
    claims = tuple(Claim.from_dict(c) for c in raw.get("claim", []) if preset in c.get("presets", [preset]))
    claimed = [x for c in claims for x in (c.condition, c.other) if x]
    curves = {curve_name(n) for n in names} - {None}
    for key in [*claimed, pre.get("control"), *pre.get("finetune_conditions", [])]:
        if key is not None and key not in names and key != CONTROL and key not in curves:
            raise ConfigError(f"{p}: {key!r} is not a condition of this study (has {', '.join(names)})")
    for c in claims:  # a fine-tuning claim (metric "test_accuracy:<task>") compares fine-tuned models
        left = {c.condition, c.other} - {"", CONTROL} - set(pre.get("finetune_conditions", names))
        if ":" in c.metric and left:
            need = sorted(left)[0]
            raise ConfigError(f"{p}: claim {c.text!r} needs {need!r} fine-tuned: add it to finetune_conditions")
    evaluation = Evaluation.from_flags(pre.get("evaluate", []), f"{p}: [preset.{preset}]")
    return Study(
        p.stem,
        raw.get("title", p.stem),
        jobs,
        claims=claims,
        evaluation=evaluation,
        paper=(raw.get("paper_setting", ""), raw.get("paper_corpus", "")),
        reference=tuple((str(k), float(v)) for k, v in raw.get("finetune_reference", {}).items()),
        preset=preset,
    )


def _analysis_job(p: Path, pre: dict) -> tuple[JobSpec, ...]:
    from . import analysis

    sets, name = tuple(pre.get("set", [])), pre.get("analysis", "cpu")
    try:
        analysis.with_overrides(analysis.preset(name), list(sets))
    except (ConfigError, ValueError, KeyError) as e:
        raise ConfigError(f"{p}: {e}") from None
    return (JobSpec(("analyze",), overrides=sets, analysis=name, size=200),)


def _train_jobs(p: Path, raw: dict, preset: str, steps: tuple[str, ...], root: Path | None):
    """(a job per condition and seed, the condition names)."""
    pre = raw["preset"][preset]
    base = str((root or Path.cwd()) / pre["config"])
    conditions = list(raw.get("condition", [])) + _grid_conditions(p, raw.get("grid", []), preset)
    if not conditions:
        raise ConfigError(f"{p}: no [[condition]] or [[grid]]")
    names = [c["name"] for c in conditions]
    if len(set(names)) != len(names):
        raise ConfigError(f"{p}: duplicate condition names")
    unsafe = next((n for n in names if not folder_safe(n)), None)
    if unsafe is not None:
        raise ConfigError(f"{p}: condition name {unsafe!r} is not folder-safe: give the grid factor `labels`")
    jobs = []
    for c in conditions:
        if preset not in c.get("presets", [preset]):  # a condition may be left out of some presets
            continue
        overrides = tuple(pre.get("set", [])) + tuple(c.get("set", [])) + tuple(c.get(preset, []))
        for seed in pre.get("seeds", [1]):
            over = (*overrides, f"train.seed={seed}", "train.progress=false")
            try:
                cfg = check_task(config.load(base, list(over)))
            except ConfigError as e:
                raise ConfigError(f"{p}: condition {c['name']!r}: {e}") from None
            task = task_of(cfg.model.task)
            mine = tuple(s for s in steps if s != "evaluate" or task.evaluated)
            if "finetune" in steps and not task.pretrains:
                raise ConfigError(
                    f"{p}: condition {c['name']!r}: steps fine-tune a masked-LM run, this is {cfg.model.task}"
                )
            if "finetune" in steps:
                tasks = [_task(p, t, root) for t in pre["finetune"]]
                # the control from random weights for the first ``control_seeds`` seeds (all by default)
                kinds = ("finetune",) if c["name"] in pre.get("finetune_conditions", [c["name"]]) else ()
                controlled = pre.get("seeds", [1])[: pre.get("control_seeds")]
                kinds += ("control",) if c["name"] == pre.get("control") and seed in controlled else ()
                mine = ("train", *finetune_steps(tasks, pre.get("finetune_seeds", 1), kinds))
            folder = f"{c['name']}-s{seed}"
            size = (cfg.train.max_updates or 1) * len(mine)  # a fine-tuning ~ the pretraining's time, roughly
            ft = tuple(pre.get("finetune_set", [])) + ("train.progress=false",)
            jobs.append(
                JobSpec(mine, folder, c["name"], int(seed), c.get("group", ""), base, over, size=size, finetune=ft)
            )
    return tuple(jobs), names


def _task(p: Path, task: str, root: Path | None) -> str:
    """A fine-tuning task of a study: a pairclf task name, or a folder of TSVs (relative to the
    study's root, like its configs), checked before anything trains."""
    if task in FINETUNE_TASKS:
        return task
    folder = Path(task) if Path(task).is_absolute() else (root or Path.cwd()) / task
    if not folder.is_dir():
        raise ConfigError(f"{p}: finetune task {task!r}: not one of {', '.join(FINETUNE_TASKS)} and not a folder")
    return str(folder.resolve())


LR_FACTOR = re.compile(r"(?:^|,)lr=([^,]+)")
"""A grid condition's peak-lr factor (``...,lr=0.001``): conditions that differ only in it form an
lr-sensitivity curve (``lab/sensitivity.py``)."""


def curve_name(condition: str) -> str | None:
    """The lr-sweep curve a condition belongs to (its name without the ``lr=`` factor), or None."""
    if not LR_FACTOR.search(condition):
        return None
    return ",".join(p for p in condition.split(",") if not p.startswith("lr="))


CONTROL = "random-init"
"""The name the report gives the control (fine-tuned from random weights)."""


# Step names, as ``study.json`` and ``steps.jsonl`` record them: ``train``, ``evaluate``,
# ``analyze``, ``finetune:<task>`` (from the pretrained weights), ``control:<task>`` (from random
# weights), and ``finetune@<k>:<task>`` / ``control@<k>:<task>`` for the k-th fine-tuning of the
# same model (k >= 2, the preset's ``finetune_seeds``). What each runs: ``steps.py``.

FINETUNE_SEED_STRIDE = 1000
"""The k-th fine-tuning of a model pretrained with seed s uses seed s + 1000 (k - 1): apart from
every pretraining seed a study lists (they are small integers)."""


@dataclass(frozen=True)
class Step:
    """A step's name, parsed."""

    kind: str
    """train, evaluate, analyze, finetune or control."""
    task: str = ""
    """finetune and control: a pairclf task name or a folder of TSVs."""
    replicate: int = 1
    """finetune and control: which fine-tuning of the same model (1 = the first)."""

    @classmethod
    def parse(cls, step: str) -> Step:
        head, _, task = step.partition(":")
        kind, _, k = head.partition("@")
        return cls(kind, task, int(k) if k else 1)

    @property
    def finetunes(self) -> bool:
        return self.kind in ("finetune", "control")

    @property
    def suffix(self) -> str:
        """What the k-th fine-tuning (k >= 2) adds to its folder's and log's names."""
        return "" if self.replicate == 1 else f"-r{self.replicate}"

    def seed(self, pretraining_seed: int) -> int:
        """The fine-tuning's seed (the first fine-tuning keeps the pretraining's)."""
        return pretraining_seed + FINETUNE_SEED_STRIDE * (self.replicate - 1)


def finetune_steps(tasks: list[str], replicates: int, kinds: tuple[str, ...]) -> tuple[str, ...]:
    """The fine-tuning steps of a pretraining job: each task ``replicates`` times of each kind
    (``finetune``: from its weights, unless the preset's ``finetune_conditions`` leave its condition
    out; ``control``: from random weights, where the job is the study's control)."""
    return tuple(
        f"{kind}{'' if k == 1 else f'@{k}'}:{t}" for kind in kinds for t in tasks for k in range(1, replicates + 1)
    )


def write_study_json(study: Study, sdir: Path) -> None:
    """What the report reads: the study as ``read_study_json`` gives it back."""
    jobs = [
        {"folder": j.folder, "steps": list(j.steps), "condition": j.condition, "group": j.group, "seed": j.seed}
        | {"config": j.config, "overrides": list(j.overrides), "analysis": j.analysis, "size": j.size}
        | ({"finetune": list(j.finetune)} if j.finetune else {})
        for j in study.jobs
    ]
    meta = {"title": study.title, "claims": [c.to_dict() for c in study.claims], "evaluate": study.evaluation.to_dict()}
    meta |= {"paper_setting": study.paper[0], "paper_corpus": study.paper[1]}
    meta |= {"finetune_reference": dict(study.reference), "preset": study.preset, "jobs": jobs}
    atomic.write_text(sdir / "study.json", json.dumps(meta, indent=1))


def read_study_json(sdir: Path) -> Study:
    """The ``Study`` that ``write_study_json`` wrote into ``sdir`` (also the files of older preln:
    jobs listed as ``runs``, a speed claim's conditions in ``compare``); a one-line error naming
    the file when it is not one."""
    path = sdir / "study.json"
    try:
        meta = json.loads(path.read_text())
        return study_from_json(sdir.name, meta)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"{path}: not a study.json that preln wrote ({type(e).__name__}: {e})") from None


def study_from_json(name: str, meta: dict) -> Study:
    runs = [{**r, "steps": ["train"]} for r in meta.get("runs", [])]  # before 0.2
    jobs = tuple(
        JobSpec(
            tuple(j["steps"]),
            j.get("folder", ""),
            j.get("condition", ""),
            int(j.get("seed", 0)),
            j.get("group", ""),
            j.get("config", ""),
            tuple(j.get("overrides", ())),
            j.get("analysis", ""),
            tuple(j.get("finetune", ())),
            int(j.get("size", 1)),
        )
        for j in meta.get("jobs", runs)
    )
    compare = meta.get("compare") or []  # before 0.3: the speed claim's conditions
    claims = []
    for c in meta.get("claims", []):
        if c.get("metric") == "speed_ratio" and not c.get("condition") and len(compare) == 2:
            c = {**c, "condition": compare[0], "better_than": compare[1]}
        claims.append(Claim.from_dict(c))
    return Study(
        name,
        str(meta.get("title", name)),
        jobs,
        claims=tuple(claims),
        evaluation=evaluation_of(meta),
        paper=(meta.get("paper_setting", ""), meta.get("paper_corpus", "")),
        reference=tuple((str(k), float(v)) for k, v in meta.get("finetune_reference", {}).items()),
        preset=str(meta.get("preset", "")),
    )
