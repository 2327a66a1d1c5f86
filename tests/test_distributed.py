"""torchrun with 2 CPU processes (gloo) against one process with the same global batch."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from .conftest import ROOT, require_data

COMMON = [
    "--set",
    "train.progress=false",
    "--set",
    "train.max_updates=10",
    "--set",
    "train.valid_every=5",
    "--set",
    "train.save_every=5",
    "--set",
    "train.keep_last=3",
]


def run(args, env, nproc=1):
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone"]
        if nproc > 1
        else [sys.executable]
    )
    cmd = [*launcher, "-m", "preln", "train", str(ROOT / "configs" / "tiny-translation.toml"), *COMMON, *args]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def rows(run_dir):
    return [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, parallel):
    require_data("multi30k")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run(["--out", str(tmp_path / "single"), "--set", "train.update_freq=2"], env)
    dist_args = ["--out", str(tmp_path / "dist"), "--set", "train.update_freq=1", "--set", f"train.parallel={parallel}"]
    p = run(dist_args, env, nproc=2)
    assert p.stdout.count("run folder:") == 1  # only rank 0 speaks
    single, dist = rows(tmp_path / "single"), rows(tmp_path / "dist")
    assert [r["kind"] for r in single] == [r["kind"] for r in dist]
    for a, b in zip(single, dist):
        if a["kind"] == "train":
            assert a["ntokens"] == b["ntokens"]  # the same batches make each update
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        else:
            assert b["valid_loss"] == pytest.approx(a["valid_loss"], rel=1e-5)
    # resume distributed: drop the last checkpoint as if killed after update 5, rerun
    ckpt = tmp_path / "dist" / "checkpoints"
    shutil.rmtree(ckpt / "update_0000010")
    (tmp_path / "dist" / "status.json").unlink()
    run(dist_args, env, nproc=2)
    resumed = rows(tmp_path / "dist")
    assert [r.get("loss") for r in resumed] == [r.get("loss") for r in dist]


def test_an_update_with_no_batch_left_for_a_rank_matches_one_process(tmp_path):
    """340 examples make 13 batches: the epoch's 7th update has one, so rank 1 joins its
    collectives with rank 0's batch at weight 0 (the only batch it collates fully then)."""
    require_data("multi30k")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    short = ["--set", "data.max_train_examples=340", "--set", "train.max_updates=8"]
    run(["--out", str(tmp_path / "single"), "--set", "train.update_freq=2", *short], env)
    run(["--out", str(tmp_path / "dist"), "--set", "train.update_freq=1", *short], env, nproc=2)
    single = [r for r in rows(tmp_path / "single") if r["kind"] == "train"]
    dist = [r for r in rows(tmp_path / "dist") if r["kind"] == "train"]
    assert [r["epoch"] for r in dist] == [1] * 7 + [2]
    assert [r["ntokens"] for r in single] == [r["ntokens"] for r in dist]
    assert [r["loss"] for r in dist] == pytest.approx([r["loss"] for r in single], rel=1e-5)
