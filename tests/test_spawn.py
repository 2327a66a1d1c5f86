"""A study's commands are forked from a server that imported torch once (``lab/spawn.py``): each
must run as ``python -m preln`` would, with the scheduler's environment, folder and threads."""

import json
import os
import subprocess
import sys

import pytest

from preln.lab import spawn

from .conftest import ROOT, require_data

VARYING = {"time", "tokens_per_s", "seconds"}


def _rows(run) -> list[dict]:
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in VARYING} for r in rows]


def test_a_forked_training_equals_one_run_as_a_subprocess(tmp_path, monkeypatch):
    require_data("multi30k")
    monkeypatch.chdir(ROOT)  # a relative config path: the command works in the scheduler's folder
    cache = tmp_path / "cache"  # only in the command's environment, not in the server's
    env = {**os.environ, "PRELN_CACHE": str(cache), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    argv = ["train", "configs/tiny-translation.toml", "--set", "train.max_updates=4", "--set", "train.valid_every=2"]
    forked = spawn.start([*argv, "--out", str(tmp_path / "forked")], tmp_path / "forked.log", env, 1)
    assert forked.wait(300) == 0, (tmp_path / "forked.log").read_text()[-2000:]
    log = (tmp_path / "forked.log").read_text()
    assert "(1 thread)" in log and "done: update 4" in log
    assert any(cache.rglob("*.model"))  # the tokenizer went to the command's PRELN_CACHE
    cmd = [sys.executable, "-m", "preln", *argv, "--out", str(tmp_path / "straight")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _rows(tmp_path / "forked") == _rows(tmp_path / "straight")


def test_a_forked_command_gets_its_threads_and_reports_its_exit_code(tmp_path):
    require_data("multi30k")
    argv = [str(ROOT / "configs" / "tiny-translation.toml"), "--set", "train.max_updates=1"]
    argv += ["--set", "train.valid_every=1"]
    two = spawn.start(["train", *argv, "--out", str(tmp_path / "two")], tmp_path / "two.log", dict(os.environ), 2)
    assert two.wait(300) == 0 and "(2 threads)" in (tmp_path / "two.log").read_text()
    bad = spawn.start(["train", str(tmp_path / "none.toml")], tmp_path / "bad.log", dict(os.environ), 1)
    assert bad.wait(60) == 2 and bad.poll() == 2
    assert "preln: error" in (tmp_path / "bad.log").read_text()


def test_where_there_is_no_fork_server_a_command_is_a_subprocess(tmp_path, monkeypatch):
    monkeypatch.setattr(spawn.multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    bad = spawn.start(["train", str(tmp_path / "none.toml")], tmp_path / "bad.log", dict(os.environ), 1)
    assert isinstance(bad, subprocess.Popen)
    assert bad.wait(60) == 2 and "preln: error" in (tmp_path / "bad.log").read_text()


def test_a_scheduler_that_fails_stops_its_commands_gracefully(tmp_path, monkeypatch):
    """A bug in the scheduler's loop must not leave its commands training on (nor make its exit
    wait for them): they get SIGTERM, checkpoint and end."""
    from preln.lab import execute, steps

    require_data("multi30k")
    run = tmp_path / "run"
    argv = ["train", str(ROOT / "configs" / "tiny-translation.toml"), "--set", "train.max_updates=3000"]
    argv += ["--set", "train.progress=false", "--out", str(run)]
    job = steps.Job("long", "long", run, 3000, [("train", argv)])

    def broken(pool):
        if (run / "metrics.jsonl").is_file() and '"train"' in (run / "metrics.jsonl").read_text():
            raise RuntimeError("a bug in the scheduler")

    monkeypatch.setattr(execute, "_show", broken)
    with pytest.raises(RuntimeError, match="a bug in the scheduler"):
        execute.execute([job], 1, poll_s=0.1)
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"


def test_a_script_without_the_main_guard_runs_once(tmp_path):
    """multiprocessing imports the parent's main module into each child; a caller's unguarded
    script must not run again in every command."""
    script = tmp_path / "study.py"
    script.write_text(
        "import os, sys\n"
        "from pathlib import Path\n"
        "from preln.lab import spawn\n"
        "with open(sys.argv[1], 'a') as f:\n"
        "    f.write(f'{os.getpid()}\\n')\n"
        "cmd = spawn.start(['config', '--help'], Path(sys.argv[2]), dict(os.environ), 1)\n"
        "sys.exit(cmd.wait(120))\n"
    )
    runs, log = tmp_path / "runs.txt", tmp_path / "cmd.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, str(script), str(runs), str(log)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(runs.read_text().split()) == 1 and "usage: preln config" in log.read_text()
