"""Fine-tunings of two conditions with the same seeds share their fine-tuning seed (head
initialization, example order, dropout), and that shared noise is most of their spread: the claims
compare them pair by pair (``stats.paired_interval``), held here against scipy's paired t test
and against simulation (false-yes rate, coverage, and deciding more often than Welch)."""

import numpy as np
import pytest
from scipy import stats as sps

from preln.lab import calibration, claims, metrics
from preln.lab.results import FinetuneRun, Run, StudyResults, paired
from preln.lab.stats import ordering, paired_interval
from preln.lab.studies import Claim, Study


def test_the_paired_interval_is_scipys_paired_t_interval():
    rng = np.random.default_rng(3)
    a, b = rng.normal(1.0, 1.0, 5), rng.normal(0.0, 1.0, 5)
    iv = paired_interval(a, b)
    ref = sps.ttest_rel(a, b).confidence_interval(0.95)
    assert (iv.lo, iv.hi, iv.df) == pytest.approx((ref.low, ref.high, 4))
    assert iv.estimate == pytest.approx(float(np.mean(a - b)))
    with pytest.raises(ValueError, match="different sizes"):
        paired_interval([1.0, 2.0], [1.0])


def _ft(cond: str, seed: int, rep: int, acc: float, top: float = 60.0) -> FinetuneRun:
    scores = {"accuracy": acc, "top_class": top}
    return FinetuneRun(cond, seed, "paraphrase", "completed", ((1, acc),), dict(scores), dict(scores), rep)


def _results(pre: list[FinetuneRun], post: list[FinetuneRun], claim: Claim) -> StudyResults:
    conditions = {c: [Run(None, c, s, "", "completed", 10, ((10, 5.0),)) for s in (1, 2, 3)] for c in ("pre", "post")}
    return StudyResults(
        "s", Study("s", "t", (), claims=(claim,)), conditions, {"paraphrase": {"pre": pre, "post": post}}
    )


# the fine-tuning seeds move both conditions alike (seed means 2 points apart); post is 0.5 better
SHARED = {(s, r): 2.0 * (s - 2) + np.sin(7 * s + 3 * r) for s in (1, 2, 3) for r in (1, 2, 3)}
NOISE = {(s, r): 0.05 * np.cos(11 * s + 5 * r) for s in (1, 2, 3) for r in (1, 2, 3)}


def _pair(offset: float) -> tuple[list[FinetuneRun], list[FinetuneRun]]:
    pre = [_ft("pre", s, r, 75.0 + SHARED[s, r] + NOISE[s, r]) for (s, r) in SHARED]
    post = [_ft("post", s, r, 75.0 + offset + SHARED[s, r] - NOISE[s, r]) for (s, r) in SHARED]
    return pre, post


def test_fine_tunings_pair_by_seed_and_replicate_and_a_left_out_one_drops_its_pair():
    pre, post = _pair(0.5)
    post[4] = _ft("post", 2, 2, 50.0, top=100.0)  # seed 2, replicate 2 predicts one class
    claim = Claim("pre as good", condition="pre", as_good_as="post", metric="test_accuracy:paraphrase")
    res = _results(pre, post, claim)
    m = metrics.metric("test_accuracy:paraphrase")
    xs, ys = paired(res.sample(m, "pre"), res.sample(m, "post"))
    by = {(f.seed, f.replicate): f.test["accuracy"] for f in pre}
    assert xs[1] == pytest.approx((by[2, 1] + by[2, 3]) / 2)  # seed 2 without its replicate 2
    assert [x - y for x, y in zip(xs, ys)] == pytest.approx(
        [-0.5 + np.mean([2 * NOISE[s, r] for r in reps]) for s, reps in ((1, (1, 2, 3)), (2, (1, 3)), (3, (1, 2, 3)))]
    )


def test_a_fine_tuning_claim_is_decided_pair_by_pair_where_welch_over_models_is_not():
    pre, post = _pair(0.5)
    better = Claim("post better", condition="post", better_than="pre", metric="test_accuracy:paraphrase")
    (j,) = claims.judge(_results(pre, post, better))
    assert j.verdict == "yes" and j.decision.rule == "ordering, paired"
    m = metrics.metric("test_accuracy:paraphrase")
    res = _results(pre, post, better)
    welch = ordering(res.sample(m, "post").values, res.sample(m, "pre").values, True)
    assert welch.verdict == "undecided"  # the models' means carry the shared +-2 points
    even = Claim("pre as good", condition="pre", as_good_as="post", metric="test_accuracy:paraphrase")
    (j,) = claims.judge(_results(pre, post, even))
    assert j.verdict == "yes" and "non-inferiority, paired (margin 1)" in claims.plain(j.shows)


@pytest.mark.parametrize("n", [3, 5])
def test_paired_fine_tunings_say_yes_to_a_false_claim_at_most_its_rate(n):
    rates = calibration.paired_rates(n, sims=1000, seed=n)
    assert rates.yes <= 0.025 + 3 * 0.005, rates  # 2.5% one-sided, 3 Monte Carlo standard errors
    assert 0.93 <= rates.coverage <= 0.97, rates


def test_with_shared_fine_tuning_noise_pairs_decide_more_often_than_welch():
    p = calibration.paired_rates(3, -0.5, sims=1000)
    w = calibration.paired_rates(3, -0.5, paired=False, sims=1000)
    assert p.no > 2 * w.no and p.yes == 0.0, (p, w)
    # with nothing shared the pairs stay valid (their interval is exact for any correlation)
    alone = calibration.paired_rates(3, noise=calibration.FinetuneNoise(shared=0.0, own=0.9), sims=1000)
    assert alone.yes <= 0.04 and 0.93 <= alone.coverage <= 0.97, alone
