"""The checks of a study file (``studies/*.toml``) before it is expanded: unknown keys, values of
the wrong type, claims the metric table cannot decide. Each is a one-line ``ConfigError`` naming
the file and the table; ``studies.py`` expands what passes."""

from __future__ import annotations

from pathlib import Path

from ..config import ConfigError
from .metrics import metric

STUDY_KEYS = {"title", "steps", "paper_setting", "paper_corpus", "preset", "condition"}
STUDY_KEYS |= {"grid", "claim", "finetune_reference"}
PRESET_KEYS = {"config", "seeds", "set", "evaluate", "analysis", "finetune", "finetune_set", "finetune_seeds"}
PRESET_KEYS |= {"control", "control_seeds", "finetune_conditions"}
CLAIM_KEYS = {"text", "paper", "condition", "metric", "better_than", "worse_than", "as_good_as", "above", "presets"}
CLAIM_KEYS |= {"if_no"}
COMPARISONS = ("better_than", "worse_than", "as_good_as")


def _check_keys(p: Path, where: str, table: object, allowed: set[str], dotted: bool = False) -> None:
    """Unknown keys in a study file are errors (a typo would otherwise silently change the grid)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{p}: {where} must be a table")
    for key in table:
        if key not in allowed and not (dotted and "." in key):
            raise ConfigError(f"{p}: {where}: unknown key {key!r} (known: {', '.join(sorted(allowed))})")


def check_study_file(p: Path, raw: dict) -> None:
    """The whole file's shape, for every preset: keys, and seeds as a list of integers."""
    if "kind" in raw:  # study files before 0.2
        raise ConfigError(f'{p}: `kind = "analysis"` is now `steps = ["analyze"]`')
    if "baseline" in raw or "compare" in raw:  # study files before 0.3
        raise ConfigError(
            f"{p}: `baseline` and `compare` are gone: a speed claim names its conditions "
            '(condition = "a", better_than = "b", metric = "speed_ratio"; docs/statistics.md)'
        )
    _check_keys(p, "top level", raw, STUDY_KEYS)
    for key in ("title", "paper_setting", "paper_corpus"):
        if not isinstance(raw.get(key, ""), str):
            raise ConfigError(f"{p}: {key} must be a string, got {raw[key]!r}")
    steps = raw.get("steps", ["train", "evaluate"])
    if steps not in (["train"], ["train", "evaluate"], ["analyze"], ["train", "finetune"]):
        raise ConfigError(
            f'{p}: steps must be ["train", "evaluate"], ["train"], ["train", "finetune"] or ["analyze"], got {steps!r}'
        )
    presets = raw.get("preset", {})
    _check_keys(p, "[preset]", presets, set(presets))
    for name, pre in presets.items():
        _check_preset(p, f"[preset.{name}]", pre, steps)
    for i, c in enumerate(raw.get("condition", []), 1):
        _check_keys(p, f"[[condition]] #{i}", c, {"name", "set", "presets", *presets})
        name = c.get("name")
        if not folder_safe(name):
            raise ConfigError(f"{p}: [[condition]] #{i}: name must be a folder-safe string, got {name!r}")
        _check_presets(p, f"[[condition]] #{i}", c, presets)
    for i, g in enumerate(raw.get("grid", []), 1):
        _check_keys(p, f"[[grid]] #{i}", g, {"name", "set", "presets", *presets}, dotted=True)
        _check_presets(p, f"[[grid]] #{i}", g, presets)
    for i, c in enumerate(raw.get("claim", []), 1):
        _check_claim(p, f"[[claim]] #{i}", c)
        _check_presets(p, f"[[claim]] #{i}", c, presets)


def _check_preset(p: Path, where: str, pre: dict, steps: list) -> None:
    """A preset's keys and values: seeds (distinct integers), its base config, what it fine-tunes."""
    _check_keys(p, where, pre, PRESET_KEYS)
    seeds = pre.get("seeds", [1])
    if not (isinstance(seeds, list) and seeds and all(isinstance(x, int) and not isinstance(x, bool) for x in seeds)):
        raise ConfigError(f"{p}: {where} seeds must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):  # a repeated seed is the same run, not another sample
        raise ConfigError(f"{p}: {where} seeds must be distinct, got {seeds!r}")
    if "train" in steps and not isinstance(pre.get("config"), str):
        raise ConfigError(f"{p}: {where} config must name the base config file, got {pre.get('config')!r}")
    tasks = pre.get("finetune", [])
    if "finetune" in steps and not (isinstance(tasks, list) and tasks and all(isinstance(t, str) for t in tasks)):
        raise ConfigError(f"{p}: {where} finetune must list the tasks to fine-tune on, got {tasks!r}")
    k = pre.get("finetune_seeds", 1)
    if not (isinstance(k, int) and not isinstance(k, bool) and k >= 1 and ("finetune" in steps or k == 1)):
        raise ConfigError(
            f"{p}: {where} finetune_seeds must be a positive integer (fine-tunings per pretrained "
            f'model) in a study with steps ["train", "finetune"], got {k!r}'
        )
    _check_control_seeds(p, where, pre, seeds)
    only = pre.get("finetune_conditions")
    if only is not None and not (
        "finetune" in steps and isinstance(only, list) and only and all(isinstance(x, str) for x in only)
    ):
        raise ConfigError(
            f"{p}: {where} finetune_conditions must list the conditions whose models are fine-tuned "
            f'in a study with steps ["train", "finetune"], got {only!r}'
        )


def _check_control_seeds(p: Path, where: str, pre: dict, seeds: list) -> None:
    """``control_seeds = n``: the control is fine-tuned from random weights for the first n seeds."""
    if "control_seeds" not in pre:
        return
    n = pre["control_seeds"]
    if "control" not in pre:
        raise ConfigError(f"{p}: {where} control_seeds needs a control (the condition fine-tuned from random weights)")
    if not (isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= len(seeds)):
        raise ConfigError(
            f"{p}: {where} control_seeds must be a whole number from 1 to {len(seeds)} (the control's "
            f"first seeds fine-tuned from random weights), got {n!r}"
        )


def _check_presets(p: Path, where: str, table: dict, presets: dict) -> None:
    """``presets`` (a condition's, a grid's or a claim's): the presets it belongs to, by name."""
    only = table.get("presets", list(presets))
    if not (isinstance(only, list) and all(isinstance(x, str) and x in presets for x in only)):
        raise ConfigError(
            f"{p}: {where}: presets must list preset names of this file ({', '.join(presets)}), got {only!r}"
        )


def folder_safe(name: object) -> bool:
    """A name that is one folder: printable, no white space, no path separator, not hidden."""
    return (
        isinstance(name, str)
        and bool(name)
        and name.isprintable()
        and not any(ch.isspace() or ch in "/\\" for ch in name)
        and not name.startswith(".")
    )


def _check_claim(p: Path, where: str, c: object) -> None:
    """A claim's keys and values: texts are strings, the metric is one of the table's, and it
    compares with at most one other condition."""
    _check_keys(p, where, c, CLAIM_KEYS)
    if not isinstance(c.get("text"), str) or not c["text"]:
        raise ConfigError(f"{p}: {where}: text must be a non-empty string")
    bad = [k for k in CLAIM_KEYS - {"presets", "above"} if k in c and not isinstance(c[k], str)]
    if "above" in c and (isinstance(c["above"], bool) or not isinstance(c["above"], int | float)):
        raise ConfigError(f"{p}: {where}: above must be a number, got {c['above']!r}")
    if bad:
        raise ConfigError(f"{p}: {where}: {bad[0]} must be a string, got {c[bad[0]]!r}")
    try:
        m = metric(c.get("metric", "test_bleu"))
    except ConfigError as e:
        raise ConfigError(f"{p}: {where}: {e}") from None
    compared = [k for k in COMPARISONS if c.get(k)] + (["above"] if "above" in c else [])
    if len(compared) > 1:
        raise ConfigError(f"{p}: {where}: a claim compares with one condition; it has {' and '.join(compared)}")
    if compared and not c.get("condition"):
        raise ConfigError(f"{p}: {where}: {compared[0]} needs a condition to compare")
    if compared and not m.comparable:
        raise ConfigError(f"{p}: {where}: metric {m.name!r} is reported as a count; it compares with nothing")
    if m.name == "speed_ratio" and not (c.get("condition") and c.get("better_than")):
        raise ConfigError(f"{p}: {where}: a speed claim names condition (the faster) and better_than (the slower)")
