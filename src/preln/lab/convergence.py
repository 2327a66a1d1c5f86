"""How fast two conditions converge, from their validation curves (the rule is written out in
docs/statistics.md):

- **target**: the highest of the best validation NLLs of the two conditions' completed runs — a
  loss every completed run of both reaches, so either condition can turn out the faster one
  (a target taken from one condition alone is reached by it only at its end, and the ratio could
  then never come out above 1);
- **updates to the target**, per run: the first crossing, interpolated linearly between the two
  validations around it (not the validation grid's resolution). A run already below the target
  at its first validation got there *at most* then; a run that never reached it (diverged, or not
  finished) needs *at least* its last validated update. Both are bounds, used only where they make
  the verdict more cautious;
- **the ratio** of the two conditions' geometric-mean updates, with the Welch t interval of the
  difference of mean log updates (``stats.welch_interval``), exponentiated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from .document import mean
from .results import Run
from .stats import MIN_SEEDS, ZERO_SPREAD, Decision, Interval, too_few, welch_interval

INF = math.inf


@dataclass(frozen=True)
class Crossing:
    """When one run first reached the target validation NLL."""

    update: float
    kind: Literal["exact", "at_most", "at_least"]
    """exact: interpolated between two validations; at_most: below the target at its first
    validation; at_least: never reached it (the value is its last validated update)."""

    def text(self) -> str:
        return {"exact": f"{self.update:.0f}", "at_most": f"≤{self.update:.0f}", "at_least": f">{self.update:.0f}"}[
            self.kind
        ]


@dataclass(frozen=True)
class Speed:
    """A speed claim measured: ``condition`` against ``other`` at ``target``."""

    condition: str
    other: str
    target: float
    crossings: dict[str, list[Crossing]]
    """Per condition (the two compared), per run with a curve."""
    decision: Decision
    """The verdict, with the interval of the ratio (first / second)."""


def mean_curve(runs: list[Run]) -> list[tuple[int, float]]:
    """Mean validation NLL over seeds at each validated update, for the figures. A diverged run
    counts as +inf after its last validation (it never gets there); runs not started are left out."""
    runs = [r for r in runs if r.curve]
    updates = sorted({u for r in runs for u, _ in r.curve})
    out = []
    for u in updates:
        vals = []
        for r in runs:
            d = dict(r.curve)
            if u in d:
                vals.append(d[u])
            elif r.diverged and u > r.curve[-1][0]:
                vals.append(INF)
        if vals:
            out.append((u, mean(vals)))
    return out


def crossing(curve: tuple[tuple[int, float], ...], target: float) -> Crossing:
    """The first update at which ``curve`` reaches ``target`` (linear between validations)."""
    prev = None
    for u, v in curve:
        if v <= target:
            if prev is None:
                return Crossing(float(u), "at_most")
            (u0, v0) = prev
            return Crossing(u0 + (v0 - target) / (v0 - v) * (u - u0), "exact")
        prev = (u, v)
    return Crossing(float(curve[-1][0]), "at_least")


def target(runs: list[Run]) -> float | None:
    """The highest best validation NLL among the completed runs: every one of them reaches it."""
    bests = [min(v for _, v in r.curve) for r in runs if r.completed and r.curve]
    finite = [b for b in bests if math.isfinite(b)]
    return max(finite) if finite else None


def speed(conditions: dict[str, list[Run]], faster: str, slower: str, need: int = MIN_SEEDS) -> Speed | None:
    """``faster`` needs fewer updates than ``slower`` to reach a loss both reach: the verdict of
    the ratio's interval; None when neither condition has a completed run."""
    a, b = conditions.get(faster, []), conditions.get(slower, [])
    t = target(a + b)
    if t is None:
        return None
    cross = {c: [crossing(r.curve, t) for r in runs if r.curve] for c, runs in ((faster, a), (slower, b))}
    return Speed(faster, slower, t, cross, decide(cross[faster], cross[slower], need))


def decide(a: list[Crossing], b: list[Crossing], need: int = MIN_SEEDS) -> Decision:
    """yes: A needs fewer updates (the ratio's interval lies below 1); no: more (above 1). A bound
    stands in for a run's crossing only on the side where it makes the verdict more cautious: yes
    needs no run of A that never reached the target and no run of B that was there at once."""
    rule = "speed (t interval on log updates)"
    why = too_few([len(a), len(b)], need)
    if why:
        return Decision("undecided", rule, why)
    logs = [[math.log(max(c.update, 1.0)) for c in side] for side in (a, b)]
    d = welch_interval(*logs)
    iv = Interval(math.exp(d.estimate), math.exp(d.lo), math.exp(d.hi), d.df)
    if d.zero_width:
        return Decision("undecided", rule, ZERO_SPREAD, iv)
    if iv.hi < 1:
        blocked = _blocked(a, "at_least", "of the faster never reached the target") or _blocked(
            b, "at_most", "of the slower was below it at its first validation"
        )
        if blocked:
            return Decision("undecided", rule, f"the interval lies below 1, but {blocked}: the ratio is a bound", iv)
        return Decision("yes", rule, "the interval of the ratio lies below 1", iv)
    if iv.lo > 1:
        blocked = _blocked(a, "at_most", "of the first was below it at its first validation") or _blocked(
            b, "at_least", "of the second never reached the target"
        )
        if blocked:
            return Decision("undecided", rule, f"the interval lies above 1, but {blocked}: the ratio is a bound", iv)
        return Decision("no", rule, "the interval of the ratio lies above 1", iv)
    return Decision("undecided", rule, "the interval of the ratio holds 1", iv)


def _blocked(side: list[Crossing], kind: str, words: str) -> str:
    n = sum(c.kind == kind for c in side)
    return f"{n} run{'s' * (n > 1)} {words}" if n else ""
