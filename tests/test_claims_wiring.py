"""Every shipped study's claims read the conditions, the metric and the rule they name: each
condition of a fake study gets its own values, and each claim row must show its condition's value,
compare with the condition it names, and use the rule its kind calls for."""

import json

import pytest

from preln.lab import claims, metrics, predictions, results, studies
from preln.lab.steps import finetune_folder
from preln.lab.studies import CONTROL, Step

from .conftest import ROOT

RULE = {"better_than": "ordering", "worse_than": "ordering", "as_good_as": "non-inferiority"}


def _values(i: int, seed: int) -> dict:
    """Condition number i's results: every metric apart from every other condition's."""
    final = 3.0 + 0.1 * i + 0.001 * seed
    return {
        "curve": [(50, 6.0 + 0.1 * i), (100, 4.0 + 0.1 * i), (150, final)],
        "final_nll": final,
        "best_nll": final,
        "context_gain": 7.0 - final,  # the fake runs' unigram baseline is 7.0
        "test_bleu": 10.0 + i + 0.01 * seed,
        "acc": 60.0 + i + 0.01 * seed,
    }


def _write(folder, curve, bleu=None, scores=None):
    folder.mkdir(parents=True)
    rows = [{"kind": "baseline", "update": 0, "unigram_nll": 7.0}]
    rows += [{"kind": "valid", "update": u, "epoch": 1, "valid_nll": v} for u, v in curve]
    if scores:
        rows += [
            {"kind": "valid", "update": 10, "epoch": 1, "valid_nll": 0.5, "valid_accuracy": scores["valid"]["accuracy"]}
        ]
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "status.json").write_text(json.dumps({"status": "completed", "update": curve[-1][0]}))
    if bleu is not None:
        (folder / "bleu.json").write_text(json.dumps({"splits": {"test": {"tok_lc": bleu, "sacrebleu": bleu - 0.5}}}))
    if scores:
        (folder / "scores.json").write_text(json.dumps(scores))


def _fake(study, sdir):
    names = list(dict.fromkeys(j.condition for j in study.runs))
    for job in study.jobs:
        v = _values(names.index(job.condition), job.seed)
        _write(sdir / job.folder, v["curve"], bleu=v["test_bleu"])
        for step in job.steps:
            if Step.parse(step).finetunes:
                acc = 40.0 + 0.01 * job.seed if Step.parse(step).kind == "control" else v["acc"]
                scores = {"valid": {"accuracy": acc}, "test": {"accuracy": acc, "f1": acc - 1}}
                _write(finetune_folder(sdir / job.folder, step), [(10, 1.0)], scores=scores)
    studies.write_study_json(study, sdir)
    return names


def _mean(name, metric, study, names):
    m = metrics.metric(metric)
    seeds = sorted({j.seed for j in study.runs})
    if name == CONTROL:
        seeds = seeds[:1]
        return sum(40.0 + 0.01 * s for s in seeds) / len(seeds)
    vals = [_values(names.index(name), s) for s in seeds]
    key = "acc" if m.task else metric
    return sum(v[key] for v in vals) / len(vals) - (1 if m.name.startswith("test_f1") else 0)


@pytest.mark.parametrize("name", ["fig2", "fig4", "fig5", "placements"])
@pytest.mark.parametrize("preset", ["quick", "paper"])
def test_each_claim_reads_its_own_conditions_metric_and_rule(tmp_path, name, preset):
    study = studies.load_study(ROOT / "studies" / f"{name}.toml", preset, ROOT)
    sdir = tmp_path / name
    names = _fake(study, sdir)
    res = results.study_results(sdir, studies.read_study_json(sdir))
    judged = claims.judge(res)
    assert [j.claim for j in judged] == list(study.claims) and judged
    for j in judged:
        c, m = j.claim, metrics.metric(j.claim.metric)
        if c.condition and c.condition not in names:
            assert j.measured == "not run in this preset" and j.verdict == ""
            continue
        measured = claims.plain(j.measured)
        if m.name == "speed_ratio":
            assert j.decision.rule.startswith("speed")
            assert measured.index(f"{c.condition}:") < measured.index(f"{c.other}:"), measured
            continue
        assert measured.startswith(m.fmt(_mean(c.condition, c.metric, study, names))), (c, measured)
        if c.above is not None:
            assert j.decision.rule == "bound" and f"against {c.above:g}" in claims.plain(j.shows)
            continue
        kind = next((k for k in RULE if getattr(c, k)), None)
        if kind is None:
            assert j.decision is None
            continue
        assert j.decision.rule.startswith(RULE[kind]), (c, j.decision)
        a, b = (m.fmt(_mean(x, c.metric, study, names)) for x in (c.condition, c.other))
        assert f"({a} vs {b} for {c.other}" in claims.plain(j.shows), (c, claims.plain(j.shows))


def test_the_analysis_predictions_read_their_own_stack_and_placement():
    """fig3's predictions: each row reads the stack and placement it names."""

    def col(ratio):
        return {"W2": {"values": [[1.0, ratio * (1 + e)] for e in (-0.01, 0.0, 0.01)]}}

    fig3 = {"post": {"encoder": col(2.0), "decoder": col(3.0)}, "pre": {"encoder": col(0.9), "decoder": col(1.1)}}
    rows = {p["claim"]: p["measured"] for p in predictions.predictions({"fig3": fig3})}
    expect = {("Post", "encoder"): "2.00", ("Post", "decoder"): "3.00", ("Pre", "encoder"): "0.90"}
    expect[("Pre", "decoder")] = "1.10"
    for (norm, stack), value in expect.items():
        (measured,) = [m for claim, m in rows.items() if claim.startswith(norm + "-LN") and f"({stack}," in claim]
        assert measured.startswith(f"top/bottom = {value} ["), (norm, stack, measured)
