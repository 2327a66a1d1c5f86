"""Typed records from TOML: a frozen dataclass built from a parsed table with every value checked
against its field's annotation (``Literal`` choices, tuples, bool, int, float, str, nested
records), unknown keys answered with the likely intended one; ``section.key=value`` overrides in
TOML syntax; and the way back to TOML text. Knows no particular record: ``config`` (runs) and the
analysis and study files use it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import typing
from collections.abc import Iterable
from dataclasses import fields, is_dataclass
from typing import Any, Literal, get_args, get_origin

from .errors import ConfigError


def did_you_mean(word: object, choices: Iterable[object]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` to a mistyped ``word`` ("" when none is
    close): a typo in a key, a choice or a preset name is answered with the likely intended one."""
    if not isinstance(word, str):
        return ""
    names = [c for c in choices if isinstance(c, str)]
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it in canonical form."""
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(c) for c in get_args(tp))
            raise ConfigError(f"{path}: {value!r} is not one of {choices}{did_you_mean(value, get_args(tp))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)}")
        return tuple(coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{path}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp} at {path}")  # a bug in this module


def build(cls: type, data: Any, path: str) -> Any:
    """A ``cls`` record from the table ``data`` (``path``: where it sits, for errors)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            where = f"{path}.{key}" if path else key
            hint = did_you_mean(key, known)
            raise ConfigError(f"{where}: unknown key{hint} (known: {', '.join(sorted(known))})")
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        sub = f"{path}.{f.name}" if path else f.name
        tp = hints[f.name]
        if is_dataclass(tp):
            kwargs[f.name] = build(tp, data[f.name], sub)
        else:
            kwargs[f.name] = coerce(data[f.name], tp, sub)
    return cls(**kwargs)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=v"`` -> (["a", "b"], v): v in TOML syntax, or a bare word as a string."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    key, raw = item.split("=", 1)
    return key.strip().split("."), toml_literal(raw)


def toml_literal(raw: str) -> Any:
    """A value written on a command line: TOML syntax, or a bare word as a string (``post``)."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` strings (values in TOML syntax) to a raw config dict."""
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {k} is not a section")
        node[keys[-1]] = value
    return data


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def toml_value(v: Any) -> str:
    """A config value as TOML text (what ``--set`` and config.toml read back)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} to TOML")
