"""Learning-rate schedules as pure functions ``update -> lr``.

``update`` is 1-based: the lr of the first optimizer update is ``f(1)``. Every schedule starts
with an optional linear warm-up from ``init`` to ``peak`` over ``warmup`` updates:
``f(s) = init + (peak - init) * s / warmup`` for ``s <= warmup``, so update 1 never runs at
``init`` (0 by default) and ``warmup = 0`` (no warm-up) means update 1 runs at ``peak``.
No schedule divides by ``warmup``, so 0 is always legal.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from .config import ScheduleConfig
from .errors import ConfigError

Schedule = Callable[[int], float]


def _warmup(peak: float, warmup: int, init: float, after: Schedule) -> Schedule:
    def f(step: int) -> float:
        if step < 1:
            raise ValueError(f"updates are numbered from 1, got {step}")
        if step <= warmup:
            return init + (peak - init) * step / warmup
        return after(step)

    return f


def constant(peak: float, warmup: int = 0, init: float = 0.0) -> Schedule:
    return _warmup(peak, warmup, init, lambda step: peak)


def inverse_sqrt(peak: float, warmup: int = 0, init: float = 0.0, timescale: int = 0) -> Schedule:
    """After warm-up ``peak * sqrt(timescale / step)`` (never above peak).

    With ``timescale = warmup`` (the default when 0) this is fairseq's ``inverse_sqrt``. Without
    warm-up fairseq divides by zero (fairseq#1341); here the decay's timescale is its own
    parameter and must then be given.
    """
    tau = timescale or warmup
    if tau <= 0:
        raise ConfigError("inverse_sqrt needs timescale > 0 when warmup is 0")
    return _warmup(peak, warmup, init, lambda step: peak * math.sqrt(tau / max(step, tau)))


def linear(peak: float, total: int, warmup: int = 0, init: float = 0.0) -> Schedule:
    """BERT: after warm-up, decay linearly so that update ``total`` is the last nonzero one:
    ``peak * (total - step + 1) / (total - warmup)``; 0 after ``total``."""
    if total <= warmup:
        raise ConfigError(f"linear schedule: total ({total}) must exceed warmup ({warmup})")
    return _warmup(peak, warmup, init, lambda step: peak * max(0, total - step + 1) / (total - warmup))


def step_decay(
    peak: float, milestones: tuple[int, ...], gamma: float = 0.1, warmup: int = 0, init: float = 0.0
) -> Schedule:
    """``peak * gamma ** k`` where k = number of milestones m with ``step > m`` (an update
    milestone m means updates 1..m run before the decay)."""
    return _warmup(peak, warmup, init, lambda step: peak * gamma ** sum(step > m for m in milestones))


def needs_total(s: ScheduleConfig) -> bool:
    """Whether the schedule's shape depends on the run's length (linear decay, a warm-up share)."""
    return s.kind == "linear" or s.warmup_fraction > 0


def fix_total(s: ScheduleConfig, max_updates: int) -> ScheduleConfig:
    """The schedule with the run's length written into ``total`` where its shape depends on it: a
    run extended later keeps the schedule its past updates ran on (and says so in config.toml)."""
    return replace(s, total=max_updates) if needs_total(s) and not s.total else s


def from_config(s: ScheduleConfig, peak: float, max_updates: int = 0, updates_per_epoch: int = 0) -> Schedule:
    """Build the configured schedule. Epoch milestones become updates via
    ``updates_per_epoch``: "x0.1 at epoch 8" decays from the first update of epoch 8."""
    if s.warmup_fraction > 0:
        if max_updates <= 0:
            raise ConfigError("schedule.warmup_fraction needs the run's number of updates")
        total = s.total or max_updates  # the share rounded, and at least one update after it
        s = replace(s, warmup=min(round(s.warmup_fraction * total), total - 1))
    if s.kind == "constant":
        return constant(peak, s.warmup, s.warmup_init_lr)
    if s.kind == "inverse_sqrt":
        return inverse_sqrt(peak, s.warmup, s.warmup_init_lr, s.timescale)
    if s.kind == "linear":
        return linear(peak, s.total or max_updates, s.warmup, s.warmup_init_lr)
    milestones = s.milestones
    if s.unit == "epoch":
        if updates_per_epoch <= 0:
            raise ConfigError("epoch milestones need the number of updates per epoch")
        milestones = tuple((m - 1) * updates_per_epoch for m in s.milestones)
    return step_decay(peak, milestones, s.gamma, s.warmup, s.warmup_init_lr)
