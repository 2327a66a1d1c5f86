"""The decision rules behind every verdict of the reports, one per kind of claim (written out, with
their error rates measured by simulation, in docs/statistics.md; ``lab/calibration.py`` measures
them and the tests hold them to it).

Every rule reads a 95% interval (each one-sided direction at 2.5%) with exact Student t
quantiles (``scipy.stats``; fractional Welch-Satterthwaite degrees of freedom, not rounded):

- ordering, "A is better than B": yes when the interval of the difference (in the claimed
  direction) lies above 0, no when it lies below 0, undecided when it holds 0;
- non-inferiority, "A is at least as good as B": yes when the interval lies above -margin, no
  when it lies below -margin (worse by more than the margin), undecided otherwise;
- equivalence, "x equals the theory's value": yes when the interval lies inside value +- tolerance
  (two one-sided tests), no when it lies wholly outside, undecided otherwise (and said so when
  the interval is wider than the band);
- bound, "x lies above (below) a limit": yes / no / undecided as for an ordering against a
  constant;
- speed (``lab/convergence.py``): an ordering of mean log updates-to-target.

Below a rule's minimum number of seeds, or when every seed gave the same value (a zero-width
interval), the verdict is "undecided" and says why; never yes or no.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps

LEVEL = 0.95
"""Two-sided coverage of every interval; each one-sided direction errs at (1 - LEVEL) / 2."""
MIN_SEEDS = 3
"""Runs per condition (or seeds per measurement) that a comparison needs before it may decide."""
POWER = 0.8
"""The chance of deciding that ``seeds_to_decide`` plans for (the usual 80%)."""
MOST_SEEDS = 64
"""Beyond this many seeds per condition ``seeds_to_decide`` stops counting: "more than 64"."""

Verdict = Literal["yes", "no", "undecided", ""]
"""yes: the claim shows; no: its opposite shows; undecided: neither; "": nothing to decide."""


@dataclass(frozen=True)
class Interval:
    """An estimate and its two-sided ``LEVEL`` interval."""

    estimate: float
    lo: float
    hi: float
    df: float = math.inf
    """Degrees of freedom of the t quantile (inf: none needed; nan: no interval)."""

    @property
    def width(self) -> float:
        return self.hi - self.lo

    @property
    def zero_width(self) -> bool:
        return self.hi == self.lo

    def scaled(self, sign: float) -> Interval:
        """The interval of ``sign * x``."""
        lo, hi = sorted((sign * self.lo, sign * self.hi))
        return Interval(sign * self.estimate, lo, hi, self.df)


@dataclass(frozen=True)
class Decision:
    """A verdict, the rule that gave it, its reason in words and the interval it read."""

    verdict: Verdict
    rule: str
    reason: str
    interval: Interval | None = None


def t_quantile(df: float, level: float = LEVEL) -> float:
    """The two-sided ``level`` quantile of Student's t with ``df`` (possibly fractional) degrees
    of freedom; the normal quantile for infinite df."""
    q = 0.5 + level / 2
    return float(sps.norm.ppf(q) if math.isinf(df) else sps.t.ppf(q, df))


def mean_interval(xs: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean of independent seeds' values and its Student t interval; unbounded with one value."""
    x = np.asarray(xs, dtype=float)
    m = float(x.mean())
    if len(x) < 2:
        return Interval(m, -math.inf, math.inf, math.nan)
    half = t_quantile(len(x) - 1, level) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return Interval(m, m - half, m + half, len(x) - 1)


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Interval | None:
    """mean(a) - mean(b) and its Welch interval (unequal variances, Welch-Satterthwaite degrees of
    freedom, exact t quantile); None with fewer than two values on a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    return combination_interval([1.0, -1.0], [a, b], level)


def combination_interval(
    weights: Sequence[float], samples: Sequence[Sequence[float]], level: float = LEVEL
) -> Interval:
    """sum_i w_i mean(samples_i) over independent samples, with a t interval: variance
    sum_i w_i^2 s_i^2 / n_i, Welch-Satterthwaite degrees of freedom for that sum (a difference of
    two means is the case w = (1, -1))."""
    w = np.asarray(weights, dtype=float)
    est = float(sum(wi * float(np.mean(x)) for wi, x in zip(w, samples)))
    n = np.array([len(x) for x in samples], dtype=float)
    if (n[w != 0] < 2).any():
        return Interval(est, -math.inf, math.inf, math.nan)
    s2 = np.array([np.var(x, ddof=1) if len(x) > 1 else 0.0 for x in samples])
    terms = w**2 * s2 / n
    var = float(terms.sum())
    if var == 0:
        return Interval(est, est, est, math.nan)
    df = var**2 / float(sum(t**2 / (k - 1) for t, k in zip(terms, n) if t > 0))
    half = t_quantile(df, level) * math.sqrt(var)
    return Interval(est, est - half, est + half, df)


def decision_power(distance: float, variances: Sequence[float], n: int, level: float = LEVEL) -> float:
    """The chance that the ``level`` interval of a sum of means (each ±1 times a mean over ``n``
    seeds of values with these ``variances``; one variance: a mean against a constant) lies wholly
    on the truth's side of a threshold ``distance`` away from the truth: the noncentral t
    distribution at the Welch-Satterthwaite degrees of freedom (exact for one mean or equal
    variances, close otherwise; ``lab/calibration.py`` measures it)."""
    v = np.asarray(variances, dtype=float)
    se = math.sqrt(float(v.sum()) / n)
    df = (n - 1) * float(v.sum()) ** 2 / float((v**2).sum())
    return float(sps.nct.sf(t_quantile(df, level), df, abs(distance) / se))


def seeds_to_decide(
    distance: float, variances: Sequence[float], power: float = POWER, most: int = MOST_SEEDS
) -> int | None:
    """The fewest seeds per condition (at least ``MIN_SEEDS``) at which a rule would decide with
    chance ``power`` were the true difference ``distance`` away from the rule's threshold and the
    true variances these (a plug-in planning figure: from a few seeds both are themselves rough).
    None when that takes more than ``most`` seeds, the distance is 0 or the values show no spread."""
    if distance == 0 or not any(v > 0 for v in variances):
        return None
    for n in range(MIN_SEEDS, most + 1):
        if decision_power(distance, variances, n) >= power:
            return n
    return None


def slope_weights(xs: Sequence[float]) -> np.ndarray:
    """w with slope = sum_i w_i y_i for the least-squares line through (x_i, y_i)."""
    x = np.asarray(xs, dtype=float)
    return (x - x.mean()) / float(((x - x.mean()) ** 2).sum())


def slope_interval(xs: Sequence[float], ys: Sequence[Sequence[float]], level: float = LEVEL) -> Interval:
    """Least-squares slope of the per-x means of ``ys`` (independent seeds at each x) against
    ``xs``, with its t interval (a linear combination of the means: ``combination_interval``)."""
    return combination_interval(slope_weights(xs), ys, level)


def too_few(counts: Sequence[int], need: int = MIN_SEEDS) -> str | None:
    """The reason a rule may not decide with these runs per side, or None."""
    if min(counts) >= need:
        return None
    return f"too few seeds: n = {min(counts)}, this rule needs {need}"


ZERO_SPREAD = "zero spread: every seed gave the same value, so the seeds say nothing about the noise"


def ordering(a: Sequence[float], b: Sequence[float], higher_is_better: bool, need: int = MIN_SEEDS) -> Decision:
    """A better than B (higher, or lower when ``higher_is_better`` is False): the difference of
    means in the claimed direction, by its Welch interval."""
    rule = "ordering"
    why = too_few([len(a), len(b)], need)
    if why:
        return Decision("undecided", rule, why)
    iv = welch_interval(a, b).scaled(1 if higher_is_better else -1)
    if iv.zero_width:
        return Decision("undecided", rule, ZERO_SPREAD, iv)
    if iv.lo > 0:
        return Decision("yes", rule, "the interval of the difference lies above 0", iv)
    if iv.hi < 0:
        return Decision("no", rule, "the interval of the difference lies below 0", iv)
    return Decision("undecided", rule, "the interval of the difference holds 0", iv)


def noninferiority(
    a: Sequence[float], b: Sequence[float], higher_is_better: bool, margin: float, need: int = MIN_SEEDS
) -> Decision:
    """A at least as good as B, up to ``margin``: yes when the Welch interval of the difference
    (claimed direction) lies above -margin, no when it lies below -margin."""
    rule = f"non-inferiority (margin {margin:g})"
    why = too_few([len(a), len(b)], need)
    if why:
        return Decision("undecided", rule, why)
    iv = welch_interval(a, b).scaled(1 if higher_is_better else -1)
    if iv.zero_width:
        return Decision("undecided", rule, ZERO_SPREAD, iv)
    if iv.lo > -margin:
        return Decision("yes", rule, f"the interval of the difference lies above -{margin:g}", iv)
    if iv.hi < -margin:
        return Decision("no", rule, f"the interval of the difference lies below -{margin:g}", iv)
    return Decision("undecided", rule, f"the interval of the difference reaches below -{margin:g}", iv)


def equivalence(
    iv: Interval, value: float, tolerance: float, n: int, need: int = MIN_SEEDS, band: str = ""
) -> Decision:
    """x equals ``value`` within ``tolerance`` (two one-sided tests at 2.5% each): yes when the
    interval lies inside the band, no when it lies wholly outside it. ``band``: the band in words
    (default "value ± tolerance")."""
    band = band or f"{value:g} ± {tolerance:g}"
    rule = f"equivalence ({band})"
    why = too_few([n], need)
    if why:
        return Decision("undecided", rule, why, iv)
    if iv.zero_width:
        return Decision("undecided", rule, ZERO_SPREAD, iv)
    lo, hi = value - tolerance, value + tolerance
    if lo <= iv.lo and iv.hi <= hi:
        return Decision("yes", rule, f"the interval lies inside {band}", iv)
    if iv.hi < lo or iv.lo > hi:
        return Decision("no", rule, f"the interval lies outside {band}", iv)
    if iv.width > 2 * tolerance:
        return Decision("undecided", rule, f"the interval is wider than the band {band}", iv)
    return Decision("undecided", rule, f"the interval crosses an edge of {band}", iv)


def bound(iv: Interval, limit: float, above: bool, n: int, need: int = MIN_SEEDS, words: str = "") -> Decision:
    """x lies above ``limit`` (``above``) or below it: yes when the whole interval does, no when
    the whole interval lies on the other side. ``words``: the limit in words (default its value)."""
    rule = "bound"
    shown = words or f"{limit:g}"
    why = too_few([n], need)
    if why:
        return Decision("undecided", rule, why, iv)
    if iv.zero_width:
        return Decision("undecided", rule, ZERO_SPREAD, iv)
    side, other = ("above", "below") if above else ("below", "above")
    if (iv.lo > limit) if above else (iv.hi < limit):
        return Decision("yes", rule, f"the interval lies {side} {shown}", iv)
    if (iv.hi < limit) if above else (iv.lo > limit):
        return Decision("no", rule, f"the interval lies {other} {shown}", iv)
    return Decision("undecided", rule, f"the interval holds {shown}", iv)
