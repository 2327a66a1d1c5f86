"""A fine-tuning whose model predicts one class for every example never trained (the instability
BERT's paper met with restarts): the report leaves it out of its model's mean and counts it,
as it does a diverged pretraining, instead of averaging a chance-level score in silently."""

import pytest

from preln.lab import claims, metrics
from preln.lab.results import FinetuneRun, Run, StudyResults
from preln.lab.studies import Claim, Study


def _ft(cond: str, seed: int, acc: float, replicate: int, top: float | None = 60.0) -> FinetuneRun:
    scores = {"accuracy": acc} | ({"top_class": top} if top is not None else {})
    return FinetuneRun(cond, seed, "paraphrase", "completed", ((1, acc),), dict(scores), dict(scores), replicate)


def _results(post: list[FinetuneRun], pre: list[FinetuneRun] | None = None) -> StudyResults:
    pre = pre or [_ft("pre", s, 70.0 + 0.3 * s + 0.1 * r, r) for s in (1, 2, 3) for r in (1, 2)]
    conditions = {c: [Run(None, c, s, "", "completed", 10, ((10, 5.0),)) for s in (1, 2, 3)] for c in ("pre", "post")}
    claim = Claim("pre as good", condition="pre", as_good_as="post", metric="test_accuracy:paraphrase")
    return StudyResults(
        "s", Study("s", "t", (), claims=(claim,)), conditions, {"paraphrase": {"pre": pre, "post": post}}
    )


def test_a_fine_tuning_that_predicts_one_class_is_left_out_and_counted():
    post = [_ft("post", s, 70.0 + 0.3 * s + 0.2 * r, r) for s in (1, 2, 3) for r in (1, 2)]
    post[3] = _ft("post", 2, 50.0, 2, top=100.0)  # seed 2's second fine-tuning stayed at chance
    m = metrics.metric("test_accuracy:paraphrase")
    s = _results(post).sample(m, "post")
    assert s.values == pytest.approx((70.6, 70.8, 71.2))  # seed 2: its first fine-tuning alone (70.8)
    assert s.one_class == (1, 6) and s.note() == "1 of 6 fine-tunings predict one class: left out"
    (j,) = claims.judge(_results(post))
    assert "post: 1 of 6 fine-tunings predict one class: left out" in claims.plain(j.shows)
    # the claim's value names its replicates: the models, and the fine-tunings their means are of
    assert claims.plain(j.measured) == "70.8 ± 0.3 % (3 models × 2 fine-tunings)"
    # every fine-tuning of a model failed: the model has no value, counted as without a result
    post[2] = _ft("post", 2, 50.0, 1, top=100.0)
    s = _results(post).sample(m, "post")
    assert len(s.values) == 2 and s.one_class == (2, 6) and s.not_run == 1
    pre = [_ft("pre", s, 70.0, r) for s in (1, 2, 3) for r in (1, 2)]
    pre[3] = _ft("pre", 2, 50.0, 2, top=100.0)
    (judged,) = claims.judge(_results(post, pre))
    assert claims.plain(judged.measured).startswith("70.0 ± 0.0 % (3 models, 5 fine-tunings; 1 of 6")
    # unequal counts whose total a per-model count would also give (3 + 1 + 2 = 3 x 2): named as a total
    pre = [_ft("pre", s, 70.0, r) for s, reps in ((1, 3), (2, 1), (3, 2)) for r in range(1, reps + 1)]
    (judged,) = claims.judge(_results(post, pre))
    assert claims.plain(judged.measured) == "70.0 ± 0.0 % (3 models, 6 fine-tunings)"


def test_scores_written_before_top_class_was_recorded_count_as_trained():
    post = [_ft("post", s, 70.0, r, top=None) for s in (1, 2, 3) for r in (1, 2)]
    s = _results(post).sample(metrics.metric("test_accuracy:paraphrase"), "post")
    assert s.values == (70.0, 70.0, 70.0) and s.one_class == (0, 6) and s.note() == ""


def test_the_fine_tuning_plot_draws_a_one_class_run_apart_and_leaves_it_out_of_the_mean(tmp_path, monkeypatch):
    from preln.lab import finetune_report

    post = [_ft("post", s, 70.0, r) for s in (1, 2, 3) for r in (1, 2)]
    post[3] = _ft("post", 2, 50.0, 2, top=100.0)
    figures = []
    monkeypatch.setattr(finetune_report.plt, "close", figures.append)
    finetune_report.plot_finetune(_results(post), tmp_path / "ft.png")
    (ax,) = figures[0].axes
    bold = {line.get_label(): line for line in ax.get_lines() if line.get_linewidth() == 2}
    assert list(bold["post (6; 1 one-class, left out)"].get_ydata()) == [70.0]  # the 50% run is not in it
    dotted = [line for line in ax.get_lines() if line.get_linestyle() == ":" and line.get_marker() == "x"]
    assert [list(line.get_ydata()) for line in dotted] == [[50.0]]
    assert (tmp_path / "ft.png").is_file()
