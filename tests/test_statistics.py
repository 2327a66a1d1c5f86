"""The decision rules against simulation: on 1,000 comparisons where the claim is false at its
boundary, "yes" at most 5% (each rule errs at 2.5% per direction by design); with a known effect,
the 95% interval covers the truth 90..99% of the time; degenerate inputs never decide."""

import math

import pytest

from preln.lab import calibration, convergence
from preln.lab.stats import Interval, bound, equivalence, mean_interval, noninferiority, ordering

SIMS = 1000


@pytest.mark.parametrize("n", [3, 5])
@pytest.mark.parametrize(
    "rule",
    [
        lambda n: calibration.ordering_rates(n, 0.0, sims=SIMS),
        lambda n: calibration.noninferiority_rates(n, margin=1.0, effect=-1.0, sims=SIMS),
        lambda n: calibration.equivalence_rates(n, truth=1.0, sims=SIMS),
        lambda n: calibration.slope_rates(n, offset=0.1, sims=SIMS),
        lambda n: calibration.speed_rates(n, 1.0, sims=SIMS),
        lambda n: calibration.speed_rates(n, 1.0, floor_sd=0.03, sims=SIMS),
    ],
    ids=["ordering", "non-inferiority", "equivalence", "slope", "speed", "speed-floors"],
)
def test_a_false_claim_is_called_yes_at_most_5_percent_of_the_time(rule, n):
    rates = rule(n)
    assert rates.yes <= 0.05, rates


@pytest.mark.parametrize(
    "rule",
    [
        lambda: calibration.ordering_rates(5, 2.0, sims=SIMS),
        lambda: calibration.noninferiority_rates(5, effect=0.0, sims=SIMS),
        lambda: calibration.equivalence_rates(5, truth=0.0, sims=SIMS),
        lambda: calibration.slope_rates(5, sims=SIMS),
        lambda: calibration.speed_rates(5, 2 / 3, sims=SIMS),
    ],
    ids=["ordering", "non-inferiority", "equivalence", "slope", "speed"],
)
def test_intervals_cover_a_known_effect_90_to_99_percent_of_the_time(rule):
    rates = rule()
    assert 0.90 <= rates.coverage <= 0.99, rates


def test_with_a_real_effect_the_rules_decide():
    """Not only cautious: a real effect is found (the power the docs quote)."""
    assert calibration.speed_rates(5, 2 / 3, sims=300).yes > 0.9
    assert calibration.equivalence_rates(5, truth=0.0, sims=300).yes > 0.7


def test_too_few_seeds_or_zero_spread_never_decide():
    for a, b in (([1.0], [2.0, 3.0, 4.0]), ([1.0, 2.0], [5.0, 6.0])):  # below the minimum of 3
        for d in (ordering(a, b, True), noninferiority(a, b, True, 1.0)):
            assert d.verdict == "undecided" and d.reason.startswith("too few seeds: n = "), d
    same = [4.0, 4.0, 4.0]
    for d in (ordering(same, [5.0, 5.0, 5.0], False), noninferiority(same, same, True, 0.5)):
        assert d.verdict == "undecided" and d.reason.startswith("zero spread"), d
    iv = mean_interval(same)
    assert equivalence(iv, 4.0, 0.1, 3).verdict == "undecided" and bound(iv, 3.0, True, 3).verdict == "undecided"
    one = mean_interval([2.0])
    assert (one.lo, one.hi) == (-math.inf, math.inf) and bound(one, 0.0, True, 1).verdict == "undecided"


def test_a_speed_claim_where_seeds_miss_the_target_uses_them_only_as_bounds():
    never = [convergence.Crossing(400.0, "at_least")] * 3  # e.g. every run diverged before the target
    once = [convergence.Crossing(u, "exact") for u in (100.0, 120.0, 110.0)]
    assert convergence.decide(never, never).verdict == "undecided"  # zero spread, and only bounds
    # a condition that never got there is not the faster one, whatever its bound's exact value
    assert convergence.decide(never, once).verdict == "no" and convergence.decide(once, never).verdict == "yes"
    early = [convergence.Crossing(u, "at_least") for u in (50.0, 60.0, 55.0)]  # stopped before reaching it
    d = convergence.decide(early, once)
    assert d.verdict == "undecided" and "never reached the target" in d.reason
    assert convergence.decide(once[:2], once).reason.startswith("too few seeds")


def test_an_interval_of_zero_width_is_never_evidence():
    zero = Interval(0.5, 0.5, 0.5)
    assert equivalence(zero, 0.5, 0.1, 5).verdict == "undecided"
    assert bound(zero, 1.0, above=False, n=5).verdict == "undecided"


def test_no_rule_says_yes_or_no_from_a_zero_width_interval_or_too_few_seeds():
    """Random small inputs (1..5 values a side, often all equal) through every rule: a yes or no
    always comes with the rule's minimum of seeds on each side and an interval of positive width."""
    import numpy as np

    rng = np.random.default_rng(7)
    seen = set()
    for _ in range(3000):
        na, nb = rng.integers(1, 6, 2)
        a = rng.normal(0, 1, na) if rng.random() < 0.5 else np.full(na, rng.normal())
        b = rng.normal(0, 1, nb) + rng.normal(0, 3) if rng.random() < 0.5 else np.full(nb, rng.normal())
        decisions = [ordering(a, b, True), noninferiority(a, b, True, 0.5)]
        iv = mean_interval(a)
        decisions += [equivalence(iv, 0.0, 1.0, na), bound(iv, 0.0, True, na)]
        kinds = ["exact", "at_most", "at_least"]
        ca = [convergence.Crossing(float(abs(x) * 100 + 1), kinds[rng.integers(3)]) for x in a]
        cb = [convergence.Crossing(float(abs(x) * 100 + 1), kinds[rng.integers(3)]) for x in b]
        decisions.append(convergence.decide(ca, cb))
        for d in decisions:
            seen.add(d.verdict)
            if d.verdict in ("yes", "no"):
                assert min(na, nb) >= 3 or d.rule in ("bound",) or d.rule.startswith("equivalence"), d
                assert na >= 3 and d.interval is not None and d.interval.width > 0, d
    assert seen == {"yes", "no", "undecided"}
