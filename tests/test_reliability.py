"""Exact resume after SIGKILL, crashes during checkpoint writes, bad input, mixed precision."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from preln import checkpoint, config
from preln.cli import main
from preln.fit import fit, train
from preln.inference import load_run
from preln.trainer import Trainer

from .conftest import ROOT, require_data

TINY = str(ROOT / "configs" / "tiny-translation.toml")


def losses(run):
    return [
        json.loads(ln)["loss"]
        for ln in (run / "metrics.jsonl").read_text().splitlines()
        if json.loads(ln)["kind"] == "train"
    ]


def preln(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "preln", *args], **kw)


def test_sigkill_then_resume_gives_the_same_losses_bitwise(tmp_path):
    require_data("multi30k")
    args = [
        "train",
        TINY,
        "--set",
        "train.max_updates=200",
        "--set",
        "train.save_every=20",
        "--set",
        "model.dropout=0.1",
        "--set",
        "train.progress=false",
        "--set",
        "train.valid_bleu=false",
    ]
    assert preln(*args, "--out", str(tmp_path / "straight")).wait(600) == 0
    run = tmp_path / "killed"
    p = preln(*args, "--out", str(run), stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(checkpoint.list_checkpoints(run / "checkpoints")) < 2:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait(30)
    n = len(losses(run))
    if n >= 200:
        pytest.skip("finished before the kill")
    assert json.loads((run / "status.json").read_text())["status"] == "running"  # killed: no chance to say more
    assert preln(*args, "--out", str(run)).wait(600) == 0
    assert losses(run) == losses(tmp_path / "straight")


def test_kill_during_checkpoint_write_leaves_the_previous_one_loadable(tmp_path):
    """A child process is SIGKILLed halfway through writing its second checkpoint."""
    require_data("multi30k")
    script = f"""
import os, signal
import safetensors.torch as st
from preln import checkpoint, config
from preln.fit import train
real = st.save_file
calls = []
def dying_save(tensors, path, *a, **k):
    calls.append(path)
    if len(calls) == 3:  # second checkpoint: model file written, trainer file half-written
        open(path, "wb").write(b"partial")
        os.kill(os.getpid(), signal.SIGKILL)
    return real(tensors, path, *a, **k)
checkpoint.save_file = dying_save
cfg = config.load({TINY!r}, ["train.max_updates=10", "train.save_every=4", "train.progress=false",
                             "train.valid_every=100"])
train(cfg, {str(tmp_path / "r")!r})
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert p.returncode == -signal.SIGKILL
    ckpts = checkpoint.list_checkpoints(tmp_path / "r" / "checkpoints")
    assert [c.name for c in ckpts] == ["update_0000004"]
    assert list((tmp_path / "r" / "checkpoints").glob(".tmp-*"))  # the half-written one, ignored
    cfg, model, tok = load_run(tmp_path / "r")
    assert model is not None
    cfg = config.load(
        TINY, ["train.max_updates=10", "train.save_every=4", "train.progress=false", "train.valid_every=100"]
    )
    assert train(cfg, tmp_path / "r")["status"] == "completed"  # resumes from update 4
    assert not list((tmp_path / "r" / "checkpoints").glob(".tmp-*"))  # cleaned by the next write


def cli_error(capsys, *args) -> str:
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    assert err.startswith("preln: error: ") and "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    require_data("multi30k")
    out = ["--out", str(tmp_path / "r")]
    assert "optim.lr must be > 0" in cli_error(capsys, "train", TINY, "--set", "optim.lr=-1", *out)
    assert "model.norm: 'mid'" in cli_error(capsys, "train", TINY, "--set", "model.norm=mid", *out)
    assert "model.nrom: unknown key" in cli_error(capsys, "train", TINY, "--set", "model.nrom=pre", *out)
    assert "max_tokens must hold" in cli_error(capsys, "train", TINY, "--set", "data.max_tokens=10", *out)
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "train.de").write_text("a\nb\n")
    (corpus / "train.en").write_text("a\n")
    assert "not line-aligned" in cli_error(capsys, "train", TINY, "--data", str(corpus), *out)
    (corpus / "train.en").write_bytes(b"a\n\xff\n")
    assert "line 2 is not valid UTF-8" in cli_error(capsys, "train", TINY, "--data", str(corpus), *out)
    (corpus / "train.en").unlink()
    (corpus / "train.en").mkdir()  # unreadable: a folder where a file should be
    assert "missing corpus file" in cli_error(capsys, "train", TINY, "--data", str(corpus), *out)
    assert "corpus not found" in cli_error(capsys, "train", TINY, "--data", str(tmp_path / "nope"), *out)


def test_resume_with_another_architecture_or_vocabulary_is_refused_and_loses_nothing(tmp_path, capsys):
    require_data("multi30k")
    run = tmp_path / "r"
    assert (
        main(["train", TINY, "--set", "train.max_updates=3", "--set", "train.progress=false", "--out", str(run)]) == 0
    )
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    err = cli_error(
        capsys, "train", TINY, "--set", "train.max_updates=3", "--set", "model.d_model=64", "--out", str(run)
    )
    assert "model.d_model: 32 -> 64" in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    # a checkpoint with another vocabulary: swap the run's tokenizer for another corpus's
    other = config.load(ROOT / "configs" / "tiny-mlm.toml")
    from preln.tasks import load_data

    _, tok = load_data(other)
    (run / "spm.model").write_bytes(tok.path.read_bytes())
    err = cli_error(capsys, "train", TINY, "--set", "train.max_updates=3", "--out", str(run))
    assert "vocabulary" in err or "vocab_size" in err
    with pytest.raises(ValueError, match="another vocabulary"):
        load_run(run)


def test_checkpoint_weights_of_another_architecture_are_refused(tmp_path):
    require_data("multi30k")
    cfg = config.load(TINY, ["train.max_updates=2", "train.progress=false"])
    train(cfg, tmp_path / "a")
    bigger = config.load(TINY, ["train.max_updates=2", "train.progress=false", "model.d_ffn=128"])
    train(bigger, tmp_path / "b")
    (tmp_path / "a" / "config.toml").write_text((tmp_path / "b" / "config.toml").read_text())
    with pytest.raises(ValueError, match="does not fit this model"):
        load_run(tmp_path / "a")


def test_warmup_longer_than_the_run_is_legal_but_warned(tmp_path, capsys):
    require_data("multi30k")
    cfg = config.load(TINY, ["train.max_updates=3", "schedule.warmup=100", "train.progress=false"])
    with Trainer(cfg, tmp_path / "r") as trainer:
        assert fit(trainer)["status"] == "completed"
    assert "never reached" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_losses_track_fp32_on_cuda(tmp_path):
    require_data("multi30k")
    base = ["train.max_updates=30", "train.progress=false", "train.device='cuda'"]
    train(config.load(TINY, base), tmp_path / "fp32")
    train(config.load(TINY, base + ["train.precision='bf16'"]), tmp_path / "bf16")
    a, b = losses(tmp_path / "fp32"), losses(tmp_path / "bf16")
    assert all(abs(x - y) < 0.05 * x for x, y in zip(a, b)), (a, b)


def test_a_second_writer_is_refused_while_the_first_runs(tmp_path, capsys):
    require_data("multi30k")
    out = tmp_path / "r"
    args = ["train", TINY, "--out", str(out), "--set", "train.max_updates=100000", "--set", "train.progress=false"]
    first = preln(*args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / "metrics.jsonl").is_file() and time.time() < deadline:
            time.sleep(0.2)
        assert (out / "metrics.jsonl").is_file()
        before = (out / "config.toml").read_text()
        assert main(args) == 2  # refused before it reads or writes anything
        err = capsys.readouterr().err
        assert f"being written by another preln process (PID {first.pid})" in err
        assert main(["evaluate", str(out), "--splits", "valid", "--limit", "2"]) == 2
        assert (out / "config.toml").read_text() == before and not (out / "bleu.json").exists()
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(60)
    assert main(["evaluate", str(out), "--splits", "valid", "--limit", "2", "--beam", "1"]) == 0  # lock released


def test_a_torn_last_metrics_line_does_not_block_resume(tmp_path):
    from preln.runs import RunFolder

    run = tmp_path / "r"
    run.mkdir()
    good = [{"kind": "train", "update": u, "loss": 1.0} for u in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good) + '{"kind": "tr')
    folder = RunFolder(run)
    assert [r["update"] for r in folder.metrics()] == [1, 2, 3]
    folder.truncate_metrics(2)  # what resuming from the update-2 checkpoint does
    assert [json.loads(ln)["update"] for ln in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


@pytest.mark.parametrize(
    "edit, message",
    [
        (("set = []", "sett = []"), "unknown key 'sett'"),
        (("seeds = [1, 2, 3]", "seed = [1, 2, 3]"), "unknown key 'seed'"),
        (("title = ", "titel = "), "top level: unknown key 'titel'"),
        (("seeds = [1, 2, 3]", "seeds = [1, 1, 2]"), "seeds must be distinct"),
        (('metric = "speed_ratio"', 'metric = "speed-ratio"'), "claim metric 'speed-ratio': use one of"),
        (('better_than = "post-warmup"', 'better_than = "post-warmpu"'), "'post-warmpu' is not a condition"),
        (('as_good_as = "post-warmup"', 'as_good_as = "post-warmup"\nbetter_than = "post-nowarmup"'), "one condition"),
        (("seeds = [1, 2, 3]", "seeds = 3"), "seeds must be a non-empty list of integers"),
        (('name = "pre-nowarmup"', 'name = "../../escaped"'), "name must be a folder-safe string"),
        (('metric = "speed_ratio"', 'metrc = "speed_ratio"'), "unknown key 'metrc'"),
    ],
)
def test_study_files_refuse_unknown_keys_and_unsafe_names(tmp_path, edit, message):
    from preln.config import ConfigError
    from preln.lab import studies

    text = (ROOT / "studies" / "fig4.toml").read_text()
    assert edit[0] in text
    p = tmp_path / "s.toml"
    p.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        studies.load_study(p, "quick", ROOT)


def test_a_crash_records_failed_not_running(tmp_path, monkeypatch):
    require_data("multi30k")
    calls = {"n": 0}
    real = Trainer.train_step

    def flaky(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk on fire")
        return real(self, *a, **kw)

    monkeypatch.setattr(Trainer, "train_step", flaky)
    with pytest.raises(RuntimeError, match="disk on fire"):
        train(config.load(TINY, ["train.max_updates=10", "train.progress=false"]), tmp_path / "r")
    status = json.loads((tmp_path / "r" / "status.json").read_text())
    assert status["status"] == "failed" and "disk on fire" in status["reason"]


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    require_data("multi30k")
    sets = ["train.max_updates=10", "train.save_every=5", "train.progress=false", "train.valid_bleu=false"]
    out = tmp_path / "r"
    train(config.load(TINY, sets), out)
    reference = losses(out)
    ckpts = checkpoint.list_checkpoints(out / "checkpoints")
    assert [p.name for p in ckpts] == ["update_0000005", "update_0000010"]
    weights = ckpts[-1] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a crash or a full disk
    assert "model.safetensors has" in checkpoint.problem(ckpts[-1])
    cfg, model, _ = load_run(out)  # translate/evaluate use the newest good one
    assert "is damaged" in capsys.readouterr().err
    train(config.load(TINY, sets), out)  # resumes from update 5 and redoes 6..10
    assert "using an older one" in capsys.readouterr().err
    assert losses(out) == reference  # bitwise the same run
    assert checkpoint.problem(checkpoint.list_checkpoints(out / "checkpoints")[-1]) is None


def test_foreign_folders_and_run_folders_without_their_config_are_refused(tmp_path, capsys):
    require_data("multi30k")
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "config.toml").write_text("my own notes\n")
    (mine / "data.csv").write_text("1,2\n")
    args = [
        "train",
        TINY,
        "--set",
        "train.max_updates=4",
        "--set",
        "train.progress=false",
        "--set",
        "train.save_every=2",
    ]
    assert main([*args, "--out", str(mine)]) == 2
    assert "holds files that are not a run's (data.csv)" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["config.toml", "data.csv"]  # nothing written
    assert (mine / "config.toml").read_text() == "my own notes\n"
    run = tmp_path / "run"
    assert main([*args, "--out", str(run)]) == 0
    (run / "config.toml").unlink()
    assert main([*args, "--out", str(run), "--set", "optim.lr=0.5"]) == 2
    assert "holds checkpoints but no config.toml" in capsys.readouterr().err
    assert not (run / "config.toml").exists()


def test_a_cache_path_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    require_data("multi30k")
    (tmp_path / "cachefile").write_text("x")
    monkeypatch.setenv("PRELN_CACHE", str(tmp_path / "cachefile"))
    sets = ["--set", "train.max_updates=1", "--set", "train.progress=false", "--set", "data.vocab_size=123"]
    assert main(["train", TINY, "--out", str(tmp_path / "r"), *sets]) == 2
    err = capsys.readouterr().err
    assert err.count("preln: error:") == 1 and "cachefile" in err and "Traceback" not in err


def test_a_run_warns_when_the_training_processes_claim_more_threads_than_cores(tmp_path, capsys, monkeypatch):
    from preln import process

    require_data("multi30k")
    monkeypatch.setattr(process, "cores", lambda: 2)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "threads").mkdir()
        (tmp_path / "threads" / str(other.pid)).write_text("2")  # a live process computing on 2 threads
        (tmp_path / "threads" / "999999999").write_text("2")  # one that died without releasing
        claim = process.ThreadClaim(1, tmp_path / "threads")
        assert claim.others() == {other.pid: 2} and not (tmp_path / "threads" / "999999999").exists()
        w = claim.warning()
        assert w.startswith("2 preln training processes claim 3 threads on 2 cores (this one 1; pid ")
        monkeypatch.setenv("PRELN_RUNTIME_DIR", str(tmp_path / "threads"))
        cfg = config.load(ROOT / "configs" / "tiny-translation.toml", ["train.max_updates=1", "train.threads=1"])
        with Trainer(cfg, tmp_path / "run"):
            assert (tmp_path / "threads" / str(os.getpid())).read_text() == "1"  # its own claim
        assert not (tmp_path / "threads" / str(os.getpid())).exists()  # released with the trainer
        assert "warning: 2 preln training processes claim 3 threads on 2 cores" in capsys.readouterr().err
        claim.release()
        other.kill()
        other.wait()
        assert process.ThreadClaim(2, tmp_path / "threads").warning() is None  # alone on its cores
    finally:
        other.kill()
