import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from preln.cli import main
from preln.config import ConfigError
from preln.lab import (
    claims,
    convergence,
    document,
    evaluation,
    execute,
    metrics,
    report,
    results,
    stats,
    steps,
    studies,
    timing,
)

from .conftest import ROOT, require_data

STUDY = """
title = "tiny study"
[preset.quick]
config = "configs/tiny-translation.toml"
seeds = [1]
set = ["train.max_updates=6", "train.valid_every=2", "train.valid_bleu=false"]
evaluate = ["--max-len-a", "1.2", "--max-len-b", "10"]  # tiny untrained models: bounded decoding
[[condition]]
name = "pre"
[[condition]]
name = "post-warmup"
quick = ["model.norm='post'", "schedule.warmup=3"]
[[grid]]
"model.norm" = ["post"]
"optim.lr" = [1e6]
[[claim]]
text = "faster"
paper = "0.60"
condition = "pre"
better_than = "post-warmup"
metric = "speed_ratio"
[[claim]]
text = "pre BLEU"
condition = "pre"
metric = "test_bleu"
"""

ANALYSIS = """
title = "tiny analysis"
steps = ["analyze"]
[preset.quick]
analysis = "cpu"
set = ["seeds=1", "batches=1", "warmup_updates=2", "depths=[2,3,4]", "depth_seeds=2", "widths=[16,24,32]",
       "width_seeds=1", "lemma_d=16", "lemma_seeds=1", "lemma_layers=2", "max_tokens=300",
       "depth_max_tokens=300", "width_max_tokens=200", "d_model=32", "d_ffn=64"]
"""


def test_study_expansion_and_errors(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(STUDY)
    study = studies.load_study(p, "quick", ROOT)
    assert [r.folder for r in study.runs] == ["pre-s1", "post-warmup-s1", "norm=post,lr=1000000.0-s1"]
    assert "schedule.warmup=3" in study.runs[1].overrides and "train.seed=1" in study.runs[1].overrides
    with pytest.raises(ConfigError, match="no \\[preset.paper\\]"):
        studies.load_study(p, "paper", ROOT)
    p.write_text(STUDY.replace('name = "pre"\n', 'name = "pre"\nset = ["model.norm=\'mid\'"]\n'))
    with pytest.raises(ConfigError, match="condition 'pre'.*model.norm"):
        studies.load_study(p, "quick", ROOT)
    p.write_text(STUDY.replace('condition = "pre"', 'condition = "nope"'))
    with pytest.raises(ConfigError, match="'nope' is not a condition"):
        studies.load_study(p, "quick", ROOT)


def test_grid_prefix_labels_and_per_preset_values(tmp_path):
    p = tmp_path / "g.toml"
    p.write_text(
        """
[preset.quick]
config = "configs/tiny-translation.toml"
seeds = [1, 2]
[preset.paper]
config = "configs/tiny-translation.toml"
[[grid]]
name = "sgd"
set = ["optim.name='sgd'"]
"optim.lr" = [5e-3, 1e-3]
"schedule.warmup" = { quick = [0, 4], paper = [0, 500], labels = ["none", "long"] }
"""
    )
    quick = studies.load_study(p, "quick", ROOT)
    names = sorted({r.condition for r in quick.runs})
    assert names == [
        "sgd,lr=0.001,warmup=long",
        "sgd,lr=0.001,warmup=none",
        "sgd,lr=0.005,warmup=long",
        "sgd,lr=0.005,warmup=none",
    ]
    assert len(quick.runs) == 8 and {r.group for r in quick.runs} == {"sgd"}
    run = next(r for r in quick.runs if r.condition == "sgd,lr=0.005,warmup=long")
    assert "optim.name='sgd'" in run.overrides and "schedule.warmup=4" in run.overrides
    paper = studies.load_study(p, "paper", ROOT)
    assert "schedule.warmup=500" in next(r for r in paper.runs if r.condition.endswith("long")).overrides
    p.write_text(p.read_text().replace('labels = ["none", "long"]', 'labels = ["none"]'))
    with pytest.raises(ConfigError, match="1 labels for 2 values"):
        studies.load_study(p, "quick", ROOT)


def test_a_joined_factor_sets_every_key_it_names(tmp_path):
    p = tmp_path / "d.toml"
    p.write_text(
        """
steps = ["train"]
[preset.quick]
config = "configs/tiny-translation.toml"
[[grid]]
name = "depth"
"model.norm" = ["post", "rezero"]
"model.encoder_layers+model.decoder_layers" = [2, 5]
"""
    )
    study = studies.load_study(p, "quick", ROOT)
    run = next(r for r in study.runs if r.condition == "depth,norm=rezero,encoder_layers=5")
    assert {"model.encoder_layers=5", "model.decoder_layers=5", 'model.norm="rezero"'} <= set(run.overrides)
    assert len(study.runs) == 4 and all(r.steps == ("train",) for r in study.runs)


def test_shipped_studies_load():
    placements = studies.load_study(ROOT / "studies" / "placements.toml", "quick", ROOT)
    assert len(placements.runs) == (7 * 2 + 7 * 3) * 3  # (placement x warm-up + placement x depth) x 3 seeds
    for name in ("fig2", "fig3", "fig4", "placements", "lr"):
        for preset in ("quick", "paper", "smoke"):
            studies.load_study(ROOT / "studies" / f"{name}.toml", preset, ROOT)
    fig2 = studies.load_study(ROOT / "studies" / "fig2.toml", "paper", ROOT)
    assert len({r.condition for r in fig2.runs}) == 12  # {Adam, SGD} x 2 lr x 3 warm-ups
    fig2 = studies.load_study(ROOT / "studies" / "fig2.toml", "quick", ROOT)
    assert len({r.condition for r in fig2.runs}) == 9  # quick: SGD at one lr only
    fig4 = {p: studies.load_study(ROOT / "studies" / "fig4.toml", p, ROOT) for p in ("quick", "paper")}
    assert len(fig4["quick"].runs) == 9 and len(fig4["paper"].runs) == 12  # RAdam: paper (and smoke) only
    assert "post-radam-nowarmup" not in {r.condition for r in fig4["quick"].runs}


def _fake_run(folder, curve, status="completed", bleu=None):
    folder.mkdir(parents=True)
    rows = [{"kind": "valid", "update": u, "epoch": 1, "valid_nll": v} for u, v in curve]
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "status.json").write_text(json.dumps({"status": status, "update": curve[-1][0] + 1}))
    if bleu is not None:
        (folder / "bleu.json").write_text(json.dumps({"splits": {"test": {"sacrebleu": bleu, "tok_lc": bleu + 1}}}))


def _fake_study(sdir, curves, compare=("pre", "post")):
    """A study.json as preln 0.2 wrote it (jobs as ``runs``, the speed claim's conditions in
    ``compare``): the report still reads it."""
    runs = []
    for cond, seeds in curves.items():
        for seed, (curve, status) in enumerate(seeds, 1):
            _fake_run(sdir / f"{cond}-s{seed}", curve, status, bleu=10.0 + seed)
            runs.append({"condition": cond, "group": "", "seed": seed, "folder": f"{cond}-s{seed}"})
    meta = {"title": "fake", "kind": "train", "baseline": "post", "compare": list(compare), "runs": runs}
    meta["claims"] = [{"text": "speed", "paper": "0.60", "metric": "speed_ratio"}]
    (sdir / "study.json").write_text(json.dumps(meta))


def test_speed_target_is_a_loss_every_completed_run_reaches(tmp_path):
    post = [
        [(50, 6.0), (100, 5.0), (150, 4.0)],
        [(50, 6.0), (100, 5.2), (150, 4.4)],
        [(50, 6.1), (100, 5.1), (150, 4.2)],
    ]
    pre = [
        [(50, 5.0), (100, 4.1), (150, 3.5)],
        [(50, 5.0), (100, 4.3), (150, 3.6)],
        [(50, 5.2), (100, 4.2), (150, 3.4)],
    ]
    _fake_study(tmp_path / "s", {"post": [(c, "completed") for c in post], "pre": [(c, "completed") for c in pre]})
    res = results.study_results(tmp_path / "s", studies.read_study_json(tmp_path / "s"))
    sp = convergence.speed(res.conditions, "pre", "post")
    assert sp.target == pytest.approx(4.4)  # the worst run's best: every completed run of both reaches it
    # interpolated between validations, not the validation grid: 4.4 lies 0.6 of the way from 5.0 to 4.0
    assert [c.update for c in sp.crossings["post"]] == pytest.approx([130, 150, 100 + 50 * 0.7 / 0.9])
    assert [c.update for c in sp.crossings["pre"]] == pytest.approx([50 + 50 * 0.6 / 0.9, 50 + 50 * 0.6 / 0.7, 90])
    assert {c.kind for cs in sp.crossings.values() for c in cs} == {"exact"}
    iv = sp.decision.interval
    assert iv.lo < iv.estimate < iv.hi < 1 and sp.decision.verdict == "yes"
    text = report.write_report(tmp_path)[0].read_text()
    assert "**Convergence speed**" in text and f"**{iv.estimate:.2f}**" in text
    assert "| speed | 0.60 |" in text and "| yes (the interval of the ratio lies below 1) |" in text


def test_each_claim_decided_no_is_explained_under_the_summary(tmp_path):
    post = [[(50, 6.0), (100, 4.0)], [(50, 6.0), (100, 4.4)], [(50, 6.1), (100, 4.2)]]
    pre = [[(50, 5.0), (100, 3.5)], [(50, 5.0), (100, 3.6)], [(50, 5.2), (100, 3.4)]]
    sdir = tmp_path / "s"
    _fake_study(sdir, {"post": [(c, "completed") for c in post], "pre": [(c, "completed") for c in pre]})
    meta = json.loads((sdir / "study.json").read_text())
    explained = {"text": "post ends lower", "condition": "post", "metric": "final_nll", "better_than": "pre"}
    meta["claims"] = [
        explained | {"if_no": "Here every run stops at update 100."},
        explained | {"text": "post ends lower again"},
        {"text": "pre ends lower", "condition": "pre", "metric": "final_nll", "better_than": "post"},
    ]
    (sdir / "study.json").write_text(json.dumps(meta))
    text = report.write_report(tmp_path)[0].read_text()
    assert "**no** (4.20 vs 3.50" in text
    assert "**Not shown** (`s`): post ends lower. Here every run stops at update 100." in text
    assert "**Not shown** (`s`): post ends lower again. The study file gives no reason (`if_no`)." in text
    assert "Not shown** (`s`): pre ends lower" not in text  # a yes needs no reason


def test_a_crossing_is_a_bound_where_the_curve_does_not_bracket_the_target():
    assert convergence.crossing(((50, 4.0), (100, 3.0)), 4.5) == convergence.Crossing(50.0, "at_most")
    assert convergence.crossing(((50, 6.0), (100, 5.0)), 4.5) == convergence.Crossing(100.0, "at_least")
    assert convergence.crossing(((50, 6.0), (100, 4.0)), 5.5) == convergence.Crossing(62.5, "exact")
    # bounds only where they make the verdict more cautious: a faster condition whose runs were
    # below the target at once stays "yes"; one with a run that never got there is not decided
    fast = [convergence.Crossing(u, "at_most") for u in (50, 50, 55)]
    slow = [convergence.Crossing(u, "exact") for u in (300, 320, 310)]
    assert convergence.decide(fast, slow).verdict == "yes"
    never = [convergence.Crossing(u, "at_least") for u in (40, 45, 42)]
    d = convergence.decide(never, slow)
    assert d.verdict == "undecided" and "never reached the target" in d.reason
    assert convergence.decide(slow, never).verdict == "undecided"  # above 1, but the second's are only bounds
    assert convergence.decide(slow, fast).verdict == "no"


def test_a_diverged_run_is_counted_the_same_way_for_every_metric(tmp_path):
    ok = [(50, 5.0), (100, 4.0)]
    _fake_study(tmp_path / "s", {"a": [(ok, "completed"), (ok, "completed"), ([(50, 5.0), (60, 3.0)], "diverged")]})
    res = results.study_results(tmp_path / "s", studies.read_study_json(tmp_path / "s"))
    for name in ("final_nll", "best_nll", "test_bleu"):
        s = res.sample(metrics.metric(name), "a")
        assert len(s.values) == 2 and s.diverged == 1 and s.note() == "1 of 3 diverged", name
    # the diverged run's best-so-far 3.0 is not its result: it counts as diverged, not as the best
    assert min(res.sample(metrics.metric("best_nll"), "a").values) == 4.0


def test_reproduce_runs_skips_and_reports(tmp_path):
    require_data("multi30k")
    p = tmp_path / "tiny.toml"
    p.write_text(STUDY)
    a = tmp_path / "tinyan.toml"
    a.write_text(ANALYSIS)
    out = tmp_path / "runs"
    args = ["reproduce", "--studies", f"{p},{a}", "--out", str(out), "--root", str(ROOT), "--beam", "1", "--jobs", "2"]
    assert main(args) == 0
    sdir = out / "tiny"
    status = {d.name: json.loads((d / "status.json").read_text())["status"] for d in sdir.iterdir() if d.is_dir()}
    assert status == {"pre-s1": "completed", "post-warmup-s1": "completed", "norm=post,lr=1000000.0-s1": "diverged"}
    assert (sdir / "pre-s1" / "bleu.json").is_file() and (out / "tinyan" / "analysis.json").is_file()
    mtimes = {f: f.stat().st_mtime for f in [sdir / "pre-s1" / "metrics.jsonl", out / "tinyan" / "analysis.json"]}
    assert main(args) == 0  # rerun: nothing is trained or analysed again
    assert all(f.stat().st_mtime == m for f, m in mtimes.items())
    md = (out / "report.md").read_text()
    assert "tiny study" in md and "| pre | 1 |" in md and "s1@" in md  # the diverged run is listed
    assert "Convergence speed" in md and "| faster | 0.60 |" in md and "| pre BLEU |" in md
    assert "## tiny analysis" in md and "](tinyan/fig3_layers.png)" in md
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3 and "<table>" in page and "missing" not in page
    # where the time went: every command the first invocation ran, once (the rerun ran none)
    steps = {
        p.parent.name: [json.loads(ln)["step"] for ln in p.read_text().splitlines()] for p in out.rglob("steps.jsonl")
    }
    assert steps == {
        "pre-s1": ["train", "evaluate"],
        "post-warmup-s1": ["train", "evaluate"],
        "tinyan": ["analyze"],
    } | {
        "norm=post,lr=1000000.0-s1": ["train"]  # diverged: not evaluated
    }
    assert "## Where the time went" in md and "| tiny | train | 3 |" in md and "| tinyan | analyze | 1 |" in md
    assert "6 commands" in md and "with 2 at a time: the slots were busy" in md
    if execute.host_cpu_times() is not None:  # Linux: the host's steal share while it ran
        (inv,) = json.loads((out / "reproduce.json").read_text())["invocations"]
        assert 0 <= inv["host_steal"] <= 1 and "of the CPU time (steal)" in md
    assert main(["reproduce", "--studies", str(p), "--out", str(out), "--root", str(ROOT), "--jobs", "99"]) == 2


def _held(lock) -> bool:
    """Whether a process holds the run folder's lock (the trainer does while it runs; the OS drops
    it when the process ends, however it ends)."""
    import fcntl

    with open(lock) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


@pytest.mark.parametrize("how", ["sigint", "sigterm", "sigkill"])
def test_interrupted_grid_resumes_without_redoing_finished_runs(tmp_path, how):
    """Ctrl-C (SIGINT to the process group), SIGTERM to `preln reproduce` alone (passed on to its
    commands) or kill -9 of it mid-grid; the rerun finishes the grid, and the run finished before
    the interrupt is not trained again."""
    require_data("multi30k")
    p = tmp_path / "tiny.toml"
    study = STUDY[: STUDY.index("[[grid]]")]  # a run of 30 updates, then one of 300 (a few seconds) to interrupt
    study = study.replace("train.max_updates=6", "train.max_updates=300").replace("valid_every=2", "valid_every=50")
    p.write_text(
        study.replace('name = "pre"\n', 'name = "pre"\nset = ["train.max_updates=30", "train.valid_every=10"]\n')
    )
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "preln", "reproduce", "--studies", str(p), "--out", str(out), "--root", str(ROOT)]
    cmd += ["--beam", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    second = out / "tiny" / "post-warmup-s1" / "metrics.jsonl"
    deadline = time.time() + 600  # a hang detector: the first run and its evaluation come first
    while not (second.is_file() and "train" in second.read_text()) and time.time() < deadline:
        time.sleep(0.2)
    assert second.is_file(), proc.communicate()[0][-2000:]
    lock = second.parent / ".lock"
    assert _held(lock)  # the trainer runs
    if how == "sigint":
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert proc.wait(60) == 130
    elif how == "sigterm":
        proc.terminate()  # to the scheduler only: it passes the stop on
        assert proc.wait(60) == 130
    else:
        proc.kill()
        proc.wait(10)
    deadline = time.time() + 60  # an orphaned trainer sees the scheduler end and stops itself
    while _held(lock) and time.time() < deadline:
        time.sleep(0.2)
    assert not _held(lock)
    proc.stdout.close()
    first = out / "tiny" / "pre-s1"
    assert json.loads((first / "status.json").read_text())["status"] == "completed"
    mtime = (first / "metrics.jsonl").stat().st_mtime
    assert json.loads((second.parent / "status.json").read_text())["status"] != "completed"
    if how == "sigterm":  # the resume below is the same after any stop: sigint and sigkill run it
        return
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (first / "metrics.jsonl").stat().st_mtime == mtime
    rows = [json.loads(ln) for ln in second.read_text().splitlines()]
    updates = [r["update"] for r in rows if r["kind"] == "train"]
    assert updates[-1] == 300 and json.loads((second.parent / "status.json").read_text())["status"] == "completed"
    assert "| post-warmup | 1 |" in (out / "report.md").read_text()


def test_a_failing_run_stops_the_grid_with_its_log(tmp_path, capsys):
    p = tmp_path / "bad.toml"
    p.write_text(STUDY.replace('name = "pre"\n', 'name = "pre"\nset = ["data.path=\'/nonexistent/corpus\'"]\n'))
    out = tmp_path / "runs"
    assert main(["reproduce", "--studies", str(p), "--out", str(out), "--root", str(ROOT)]) == 1
    err = capsys.readouterr().err
    assert "bad/pre-s1: `preln train` failed (exit 2)" in err and "/nonexistent/corpus" in err
    assert not (out / "bad" / "post-warmup-s1").exists()  # nothing after the failure was started


def test_gpus_are_handed_out_one_per_process(tmp_path, monkeypatch):
    seen = []

    class FakeProc:
        def __init__(self, argv, log, env, threads):
            seen.append((argv[-1], env.get("CUDA_VISIBLE_DEVICES"), env["OMP_NUM_THREADS"], threads))

        def poll(self):
            return 0

    monkeypatch.setattr(execute, "start", FakeProc)
    monkeypatch.setattr(execute.os, "cpu_count", lambda: 8)
    jobs = [steps.Job(f"a{i}", f"a{i}", tmp_path / f"a{i}", 1, [("analyze", ["analyze", f"j{i}"])]) for i in range(5)]
    res = execute.execute(jobs, 2, gpus=["3", "5"], poll_s=0)
    assert res == {f"a{i}": "done" for i in range(5)}
    assert [s[0] for s in seen] == [f"j{i}" for i in range(5)]
    assert {s[1] for s in seen} == {"3", "5"} and all(s[2] == "4" and s[3] == 4 for s in seen)
    with pytest.raises(ConfigError, match="needs as many GPUs"):
        execute.execute(jobs, 2, gpus=["0"])
    with pytest.raises(ConfigError, match="use 1..8"):
        execute.execute(jobs, 9)


def test_claims_compare_the_papers_bleu_in_its_convention_and_say_where_the_corpus_differs(tmp_path):
    post = [([(50, 6.0), (100, 5.0)], "completed")]
    sdir = tmp_path / "runs" / "s"
    _fake_study(sdir, {"post": post, "pre": [([(50, 5.0), (100, 4.0)], "completed")]})
    cfg = (ROOT / "configs" / "cpu-multi30k-pre.toml").read_text()
    for f in ("post-s1", "pre-s1"):
        (sdir / f / "config.toml").write_text(cfg)
    meta = json.loads((sdir / "study.json").read_text())
    meta["paper_setting"], meta["paper_corpus"] = "IWSLT14 De-En test", "iwslt14"
    meta["claims"] = [
        {"text": "post BLEU", "paper": "~34 BLEU", "condition": "post", "metric": "test_bleu", "better_than": "pre"},
        {"text": "pre NLL", "paper": "lower", "condition": "pre", "metric": "final_nll", "better_than": "post"},
        {"text": "gone", "paper": "x", "condition": "radam", "metric": "final_nll"},
    ]
    (sdir / "study.json").write_text(json.dumps(meta))
    inv = {"preln": "0.1.0", "commit": "abc1234", "preset": "quick", "studies": ["s"], "jobs": 2}
    inv |= {"machine": "2 cores (test)", "started": "2026-11-28 17:00:00 UTC", "seconds": 1800}
    (tmp_path / "runs" / "reproduce.json").write_text(json.dumps({"invocations": [inv, inv | {"seconds": 600}]}))
    text = report.write_report(tmp_path / "runs")[0].read_text()
    # the fake run's tok_lc is sacrebleu + 1 = 12.0: the claim shows tok-lc, never sacreBLEU; one run
    # a side is below the rule's minimum: undecided, and it says why
    row = "| post BLEU | ~34 BLEU | 12.00 tok-lc BLEU (1 run) | undecided (12.00 vs 12.00 for `pre`; too few seeds: "
    row += "n = 1, this rule needs 3) |"
    assert row in text
    assert "| pre NLL | lower | 4.00 nats (1 run) | undecided (4.00 vs 5.00 for `post`; too few seeds" in text
    where = "The paper: IWSLT14 De-En test. Measured here: multi30k, d 128, 6+6 layers"
    assert where in text and "another corpus and scale than the paper's" in text
    assert "| gone | x | not run in this preset |" in text
    assert "commit abc1234, preset `quick`" in text and "wall time 40 min over 2 invocations" in text
    # a folder filled in parts (another commit, another study) names every commit and study
    later = inv | {"commit": "def5678", "studies": ["t"]}
    (tmp_path / "runs" / "reproduce.json").write_text(json.dumps({"invocations": [inv, later]}))
    text = report.write_report(tmp_path / "runs")[0].read_text()
    assert "commits abc1234, def5678, preset `quick`, studies s, t;" in text
    # a study extended with another preset (`reproduce --preset long --studies t` into the same
    # folder): each study folder says which preset it holds, and the header names both
    shutil.copytree(sdir, tmp_path / "runs" / "t")
    for name, preset in (("s", "quick"), ("t", "long")):
        path = tmp_path / "runs" / name / "study.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | {"preset": preset}))
    (tmp_path / "runs" / "reproduce.json").write_text(json.dumps({"invocations": [inv, later | {"preset": "long"}]}))
    text = report.write_report(tmp_path / "runs")[0].read_text()
    assert "commits abc1234, def5678, presets `quick` (s), `long` (t);" in text


def test_a_partial_or_differently_decoded_evaluation_does_not_pass_for_the_studys(tmp_path):
    run = tmp_path / "r"
    _fake_run(run, [(50, 5.0)])
    study_eval = evaluation.Evaluation.from_flags(["--max-len-a", "1.2", "--max-len-b", "10"], "fig4.toml")
    expect = study_eval.with_beam(5).expected()
    assert expect == {"beam": 5, "lenpen": 1.0, "max_len_a": 1.2, "max_len_b": 10, "limit": 0}
    assert steps.needed("evaluate", run, expect)  # the fake bleu.json records no settings
    done = {**expect, "splits": {"test": {"tok_lc": 1.0}}}
    (run / "bleu.json").write_text(json.dumps(done))
    assert not steps.needed("evaluate", run, expect)
    for changed in ({"limit": 3}, {"beam": 1}, {"splits": {"valid": {}}}):
        (run / "bleu.json").write_text(json.dumps({**done, **changed}))
        assert steps.needed("evaluate", run, expect), changed


@pytest.mark.parametrize(
    "flags", [["--beam", "3"], ["--max-len-b"], ["--max-len-b", "ten"], ["--max-len-b", "0"], ["--lenpen", "nan"]]
)
def test_a_study_files_bad_evaluate_flags_are_config_errors(flags):
    with pytest.raises(ConfigError, match="fig4.toml.*evaluate"):
        evaluation.Evaluation.from_flags(flags, "fig4.toml: [preset.quick]")


def test_a_study_evaluation_round_trips_through_study_json():
    e = evaluation.Evaluation.from_flags(["--max-len-a", "1.2", "--max-len-b", "10", "--limit", "100"], "x")
    assert evaluation.evaluation_of({"evaluate": e.to_dict()}) == e
    assert evaluation.evaluation_of({"decode": ["--max-len-a", "1.2", "--max-len-b", "10", "--limit", "100"]}) == e
    assert e.with_beam(4).flags() == [
        *("--beam", "4", "--lenpen", "1.0", "--max-len-a", "1.2", "--max-len-b", "10", "--limit", "100")
    ]


def test_evaluate_refuses_bad_flags_before_any_work(tmp_path, capsys):
    for flags, msg in (
        (["--beam", "0"], "--beam must be >= 1"),
        (["--lenpen", "nan"], "--lenpen must be a finite number"),
        (["--limit", "-5"], "--limit must be >= 0"),
        (["--splits", "valid,tset"], "--splits: tset"),
        (["--max-len-b", "0"], "--max-len-b >= 1"),
    ):
        assert main(["evaluate", str(tmp_path / "nothing"), *flags]) == 2
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()


def test_report_skips_incomplete_metric_lines_and_bad_status_names_its_file(tmp_path):
    from preln.runs import RunFolder

    post = [([(50, 6.0), (100, 5.0)], "completed")]
    _fake_study(tmp_path / "runs" / "s", {"post": post, "pre": post})
    with open(tmp_path / "runs" / "s" / "pre-s1" / "metrics.jsonl", "a") as f:
        f.write('{"kind": "valid"}\n["not", "a", "record"]\n')
    assert "| pre | 1 |" in report.write_report(tmp_path / "runs")[0].read_text()
    (tmp_path / "runs" / "s" / "pre-s1" / "status.json").write_bytes(b"\xff{")
    with pytest.raises(ValueError, match=r"pre-s1/status.json: not valid JSON"):
        RunFolder(tmp_path / "runs" / "s" / "pre-s1").status()


def test_report_takes_plain_run_folders_too(tmp_path):
    post = [(50, 6.0), (100, 5.0)]
    _fake_run(tmp_path / "runs" / "a", post, bleu=11.0)
    _fake_run(tmp_path / "runs" / "b", [(50, 5.5), (100, 4.5)])
    text = report.write_report(tmp_path / "runs")[0].read_text()
    assert "## Runs in runs" in text and "| a | 1 |" in text and "| b | 1 |" in text
    assert (tmp_path / "runs" / "runs_curves.png").is_file()
    single = report.write_report(tmp_path / "runs" / "a")[0].read_text()  # one run folder alone
    assert "| a | 1 |" in single and "| b |" not in single
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no study folders"):
        report.write_report(tmp_path / "empty")


def test_plain_runs_of_different_tasks_get_a_panel_each(tmp_path):
    for name, task in (("mt", "translation"), ("mlm", "mlm"), ("ft", "classify")):
        _fake_run(tmp_path / "runs" / name, [(1, 6.0)])  # one point: drawn with a marker
        (tmp_path / "runs" / name / "config.toml").write_text(f'[model]\ntask = "{task}"\n')
    study = report.plain_runs(tmp_path / "runs")
    assert {j.folder: j.group for j in study.jobs} == {"mt": "translation", "mlm": "masked LM", "ft": "classification"}
    report.write_report(tmp_path / "runs")
    (tmp_path / "runs" / "ft" / "config.toml").write_text('[model]\ntask = "translation"\n')
    (tmp_path / "runs" / "mlm" / "config.toml").write_text('[model]\ntask = "translation"\n')
    assert {j.group for j in report.plain_runs(tmp_path / "runs").jobs} == {""}  # one task: one panel


def test_curves_colour_by_lr_and_dash_by_warmup_across_panels():
    styles = report.curve_styles(
        {
            "adam": ["adam,lr=0.0005,warmup=none", "adam,lr=0.0005,warmup=long", "adam,lr=0.001,warmup=none"],
            "sgd": ["sgd,lr=0.005,warmup=none", "sgd,lr=0.001,warmup=long"],
        }
    )
    assert styles["adam,lr=0.001,warmup=none"][0] == styles["sgd,lr=0.001,warmup=long"][0]  # same lr, same colour
    assert styles["adam,lr=0.0005,warmup=none"][0] != styles["adam,lr=0.001,warmup=none"][0]
    assert styles["adam,lr=0.0005,warmup=none"][1] != styles["adam,lr=0.0005,warmup=long"][1]  # warm-up: dashes
    assert styles["sgd,lr=0.005,warmup=none"][2] == "lr=0.005, warmup=none"  # no repeated group name
    plain = report.curve_styles({"": ["pre-nowarmup", "post-warmup"]})
    assert plain == {"pre-nowarmup": ("C0", "-", "pre-nowarmup"), "post-warmup": ("C1", "-", "post-warmup")}


def test_the_report_opens_with_the_verdict_a_summary_and_the_headline_study(tmp_path, capsys):
    post = [([(50, 6.0 + k), (100, 5.0 + k / 10)], "completed") for k in (0.0, 0.1, 0.2)]
    pre = [([(50, 5.0 + k), (100, 4.0 + k / 10)], "completed") for k in (0.0, 0.1, 0.2)]
    _fake_study(tmp_path / "runs" / "b-headline", {"post": post, "pre": pre})  # its claim: speed_ratio
    _fake_study(tmp_path / "runs" / "a-other", {"post": post[:1], "pre": pre[:1]})
    meta = json.loads((tmp_path / "runs" / "a-other" / "study.json").read_text())
    meta["title"], meta["claims"] = (
        "other",
        [{"text": "pre NLL", "paper": "lower", "condition": "pre"} | {"metric": "final_nll", "better_than": "post"}],
    )
    (tmp_path / "runs" / "a-other" / "study.json").write_text(json.dumps(meta))
    text = report.write_report(tmp_path / "runs")[0].read_text()
    lead = "Of the paper's 2 claims checked here: 1 shown, 0 not shown, 1 undecided (1 too few seeds)."
    assert text.split("## Summary\n\n")[1].startswith(lead)
    summary = text[text.index("## Summary") : text.index("## fake")]
    assert (
        "| b-headline | speed |" in summary and "| a-other | pre NLL | lower | 4.00 nats (1 run) | undecided" in summary
    )
    assert text.index("## fake") < text.index("## other")  # the speed claim's study (the headline) first
    page = (tmp_path / "runs" / "report.html").read_text()
    assert '<p class="verdict">' + lead.replace("'", "&#x27;") in page  # set apart, rows coloured by verdict
    assert page.count('<tr class="v-yes">') == 2 and page.count('<tr class="v-undecided">') == 2
    # the same summary as data, and on the terminal after `preln report`
    rec = json.loads((tmp_path / "runs" / "claims.json").read_text())
    assert rec["summary"] == lead
    assert [(c["study"], c["claim"], c["verdict"]) for c in rec["claims"]] == [
        ("b-headline", "speed", "yes"),
        ("a-other", "pre NLL", "undecided"),
    ]
    assert rec["claims"][1]["measured"] == "4.00 nats (1 run)" and rec["claims"][1]["rule"] == "ordering"
    assert rec["claims"][1]["reason"] == "too few seeds: n = 1, this rule needs 3"
    capsys.readouterr()
    assert main(["report", str(tmp_path / "runs")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(lead)
    assert "a-other: pre NLL\n    paper: lower | here: 4.00 nats (1 run) | undecided (4.00 vs 5.00" in printed


def test_several_runs_share_a_gpu_and_an_n_that_cannot_fit_is_refused(tmp_path, monkeypatch):
    from preln import config
    from preln.lab import gpus

    seen, live, peak = [], {}, {}

    class FakeProc:
        def __init__(self, argv, log, env, threads):
            self.gpu = env.get("CUDA_VISIBLE_DEVICES")
            live[self.gpu] = live.get(self.gpu, 0) + 1
            peak[self.gpu] = max(peak.get(self.gpu, 0), live[self.gpu])
            seen.append((argv[-1], self.gpu, env["OMP_NUM_THREADS"]))
            self.polls = 0

        def poll(self):
            self.polls += 1
            if self.polls < 3:
                return None
            live[self.gpu] -= 1
            return 0

    monkeypatch.setattr(execute, "start", FakeProc)
    monkeypatch.setattr(execute.os, "cpu_count", lambda: 8)
    jobs = [steps.Job(f"a{i}", f"a{i}", tmp_path / f"a{i}", 1, [("analyze", ["analyze", f"j{i}"])]) for i in range(8)]
    res = execute.execute(jobs, 4, gpus=["3", "3", "5", "5"], poll_s=0)  # --gpus 3,5 --jobs-per-gpu 2
    assert res == {f"a{i}": "done" for i in range(8)}
    assert peak == {"3": 2, "5": 2} and all(s[2] == "2" for s in seen)  # 2 runs per GPU, 8 cores / 4
    cfg = config.load(ROOT / "configs" / "cpu-multi30k-pre.toml")
    need = gpus.run_bytes(cfg)
    assert 1 * 2**30 < need < 4 * 2**30  # a 3.8M-parameter model: mostly the CUDA context and activations
    gpus.check_fit([cfg], ["0"], 3, free_bytes=lambda g: 3 * need + 1)  # fits
    with pytest.raises(ConfigError, match="at most 2 fit"):
        gpus.check_fit([cfg], ["0"], 3, free_bytes=lambda g: 2 * need + 1)
    with pytest.raises(ConfigError, match="--jobs-per-gpu must be >= 1"):
        gpus.check_fit([cfg], ["0"], 0)


def test_the_submitit_launcher_runs_the_grid_with_the_same_skip_and_resume(tmp_path, capsys):
    pytest.importorskip("submitit")
    require_data("multi30k")
    p = tmp_path / "tiny.toml"
    p.write_text(STUDY)
    out = tmp_path / "runs"
    args = ["reproduce", "--studies", str(p), "--out", str(out), "--root", str(ROOT), "--launcher", "local"]
    assert main([*args, "--beam", "1"]) == 0
    status = {
        f.name: json.loads((f / "status.json").read_text())["status"] for f in (out / "tiny").iterdir() if f.is_dir()
    }
    assert status == {"pre-s1": "completed", "post-warmup-s1": "completed", "norm=post,lr=1000000.0-s1": "diverged"}
    assert (out / "tiny" / "pre-s1" / "bleu.json").is_file() and (out / "report.html").is_file()
    assert not (out / "tiny" / "norm=post,lr=1000000.0-s1" / "bleu.json").exists()  # diverged: not evaluated
    # every command a node ran is in its job's steps.jsonl, so the report says where the time went
    steps = [(s.step, s.seconds > 0) for s in timing.read_steps(out)]
    assert sorted(steps) == sorted([("train", True)] * 3 + [("evaluate", True)] * 2), steps
    assert "## Where the time went" in (out / "report.md").read_text()
    capsys.readouterr()
    assert main([*args, "--beam", "1", "--slurm", "timeout_min=30"]) == 0  # everything done: nothing submitted again
    assert "0 to do" in capsys.readouterr().err
    assert main([*args, "--slurm", "timeout_min"]) == 2
    assert "--slurm 'timeout_min': expected key=value" in capsys.readouterr().err
    assert main([*args, "--slurm", "no_such_parameter=1"]) == 2  # submitit's own check, as one line
    assert "preln: error: --slurm:" in capsys.readouterr().err


def test_an_ordering_is_decided_by_a_welch_interval_over_seeds(tmp_path):
    def study(a, b, kind="better_than"):
        curves = {"a": [([(10, f)], "completed") for f in a], "b": [([(10, f)], "completed") for f in b]}
        _fake_study(tmp_path / "s", curves)
        meta = json.loads((tmp_path / "s" / "study.json").read_text())
        meta["claims"] = [{"text": "a lower", "paper": "p", "condition": "a", kind: "b", "metric": "final_nll"}]
        (tmp_path / "s" / "study.json").write_text(json.dumps(meta))
        res = results.study_results(tmp_path / "s", studies.read_study_json(tmp_path / "s"))
        for f in (tmp_path / "s").iterdir():
            if f.is_dir():
                for g in f.iterdir():
                    g.unlink()
                f.rmdir()
        (j,) = claims.judge(res)
        return j.verdict, _md(j.shows)

    verdict, shows = study([4.0, 4.4, 4.2], [4.3, 4.3, 4.25])  # lower by 0.08 in the mean, within the spread
    assert verdict == "undecided"
    assert shows.startswith("undecided (4.20 vs 4.28 for `b`; difference -0.08 [")
    assert "95% ordering: the interval of the difference holds 0) — about 49 seeds per condition" in shows
    assert study([3.0, 3.1, 3.05], [4.3, 4.3, 4.25])[0] == "yes"
    assert study([5.0, 5.1, 5.05], [4.3, 4.3, 4.25])[1].startswith("**no** (5.05 vs 4.28 for `b`; difference +0.77 [")
    assert study([5.0, 5.1, 5.05], [4.3, 4.3, 4.25], "worse_than")[0] == "yes"  # a worse than b: the other way
    assert study([3.0, 3.1], [4.3, 4.3, 4.25])[1] == (
        "undecided (3.05 vs 4.28 for `b`; too few seeds: n = 2, this rule needs 3)"
    )
    # at least as good as, up to the metric's margin (0.05 nats): 0.02 worse in the mean is not "no"
    assert study([4.30, 4.31, 4.32], [4.29, 4.29, 4.30], "as_good_as")[0] == "yes"
    assert study([4.50, 4.51, 4.52], [4.29, 4.29, 4.30], "as_good_as")[0] == "no"


def test_welch_interval_by_hand():
    # means 15.4 and 6.8667; variances of the means 0.2033 and 0.1411; Welch-Satterthwaite df 3.874
    # (not rounded), t(0.975, 3.874) = 2.8126: 8.533 +- 2.8126 * 0.5869
    iv = stats.welch_interval([15.0, 16.3, 14.9], [6.2, 7.5, 6.9])
    assert (iv.estimate, iv.lo, iv.hi, iv.df) == pytest.approx((8.5333, 6.8827, 10.1840, 3.8736), abs=1e-3)
    assert stats.welch_interval([1.0], [2.0, 3.0]) is None
    assert stats.welch_interval([1.0, 1.0], [2.0, 2.0]).zero_width
    assert stats.t_quantile(40) == pytest.approx(2.0211, abs=1e-4)  # not 1.96 beyond 30 degrees of freedom


def _md(text) -> str:
    """A report text as its Markdown."""
    return document.to_markdown([document.Para(text)]).strip()


def test_lr_sensitivity_follows_wortsman_et_al_and_its_claims_are_decided(tmp_path):
    """LRS = mean over the lr grid of (final loss capped at ln V) - the sweep's best, per seed; a
    diverged run counts as the cap; curves are compared by the ordering rule over seeds."""
    from preln.lab import sensitivity

    sdir = tmp_path / "s"
    cap = __import__("math").log(1000)
    finals = {  # curve -> per seed, final NLL at lr 1e-3, 2e-3, 4e-3 (None: diverged)
        "g,norm=post": [[5.0, 5.6, None], [5.1, 5.5, None], [5.0, 5.7, None]],
        "g,norm=pre": [[5.0, 4.8, 4.9], [5.05, 4.85, 4.9], [5.0, 4.8, 5.0]],
    }
    jobs = []
    for curve, seeds in finals.items():
        for seed, row in enumerate(seeds, 1):
            for lr, final in zip(("0.001", "0.002", "0.004"), row):
                cond, folder = f"{curve},lr={lr}", f"{curve},lr={lr}-s{seed}"
                _fake_run(sdir / folder, [(50, 6.0), (100, final or 7.0)], "diverged" if final is None else "completed")
                (sdir / folder / "config.toml").write_text("[model]\nvocab_size = 1000\n")
                jobs.append({"folder": folder, "steps": ["train"], "condition": cond, "seed": seed, "group": "g"})
    claim = {"text": "post more sensitive", "condition": "g,norm=post", "worse_than": "g,norm=pre"}
    meta = {"title": "lrs", "jobs": jobs, "claims": [claim | {"metric": "lr_sensitivity"}]}
    (sdir / "study.json").write_text(json.dumps(meta))
    res = results.study_results(sdir, studies.read_study_json(sdir))
    post = sensitivity.sample(res, "g,norm=post").values
    want = [sum(x - min(xs) for x in xs) / 3 for xs in ([5.0, 5.6, cap], [5.1, 5.5, cap], [5.0, 5.7, cap])]
    assert post == pytest.approx(want)
    (j,) = claims.judge(res)
    assert j.verdict == "yes" and j.decision.rule == "ordering"
    text = report.write_report(tmp_path)[0].read_text()
    assert "### Learning-rate sensitivity" in text and "| g,norm=post | 3 |" in text and "| 3 of 9 |" in text
    assert (tmp_path / "s_lr_sweep.png").is_file()


def test_grids_and_claims_can_be_left_out_of_presets(tmp_path):
    p = tmp_path / "g.toml"
    p.write_text(
        """
steps = ["train"]
[preset.quick]
config = "configs/tiny-translation.toml"
[preset.long]
config = "configs/tiny-translation.toml"
[[grid]]
name = "a"
"optim.lr" = [1e-3, 2e-3]
[[grid]]
name = "b"
presets = ["long"]
"optim.lr" = [1e-3]
[[claim]]
text = "only in long"
condition = "b,lr=0.001"
better_than = "a,lr=0.001"
metric = "final_nll"
presets = ["long"]
"""
    )
    quick, long = (studies.load_study(p, name, ROOT) for name in ("quick", "long"))
    assert {r.condition for r in quick.runs} == {"a,lr=0.001", "a,lr=0.002"} and not quick.claims
    assert len(long.runs) == 3 and [c.text for c in long.claims] == ["only in long"]
    p.write_text(p.read_text().replace('presets = ["long"]\n"optim', 'presets = ["lng"]\n"optim'))
    with pytest.raises(ConfigError, match="presets must list preset names"):
        studies.load_study(p, "quick", ROOT)


def test_default_studies_are_those_that_have_the_preset_and_the_others_are_named(capsys):
    """``--preset long`` without ``--studies`` runs the default studies that have a long preset and
    says which it leaves out; named studies are taken as given (one without the preset is then
    ``load_study``'s error); a preset no default study has is an error."""
    from preln.lab import DEFAULT_STUDIES, Reproduce, study_names
    from preln.lab import ROOT as PACKAGE

    assert study_names(Reproduce(preset="quick"), PACKAGE) == DEFAULT_STUDIES.split(",")
    assert capsys.readouterr().out == ""
    assert study_names(Reproduce(preset="long"), PACKAGE) == ["fig5", "lr"]
    assert "fig3, fig4: no 'long' preset, left out (studies: fig5, lr)" in capsys.readouterr().out
    assert study_names(Reproduce(preset="long", studies="fig3,lr-mlm"), PACKAGE) == ["fig3", "lr-mlm"]
    with pytest.raises(ConfigError, match=r"fig3.toml: no \[preset.long\]"):
        studies.load_study(PACKAGE / "studies" / "fig3.toml", "long", PACKAGE)
    with pytest.raises(ConfigError, match="no default study .* has a 'huge' preset"):
        study_names(Reproduce(preset="huge"), PACKAGE)


def test_a_claim_against_a_constant_uses_the_bound_rule(tmp_path):
    """``above = 0`` with ``context_gain``: the unigram model's validation NLL (recorded by the
    run) minus the run's, over the condition's runs, must lie above 0 by its interval."""
    sdir = tmp_path / "s"
    jobs = []
    for seed, final in enumerate((5.4, 5.45, 5.38), 1):
        folder = sdir / f"pre-s{seed}"
        _fake_run(folder, [(100, 6.0), (300, final)])
        with open(folder / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"kind": "baseline", "update": 0, "unigram_nll": 5.81}) + "\n")
        jobs.append({"folder": folder.name, "steps": ["train"], "condition": "pre", "seed": seed})
    claim = {"text": "context", "condition": "pre", "metric": "context_gain", "above": 0.0}
    (sdir / "study.json").write_text(json.dumps({"title": "c", "jobs": jobs, "claims": [claim]}))
    res = results.study_results(sdir, studies.read_study_json(sdir))
    (j,) = claims.judge(res)
    assert j.verdict == "yes" and j.decision.rule == "bound"
    assert claims.plain(j.measured).startswith("0.40 ± 0.04 nats (3 runs)")
    text = report.write_report(tmp_path)[0].read_text()
    assert "unigram model's valid NLL" in text and "| 5.81 ± 0.00 |" in text


def test_the_progress_bar_counts_fine_tunings_and_evaluations_as_steps(tmp_path):
    """A job's steps weigh the same on the bar: a pretraining whose model is being fine-tuned for
    the second time shows two steps done, not its updates only (the bar sat at the pretrainings'
    share for a whole fine-tuning grid)."""
    folder = tmp_path / "pre-s1"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text(json.dumps({"kind": "train", "update": 300}) + "\n")
    names = ["train", "finetune:paraphrase", "finetune@2:paraphrase", "control:paraphrase"]
    job = steps.Job("fig5", "fig5/pre-s1", folder, 600 * 4, [(n, ["x"]) for n in names])
    assert execute.progress(job, 3, "train") == 300  # updates so far
    assert execute.progress(job, 1, "finetune@2:paraphrase") == 1200  # train and the first fine-tuning
    assert execute.progress(job, 0, "control:paraphrase") == 1800
    analysis = steps.Job("fig3", "fig3", tmp_path / "fig3", 200, [("analyze", ["analyze"])])
    assert execute.progress(analysis, 0, "analyze") == 0


def test_a_study_folder_records_its_preset(tmp_path):
    from preln.lab import studies

    study = studies.load_study(ROOT / "studies" / "fig5.toml", "long")
    assert study.preset == "long"
    studies.write_study_json(study, tmp_path)
    assert studies.read_study_json(tmp_path).preset == "long"
    meta = json.loads((tmp_path / "study.json").read_text())
    del meta["preset"]  # a study.json of an older preln
    (tmp_path / "study.json").write_text(json.dumps(meta))
    assert studies.read_study_json(tmp_path).preset == ""


ONE_RUN = """
title = "one run"
[preset.quick]
config = "configs/tiny-translation.toml"
seeds = [1]
set = ["train.max_updates=4", "train.valid_every=2", "train.valid_bleu=false"]
evaluate = ["--max-len-a", "1.2", "--max-len-b", "10"]
[[condition]]
name = "pre"
"""


def test_a_runs_folder_holding_another_presets_run_is_refused_not_reused(tmp_path, capsys):
    """`reproduce --preset smoke` then `--preset quick` into the same folder: the same run folder
    names, other settings. The second must not take the toy runs for its own (nor fine-tune or
    score them): it says which folder differs and how, before running anything."""
    require_data("multi30k")
    p, out = tmp_path / "one.toml", tmp_path / "runs"
    p.write_text(ONE_RUN)
    args = ["reproduce", "--studies", str(p), "--out", str(out), "--root", str(ROOT), "--beam", "1"]
    assert main(args) == 0
    assert main(args) == 0  # the same settings: nothing to do, no complaint
    capsys.readouterr()
    metrics = (out / "one" / "pre-s1" / "metrics.jsonl").read_text()
    p.write_text(ONE_RUN.replace('"train.max_updates=4"', '"train.max_updates=4", "model.d_ffn=48"'))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "one/pre-s1" in err and "model.d_ffn" in err and "another --out" in err
    p.write_text(ONE_RUN.replace("train.max_updates=4", "train.max_updates=6"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "one/pre-s1" in err and "4 updates" in err and "6" in err
    assert (out / "one" / "pre-s1" / "metrics.jsonl").read_text() == metrics  # nothing ran
