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
