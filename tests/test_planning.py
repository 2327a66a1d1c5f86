"""What it would take: the seeds per condition that would decide an undecided claim
(``stats.seeds_to_decide``), held to its promise by simulation, and how the report says it."""

import json

import pytest

from preln.lab import calibration, claims, results, studies
from preln.lab.stats import MIN_SEEDS, POWER, seeds_to_decide

SIMS = 1000


@pytest.mark.parametrize(
    "rule, effect, sds, verdict",
    [
        ("ordering", 1.0, (1.0, 2.0), "yes"),
        ("ordering", -1.0, (1.0, 1.0), "no"),
        ("noninferiority", -0.2, (0.6, 0.5), "yes"),
        ("noninferiority", -2.0, (1.0, 1.0), "no"),
        ("bound", 0.3, (0.5,), "yes"),
    ],
)
def test_the_planned_seeds_decide_80_percent_of_the_time_and_fewer_do_not(rule, effect, sds, verdict):
    n, rates = calibration.planned_rates(rule, effect, sds, sims=SIMS)
    assert n is not None and n > MIN_SEEDS
    assert getattr(rates, verdict) >= POWER - 0.04, (n, rates)  # 1,000 simulations: sd 1.3 points
    fewer = calibration.decision_rates(rule, n - max(1, n // 4), effect, sds, sims=SIMS)
    assert getattr(fewer, verdict) < POWER, (n, fewer)  # the plan is the fewest, not a safe overshoot


def test_a_plan_needs_a_distance_and_a_spread_and_stops_counting_at_64():
    assert seeds_to_decide(0.0, [1.0, 1.0]) is None
    assert seeds_to_decide(1.0, [0.0, 0.0]) is None
    assert seeds_to_decide(0.01, [1.0, 1.0]) is None  # about 300,000 seeds: "more than 64"
    assert seeds_to_decide(50.0, [1.0, 1.0]) == MIN_SEEDS  # never fewer than a rule needs
    assert seeds_to_decide(-1.0, [1.0]) == seeds_to_decide(1.0, [1.0])  # toward "no" as toward "yes"


def _judge(tmp_path, a, b, kind="better_than"):
    sdir = tmp_path / "s"
    jobs = []
    for cond, finals in (("a", a), ("b", b)):
        for seed, final in enumerate(finals, 1):
            folder = sdir / f"{cond}-s{seed}"
            folder.mkdir(parents=True)
            row = {"kind": "valid", "update": 10, "epoch": 1, "valid_nll": final}
            (folder / "metrics.jsonl").write_text(json.dumps(row) + "\n")
            (folder / "status.json").write_text(json.dumps({"status": "completed", "update": 10}))
            jobs.append({"folder": folder.name, "steps": ["train"], "condition": cond, "seed": seed})
    claim = {"text": "a lower", "paper": "p", "condition": "a", kind: "b", "metric": "final_nll"}
    (sdir / "study.json").write_text(json.dumps({"title": "t", "jobs": jobs, "claims": [claim]}))
    (j,) = claims.judge(results.study_results(sdir, studies.read_study_json(sdir)))
    return j


def test_an_undecided_claim_says_how_many_seeds_would_decide_it(tmp_path):
    a, b = [4.0, 4.4, 4.2], [4.3, 4.5, 4.35]  # a lower by 0.18 in the mean: "yes" is the side it leans to
    j = _judge(tmp_path, a, b)
    variances = [0.04, (0.0833**2 + 0.1167**2 + 0.0333**2) / 2]  # b's mean 4.3833
    assert j.verdict == "undecided" and j.seeds_needed == seeds_to_decide(0.18333, variances) == 14
    shows = claims.plain(j.shows)
    assert shows.endswith(
        '— about 14 seeds per condition would give "yes" 80% of the time, were these means and spreads the true ones'
    )
    rec = claims.record([j], [], "")["claims"][0]
    assert rec["seeds_needed"] == 14 and rec["shows"] == shows
    # leaning the other way, and so close to the threshold that 64 seeds would not do
    j = _judge(tmp_path / "2", [4.4, 4.45, 4.35], [4.3, 4.5, 4.35])
    assert j.seeds_needed == 0 and claims.record([j], [], "")["claims"][0]["seeds_needed"] == ">64"
    assert claims.plain(j.shows).endswith(
        '— more than 64 seeds per condition would give "no" 80% of the time, were these means and spreads the true ones'
    )
    # a decided claim, or one with fewer than two values a side, gets no plan
    assert _judge(tmp_path / "3", [3.0, 3.1, 3.05], [4.3, 4.4, 4.25]).seeds_needed is None
    j = _judge(tmp_path / "4", [4.0], [4.3, 4.5, 4.35])
    assert j.seeds_needed is None and "seeds per condition" not in claims.plain(j.shows)
    assert "seeds_needed" not in claims.record([j], [], "")["claims"][0]
