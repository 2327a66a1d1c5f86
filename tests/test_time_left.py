"""The time a ``reproduce`` has left, from what its ended commands took per kind of step: the
main job's bar counted updates, and at 46 of 80 minutes it said 7 minutes were left (the `lr`
runs, last, cost more per update than Fig. 5's fine-tunings)."""

import json

from pytest import approx

from preln.lab import execute, steps
from preln.lab.timing import TimeLeft


def test_each_kind_of_step_is_timed_at_its_own_rate_and_unseen_kinds_at_the_mean():
    left = TimeLeft()
    assert left.left([("lr", "train", 100, 0.0)]) is None  # nothing ended yet: no estimate
    left.ended("fig5", "train", 1200, 84.0)  # 0.07 s a unit
    left.ended("fig5", "finetune:paraphrase", 1200, 48.0)  # 0.04 s a unit: finetune@2 is the same kind
    left.ended("fig5", "train", 600, 0.0, completed=False)  # diverged or interrupted: not a rate
    assert left.left([("fig5", "finetune@2:containment", 1200, 0.0)]) == approx(48.0)
    # a kind no command has ended yet: the mean over all ended ones, (84 + 48) / 2400 a unit,
    # and its study is named as not yet timed
    assert left.left([("lr", "train", 400, 0.0)]) == approx(400 * 132 / 2400)
    work = [("fig5", "control:paraphrase", 1200, 0.0), ("lr", "train", 400, 0.0), ("fig5", "train", 1, 0.0)]
    assert left.untimed(work) == ["fig5", "lr"]
    # a running step's seconds so far are taken off its estimate, never below 0
    assert left.left([("fig5", "train", 1200, 60.0), ("fig5", "train", 1200, 500.0)]) == approx(24.0)
    left.ended("lr", "train", 400, 52.0)  # once seen, its own rate
    assert left.left([("lr", "train", 400, 0.0)]) == approx(52.0)


def test_the_work_left_lists_every_step_not_yet_ended_at_its_weight(tmp_path):
    names = ["train", "finetune:paraphrase", "control:paraphrase"]
    job = steps.Job("fig5", "fig5/pre-s1", tmp_path / "pre-s1", 3600, [(n, ["x"]) for n in names])
    fig3 = steps.Job("fig3", "fig3", tmp_path / "fig3", 200, [("analyze", ["analyze"])])
    # fig3 waits; pre-s1 runs its fine-tuning (30 s in), its control still to come
    work = execute.work_left([fig3], [(job, "finetune:paraphrase", 30.0, [("control:paraphrase", ["x"])])])
    assert work == [
        ("fig3", "analyze", 200, 0.0),
        ("fig5", "finetune:paraphrase", 1200, 30.0),
        ("fig5", "control:paraphrase", 1200, 0.0),
    ]


def test_the_bar_says_how_long_is_left_once_a_command_has_ended(tmp_path, monkeypatch):
    """Through the scheduler: fake commands that end at once, each writing its result."""

    class Done:
        def __init__(self, argv, log, env, threads):
            (log.parent / "metrics.jsonl").write_text(json.dumps({"kind": "train", "update": 10}) + "\n")
            (log.parent / "status.json").write_text(json.dumps({"status": "completed", "update": 10}))

        def poll(self):
            return 0

    shown = []
    real_show = execute._show
    monkeypatch.setattr(execute, "start", Done)
    monkeypatch.setattr(execute, "_show", lambda pool: shown.append(pool.left_text()) or real_show(pool))
    jobs = [steps.Job("s", f"s/r{i}", tmp_path / f"r{i}", 10, [("train", ["train"])]) for i in range(3)]
    assert execute.execute(jobs, 1, poll_s=0) == {f"s/r{i}": "completed" for i in range(3)}
    # after the first command ended, the two waiting ones are timed at its rate
    assert any(t.startswith("about ") and t.endswith(" min left") for t in shown) and shown[-1] == ""
    # a second study none of whose commands has ended yet is named
    shown.clear()
    jobs = [steps.Job(s, f"{s}/x", tmp_path / s, 10, [("train", ["train"])]) for s in ("a", "b")]
    execute.execute(jobs, 1, poll_s=0)
    assert shown[0].endswith(" min left, b not yet timed"), shown


def test_one_job_of_each_study_runs_first_so_every_kind_of_step_is_timed_early(tmp_path):
    """The main job's `lr` runs came last, so its time left was a guess for 55 of 80 minutes."""
    names = [("a", "a/1"), ("a", "a/2"), ("a", "a/3"), ("b", "b/1"), ("b", "b/2"), ("c", "c")]
    jobs = [steps.Job(s, n, tmp_path / n, 10, [("train", ["train"])]) for s, n in names]
    assert [j.name for j in execute.pilots_first(jobs)] == ["a/1", "b/1", "c", "a/2", "a/3", "b/2"]


def test_a_resumed_grid_does_not_count_the_steps_it_found_done(tmp_path):
    """A pretraining that completed before an interrupt: its fine-tunings are left, not its
    training (the estimate counted it again)."""
    names = ("train", "finetune:paraphrase", "finetune:entail")
    folder = tmp_path / "pre-s1"
    assert steps.still_to_run(names, folder) == list(names)  # nothing run yet: all of it
    folder.mkdir()
    (folder / "status.json").write_text(json.dumps({"status": "completed", "update": 10}))
    assert steps.still_to_run(names, folder) == ["finetune:paraphrase", "finetune:entail"]
    ft = steps.finetune_folder(folder, "finetune:paraphrase")
    ft.mkdir()
    (ft / "status.json").write_text(json.dumps({"status": "completed", "update": 5}))
    assert steps.still_to_run(names, folder) == ["finetune:entail"]
    (folder / "status.json").write_text(json.dumps({"status": "diverged", "update": 3}))
    assert steps.still_to_run(names, folder) == []  # a diverged model is not fine-tuned

    job = steps.Job("fig5", "fig5/pre-s1", folder, 3600, [(n, ["x"]) for n in names], done=frozenset(names[:2]))
    assert execute.work_left([job], []) == [("fig5", "finetune:entail", 1200, 0.0)]
    # running its first fine-tuning, the second found done: only the running one is left
    job = steps.Job(
        "fig5", "fig5/pre-s1", folder, 3600, [(n, ["x"]) for n in names], done=frozenset([names[0], names[2]])
    )
    running = [(job, "finetune:paraphrase", 5.0, [("finetune:entail", ["x"])])]
    assert execute.work_left([], running) == [("fig5", "finetune:paraphrase", 1200, 5.0)]


def test_a_resumed_grid_starts_its_bar_at_the_steps_it_found_done(tmp_path, monkeypatch):
    """Two pretrainings completed before an interrupt, their fine-tunings left: the bar starts at
    both trainings' share, rather than jumping as each job starts."""

    class Done:  # running at the first poll, ended at the second
        def __init__(self, argv, log, env, threads):
            self.polls = 0

        def poll(self):
            self.polls += 1
            return 0 if self.polls > 1 else None

    bars = []
    real_show = execute._show
    monkeypatch.setattr(execute, "start", Done)
    monkeypatch.setattr(execute, "_show", lambda pool: real_show(pool) or bars.append(pool.bar.n))
    jobs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "status.json").write_text(json.dumps({"status": "completed", "update": 10}))
        todo = [(n, ["x"]) for n in ("train", "finetune:paraphrase")]
        jobs.append(steps.Job("fig5", f"fig5/{name}", tmp_path / name, 20, todo, done=frozenset(["train"])))
    assert execute.progress(jobs[0], 0, "finetune:paraphrase") == 0  # its training is in the bar's start
    execute.execute(jobs, 1, poll_s=0)
    assert bars[0] == 20 and bars[-1] == 40, bars  # a's and b's training (a fine-tuning runs), then all
