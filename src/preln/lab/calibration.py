"""The decision rules' error rates, measured by simulation (docs/statistics.md quotes them; the
tests hold every rule to them on 1,000 simulated comparisons):

- a *false yes*: "yes" when the claim is false at its boundary — two identically distributed
  conditions for an ordering or a speed claim, a true difference of exactly -margin for
  non-inferiority, a true value on the band's edge for equivalence;
- *coverage*: how often the rule's 95% interval holds the true value, with a known effect.

``python -m preln.lab.calibration [--sims N]`` prints the table.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import convergence
from .stats import (
    Decision,
    Interval,
    bound,
    equivalence,
    mean_interval,
    noninferiority,
    ordering,
    seeds_to_decide,
    slope_interval,
)

VALIDATIONS = tuple(range(25, 401, 25))
"""The simulated runs' validation grid: every 25 updates to 400 (the quick preset's Fig. 4 runs)."""


@dataclass(frozen=True)
class Rates:
    """Verdict frequencies over the simulations, and the interval's coverage of the truth."""

    yes: float
    no: float
    undecided: float
    coverage: float | None
    """None where the truth is not one number (the speed ratio with seed-level final losses)."""

    def row(self) -> str:
        cov = "-" if self.coverage is None else f"{self.coverage:6.1%}"
        return f"yes {self.yes:6.1%}  no {self.no:6.1%}  undecided {self.undecided:6.1%}  coverage {cov:>6}"


def _rates(sims: int, draw: Callable[[np.random.Generator], tuple[Decision, bool | None]], seed: int) -> Rates:
    rng = np.random.default_rng(seed)
    counts = {"yes": 0, "no": 0, "undecided": 0}
    covered: list[bool] = []
    for _ in range(sims):
        d, cov = draw(rng)
        counts[d.verdict] += 1
        if cov is not None:
            covered.append(cov)
    coverage = sum(covered) / len(covered) if covered else None
    return Rates(counts["yes"] / sims, counts["no"] / sims, counts["undecided"] / sims, coverage)


def _covers(iv: Interval | None, truth: float) -> bool:
    return iv is not None and iv.lo <= truth <= iv.hi


def ordering_rates(n: int, effect: float = 0.0, sds=(1.0, 2.0), sims: int = 1000, seed: int = 0) -> Rates:
    """A better (higher) than B: normal values, unequal spreads, true difference ``effect``."""

    def draw(rng):
        a, b = rng.normal(effect, sds[0], n), rng.normal(0.0, sds[1], n)
        d = ordering(a, b, higher_is_better=True)
        return d, _covers(d.interval, effect)

    return _rates(sims, draw, seed)


def noninferiority_rates(n: int, margin: float = 1.0, effect: float = -1.0, sims: int = 1000, seed: int = 0) -> Rates:
    """A at least as good as B up to ``margin``; at ``effect = -margin`` the claim is false at its edge."""

    def draw(rng):
        a, b = rng.normal(effect, 1.0, n), rng.normal(0.0, 1.5, n)
        d = noninferiority(a, b, True, margin)
        return d, _covers(d.interval, effect)

    return _rates(sims, draw, seed)


def equivalence_rates(
    n: int, value: float = 0.0, tolerance: float = 1.0, truth: float = 1.0, sims: int = 1000, seed: int = 0
) -> Rates:
    """x equals ``value`` within ``tolerance``; at ``truth`` on the band's edge the claim is false."""

    def draw(rng):
        x = rng.normal(truth, 0.5, n)
        iv = mean_interval(x)
        return equivalence(iv, value, tolerance, n), _covers(iv, truth)

    return _rates(sims, draw, seed)


def planned_rates(
    rule: str, effect: float, sds: tuple[float, ...], margin: float = 1.0, sims: int = 1000, seed: int = 0
) -> tuple[int | None, Rates]:
    """``stats.seeds_to_decide``'s plan checked: the seeds per condition it asks for at true
    difference ``effect`` (A - B; for "bound", A's mean against 0) and true spreads ``sds``, and the
    verdicts at that many seeds (the plan promises a decision ``stats.POWER`` of the time or more).
    ``rule``: "ordering" (threshold 0), "noninferiority" (threshold -margin) or "bound"."""
    threshold = -margin if rule == "noninferiority" else 0.0
    n = seeds_to_decide(effect - threshold, [sd**2 for sd in sds])
    if n is None:
        return None, Rates(0.0, 0.0, 1.0, None)
    return n, decision_rates(rule, n, effect, sds, margin, sims, seed)


def decision_rates(
    rule: str, n: int, effect: float, sds: tuple[float, ...], margin: float = 1.0, sims: int = 1000, seed: int = 0
) -> Rates:
    """The verdicts of ``rule`` (as ``planned_rates``) with ``n`` seeds per condition."""

    def draw(rng):
        a = rng.normal(effect, sds[0], n)
        if rule == "bound":
            return bound(mean_interval(a), 0.0, True, n), None
        b = rng.normal(0.0, sds[1], n)
        return (ordering(a, b, True) if rule == "ordering" else noninferiority(a, b, True, margin)), None

    return _rates(sims, draw, seed)


def slope_rates(n: int, offset: float = 0.0, sims: int = 1000, seed: int = 0) -> Rates:
    """The log-log slope's interval (``stats.slope_interval``), depths 6..14, per-seed log noise
    0.05; the verdict is equivalence to -0.5 within 0.1, the true slope -0.5 + ``offset`` (on the
    band's edge at offset 0.1)."""
    xs = np.log([6, 8, 10, 12, 14])
    slope = -0.5 + offset

    def draw(rng):
        ys = [slope * x + rng.normal(0.0, 0.05, n) for x in xs]
        iv = slope_interval(xs, ys)
        return equivalence(iv, -0.5, 0.1, n), _covers(iv, slope)

    return _rates(sims, draw, seed)


def curve(speed: float, floor: float, rng: np.random.Generator, noise: float) -> tuple[tuple[int, float], ...]:
    """A validation curve whose progress runs ``speed`` times as fast as the reference one:
    L(u) = floor + 4 (1 + speed u / 40)^-0.8, plus independent noise at each validation."""
    return tuple((u, floor + 4.0 * (1 + speed * u / 40) ** -0.8 + float(rng.normal(0.0, noise))) for u in VALIDATIONS)


def speed_rates(
    n: int,
    ratio: float = 1.0,
    seed_sd: float = 0.1,
    noise: float = 0.02,
    floor_sd: float = 0.0,
    sims: int = 1000,
    seed: int = 0,
) -> Rates:
    """A needs ``ratio`` times B's updates (A's curves run 1/ratio times as fast), each run's speed
    varying by ``seed_sd`` (log scale) and, with ``floor_sd``, its final loss too (then the true
    ratio depends on the target: coverage is not measured). Target, crossings and verdict as the
    report decides them (``convergence.speed``)."""
    from .results import Run

    def run(speed: float, floor: float, rng, cond: str) -> Run:
        return Run(None, cond, 0, "", "completed", VALIDATIONS[-1], curve(speed, floor, rng, noise))

    def draw(rng):
        runs = {}
        for cond, k in (("a", 1 / ratio), ("b", 1.0)):
            speeds = k * np.exp(rng.normal(0.0, seed_sd, n))
            floors = 3.2 + rng.normal(0.0, floor_sd, n) if floor_sd else np.full(n, 3.2)
            runs[cond] = [run(float(s), float(f), rng, cond) for s, f in zip(speeds, floors)]
        sp = convergence.speed(runs, "a", "b")
        return sp.decision, None if floor_sd else _covers(sp.decision.interval, ratio)

    return _rates(sims, draw, seed)


def table(sims: int = 1000) -> list[tuple[str, Rates]]:
    """Every rule's error rates as docs/statistics.md reports them."""
    out = []
    for n in (3, 5):
        out.append((f"ordering, null (A = B), n = {n}", ordering_rates(n, 0.0, sims=sims)))
    out.append(("ordering, effect 2 (sd 1 and 2), n = 5", ordering_rates(5, 2.0, sims=sims)))
    for n in (3, 5):
        out.append((f"non-inferiority, at the margin (A = B - 1), n = {n}", noninferiority_rates(n, sims=sims)))
    out.append(("non-inferiority, A = B, n = 5", noninferiority_rates(5, effect=0.0, sims=sims)))
    for rule, effect, sds in (
        ("ordering", 1.0, (1.0, 2.0)),
        ("noninferiority", -0.2, (0.6, 0.5)),
        ("bound", 0.3, (0.5,)),
    ):
        n, rates = planned_rates(rule, effect, sds, sims=sims)
        out.append((f"{rule}, effect {effect:g} (sd {', '.join(map(str, sds))}), the planned n = {n}", rates))
    for n in (3, 5):
        out.append((f"equivalence, truth on the band's edge, n = {n}", equivalence_rates(n, sims=sims)))
    out.append(("equivalence, truth at the centre, n = 5", equivalence_rates(5, truth=0.0, sims=sims)))
    for n in (3, 5, 10):
        out.append((f"slope equivalence, truth on the band's edge, n = {n} per depth", slope_rates(n, 0.1, sims=sims)))
    out.append(("slope equivalence, truth at the centre, n = 10 per depth", slope_rates(10, sims=sims)))
    for n in (3, 5):
        out.append((f"speed, null (ratio 1), n = {n}", speed_rates(n, 1.0, sims=sims)))
        out.append(
            (
                f"speed, null, final losses differing by seed (sd 0.03), n = {n}",
                speed_rates(n, 1.0, floor_sd=0.03, sims=sims),
            )
        )
    out.append(("speed, ratio 0.67, n = 3", speed_rates(3, 2 / 3, sims=sims)))
    out.append(("speed, ratio 0.67, n = 5", speed_rates(5, 2 / 3, sims=sims)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description="the decision rules' simulated error rates")
    p.add_argument("--sims", type=int, default=1000)
    args = p.parse_args()
    for name, r in table(args.sims):
        print(f"{name:<62} {r.row()}")


if __name__ == "__main__":
    main()
