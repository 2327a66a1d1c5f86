"""torchrun with 2 CPU processes (gloo) against one process with the same global batch."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from preln import checkpoint

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


def train_losses(run_dir):
    return [r["loss"] for r in rows(run_dir) if r["kind"] == "train"]


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, parallel):
    require_data("multi30k")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    post = ["--set", "model.norm='post'"]  # (a Post-LN translation model exports as FSMT: the sharded legs below)
    run(["--out", str(tmp_path / "single"), *post, "--set", "train.update_freq=2"], env)
    dist_args = [
        "--out",
        str(tmp_path / "dist"),
        *post,
        "--set",
        "train.update_freq=1",
        "--set",
        f"train.parallel={parallel}",
    ]
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
    if parallel == "fsdp":
        sharded_checkpoints_survive_kill_9_and_resume_at_another_world_size(tmp_path, env, post)


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


KILL_RANK1_IN_SAVING_UPDATE_10 = """
import os, signal, sys
from preln import distributed
from preln.cli import main
real, calls = distributed.save_shards, []
def dying(module, opt, folder):
    calls.append(folder)
    if len(calls) == 4 and os.environ["RANK"] == "1":  # best@5, update 5, best@10, then update 10: killed mid-write
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__1_0.distcp").write_bytes(b"partial")
        os.kill(os.getpid(), signal.SIGKILL)
    return real(module, opt, folder)
distributed.save_shards = dying
sys.exit(main(sys.argv[1:]))
"""


def sharded_checkpoints_survive_kill_9_and_resume_at_another_world_size(tmp_path, env, post):
    """FSDP writes each rank's shards (no full gather); a kill -9 during a save leaves the one
    before; resuming it in 1 process (2 -> 1), and a 1-process run's checkpoint in 2 (1 -> 2), give
    the uninterrupted run's losses; evaluate/translate/export read the shards. ``dist`` and
    ``single`` are the runs the test above made (2 FSDP ranks; 1 process, the same batches)."""
    two = [*post, "--set", "train.update_freq=1", "--set", "train.parallel=fsdp"]
    one = [*post, "--set", "train.update_freq=2"]  # the same 2 batches an update
    straight = tmp_path / "dist"
    ckpt = straight / "checkpoints" / "update_0000005"
    assert not (ckpt / "model.safetensors").exists()
    assert sorted(p.name for p in (ckpt / "shards").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]

    killed = tmp_path / "killed"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    args = ["train", str(ROOT / "configs" / "tiny-translation.toml"), *COMMON, "--out", str(killed), *two]
    script = tmp_path / "dying.py"
    script.write_text(KILL_RANK1_IN_SAVING_UPDATE_10)
    p = subprocess.run([*launcher, str(script), *args], env=env, capture_output=True, timeout=300)
    assert p.returncode != 0 and not (killed / "status.json").read_text().count('"completed"')
    assert [c.name for c in checkpoint.list_checkpoints(killed / "checkpoints")] == ["update_0000005"]
    assert list((killed / "checkpoints").glob(".tmp-*"))  # the half-written one, never used
    run(["--out", str(killed), *one, "--set", "train.parallel=ddp"], env)  # 2 -> 1
    assert train_losses(killed) == pytest.approx(train_losses(straight), rel=1e-5) and len(train_losses(killed)) == 10
    assert (killed / "checkpoints" / "update_0000010" / "model.safetensors").is_file()  # 1 process: whole

    single = tmp_path / "single"  # 1 -> 2: a whole checkpoint read by 2 FSDP ranks
    shutil.rmtree(single / "checkpoints" / "update_0000010")
    (single / "status.json").unlink()
    run(["--out", str(single), *two], env, nproc=2)
    assert train_losses(single) == pytest.approx(train_losses(straight), rel=1e-5) and len(train_losses(single)) == 10

    # the shards read in one process: the same weights from the same run, the tied alias included
    first = checkpoint.model_state(straight / "checkpoints" / "update_0000005")
    again = checkpoint.model_state(killed / "checkpoints" / "update_0000005")
    whole = checkpoint.model_state(single / "checkpoints" / "update_0000005")
    assert first.keys() == again.keys() >= whole.keys() and all(torch.equal(first[k], again[k]) for k in again)
    for cmd in (["evaluate", "--splits", "valid", "--limit", "8"], ["export", str(tmp_path / "hf")]):
        done = subprocess.run([sys.executable, "-m", "preln", cmd[0], str(straight), *cmd[1:]], env=env)
        assert done.returncode == 0, cmd
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    done = subprocess.run(
        [sys.executable, "-m", "preln", "translate", str(straight)],
        input="ein mann .\n",
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 1, done.stderr[-2000:]


def test_more_ranks_on_a_node_than_it_has_gpus_is_one_line(monkeypatch):
    """torchrun --nproc_per_node=2 on a one-GPU machine: rank 1 must say why, not crash in set_device."""
    from preln import distributed
    from preln.errors import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    with pytest.raises(ConfigError, match=r"LOCAL_RANK 1 .* 1 CUDA device.*nproc_per_node"):
        distributed.init("cuda")
