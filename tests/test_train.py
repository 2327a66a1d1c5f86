import json
import shutil

import pytest
import torch

from preln import config
from preln.data.batching import Prefetch
from preln.fit import train
from preln.inference import load_run

from .conftest import ROOT, require_data


def metrics(run, kind="train"):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


@pytest.mark.parametrize("task", ["translation", "mlm"])
@pytest.mark.parametrize("norm", ["post", "pre"])
def test_smoke_20_updates_loss_goes_down(tmp_path, task, norm):
    require_data("multi30k")
    cfg = config.load(ROOT / "configs" / f"tiny-{task}.toml", [f"model.norm={norm}", "train.progress=false"])
    res = train(cfg, tmp_path / "run")
    assert res["status"] == "completed"
    rows = metrics(tmp_path / "run")
    assert [r["update"] for r in rows] == list(range(1, 21))
    first = sum(r["loss"] for r in rows[:3]) / 3
    last = sum(r["loss"] for r in rows[-3:]) / 3
    assert last < first - 0.2, (first, last)
    for key in ("loss", "nll", "lr", "grad_norm", "tokens_per_s", "epoch"):
        assert key in rows[0]
    valid = metrics(tmp_path / "run", "valid")
    assert valid and valid[-1]["update"] == 20
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "completed"
    # the resolved config records the real vocabulary and reloads
    resolved = config.load(tmp_path / "run" / "config.toml")
    assert resolved.model.vocab_size > 0 and resolved.model.norm == norm
    # rerunning a finished run does nothing
    assert train(cfg, tmp_path / "run")["status"] == "completed"
    assert len(metrics(tmp_path / "run")) == 20


def test_resume_reproduces_losses_bitwise(tmp_path):
    """Run 12 updates straight; run again with a checkpoint at 6, drop the later checkpoint
    (as if killed after update 6), resume: the per-update losses are identical."""
    require_data("multi30k")
    base = ["train.progress=false", "train.max_updates=12", "model.dropout=0.1", "train.keep_last=5"]
    cfg = config.load(ROOT / "configs" / "tiny-translation.toml", base)
    train(cfg, tmp_path / "a")
    cfg_b = config.load(ROOT / "configs" / "tiny-translation.toml", base + ["train.save_every=6"])
    train(cfg_b, tmp_path / "b")
    ckpts = sorted(p for p in (tmp_path / "b" / "checkpoints").iterdir() if p.name.startswith("update_"))
    assert [c.name for c in ckpts] == ["update_0000006", "update_0000012"]
    assert (tmp_path / "b" / "checkpoints" / "best" / "model.safetensors").is_file()
    shutil.rmtree(ckpts[-1])
    (tmp_path / "b" / "status.json").unlink()
    train(cfg_b, tmp_path / "b")
    la = [r["loss"] for r in metrics(tmp_path / "a")]
    lb = [r["loss"] for r in metrics(tmp_path / "b")]
    assert len(lb) == 12 and la == lb


def test_resume_refuses_a_different_config(tmp_path):
    require_data("multi30k")
    cfg = config.load(ROOT / "configs" / "tiny-translation.toml", ["train.progress=false", "train.max_updates=2"])
    train(cfg, tmp_path / "r")
    other = config.load(
        ROOT / "configs" / "tiny-translation.toml", ["train.progress=false", "model.norm=post", "train.max_updates=2"]
    )
    with pytest.raises(config.ConfigError, match="model.norm: 'pre' -> 'post'"):
        train(other, tmp_path / "r")


def test_resume_refuses_another_update_size_and_says_which_update_freq_keeps_it(tmp_path):
    """update_freq may change on resume only with the number of processes (a run moved from 2 to
    1 process): in the same process count it would change what an update is."""
    require_data("multi30k")
    sets = ["train.progress=false", "train.max_updates=4", "train.save_every=2"]
    train(config.load(ROOT / "configs" / "tiny-translation.toml", sets), tmp_path / "r")
    (tmp_path / "r" / "checkpoints" / "update_0000004").rename(tmp_path / "later")
    other = config.load(ROOT / "configs" / "tiny-translation.toml", [*sets, "train.update_freq=2"])
    with pytest.raises(config.ConfigError, match=r"updates are 1 batches .* set train.update_freq=1$"):
        train(other, tmp_path / "r")


def test_load_run_restores_the_trained_model(tmp_path):
    require_data("multi30k")
    cfg = config.load(ROOT / "configs" / "tiny-translation.toml", ["train.progress=false", "train.max_updates=3"])
    train(cfg, tmp_path / "r")
    cfg2, model, tok = load_run(tmp_path / "r")
    assert cfg2.model.vocab_size == len(tok)
    assert not torch.all(model.encoder.layers[0].ffn.w1.bias == 0)  # trained, not freshly initialized


def test_gradient_accumulation_equals_one_big_batch():
    """update_freq=2 over batches A, B gives the same gradient as the loss over A and B at once."""
    from preln.tasks import build_model, compute_loss, load_data

    require_data("multi30k")
    cfg = config.load(ROOT / "configs" / "tiny-translation.toml")
    data, tok = load_data(cfg)
    cfg = config.with_vocab(cfg, len(tok))
    torch.manual_seed(0)
    model = build_model(cfg.model).double()
    a, b = data.batch("train", 1, 0), data.batch("train", 1, 1)
    n = a.ntokens + b.ntokens
    for batch in (a, b):
        (compute_loss(model, batch, 0.1)[0] / n).backward()
    acc = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    la, lb = compute_loss(model, a, 0.1)[0], compute_loss(model, b, 0.1)[0]
    ((la + lb) / n).backward()
    for g1, p in zip(acc, model.parameters()):
        torch.testing.assert_close(g1, p.grad, rtol=0, atol=1e-12)


def test_divergence_is_recorded_not_raised(tmp_path):
    require_data("multi30k")
    cfg = config.load(
        ROOT / "configs" / "tiny-translation.toml",
        ["train.progress=false", "model.norm=post", "optim.lr=1e6", "train.max_updates=20"],
    )
    res = train(cfg, tmp_path / "r")
    status = json.loads((tmp_path / "r" / "status.json").read_text())
    assert res["status"] == status["status"] == "diverged"
    assert "non-finite" in status["reason"]
    assert metrics(tmp_path / "r", "diverged")


def test_sigterm_checkpoints_between_updates_and_resume_is_exact(tmp_path):
    """SIGTERM (or Ctrl-C) finishes the current update, checkpoints, exits 130; rerunning the
    same command completes with the losses of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    require_data("multi30k")
    args = [
        "train",
        str(ROOT / "configs" / "tiny-translation.toml"),
        "--set",
        "train.max_updates=200",
        "--set",
        "train.progress=false",
        "--set",
        "model.dropout=0.1",
        "--set",
        "train.valid_bleu=false",
    ]
    env = {**os.environ}
    straight = tmp_path / "straight"
    assert subprocess.run([sys.executable, "-m", "preln", *args, "--out", str(straight)], env=env).returncode == 0
    run = tmp_path / "stopped"
    proc = subprocess.Popen(
        [sys.executable, "-m", "preln", *args, "--out", str(run)], env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        if (run / "metrics.jsonl").exists() and len((run / "metrics.jsonl").read_text().splitlines()) >= 5:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 130, err
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "interrupted" and 0 < status["update"] < 200
    assert (run / "checkpoints" / f"update_{status['update']:07d}").is_dir()
    assert subprocess.run([sys.executable, "-m", "preln", *args, "--out", str(run)], env=env).returncode == 0
    assert [r["loss"] for r in metrics(run)][-50:] == [r["loss"] for r in metrics(straight)][-50:]
    assert json.loads((run / "status.json").read_text())["status"] == "completed"


def test_a_finished_run_can_be_extended_and_the_change_is_recorded(tmp_path, monkeypatch):
    """Raising train.max_updates continues a completed run (as fairseq's larger --max-update does)
    to the losses of a run that was that long from the start; what changed is in history.jsonl.
    The corpus named by another spelling of its path is the same corpus. What changes the
    computation stays refused, and so does a longer linear schedule (its decay depends on the end)."""
    require_data("multi30k")
    base = ["train.progress=false", "train.valid_bleu=false", "train.save_every=4"]
    tiny = ROOT / "configs" / "tiny-translation.toml"
    train(config.load(tiny, [*base, "train.max_updates=8"]), tmp_path / "straight")
    train(config.load(tiny, [*base, "train.max_updates=4"]), tmp_path / "r")
    from preln.data.corpus import resolve_path

    absolute = str(resolve_path("multi30k").resolve())
    res = train(config.load(tiny, [*base, "train.max_updates=8", f"data.path='{absolute}'"]), tmp_path / "r")
    assert res["status"] == "completed"
    assert [r["loss"] for r in metrics(tmp_path / "r")] == [r["loss"] for r in metrics(tmp_path / "straight")]
    (line,) = [json.loads(x) for x in (tmp_path / "r" / "history.jsonl").read_text().splitlines()]
    assert line["changed"] == ["train.max_updates: 4 -> 8"]
    assert config.load(tmp_path / "r" / "config.toml").train.max_updates == 8
    with pytest.raises(config.ConfigError, match="optim.lr"):
        train(config.load(tiny, [*base, "train.max_updates=12", "optim.lr=0.01"]), tmp_path / "r")
    lin = [*base, "schedule.kind='linear'"]
    train(config.load(tiny, [*lin, "train.max_updates=4"]), tmp_path / "lin")
    with pytest.raises(config.ConfigError, match=r"depends on the run's length.*add --set schedule.total=4"):
        train(config.load(tiny, [*lin, "train.max_updates=8"]), tmp_path / "lin")
    train(config.load(tiny, [*lin, "train.max_updates=8", "schedule.total=4"]), tmp_path / "lin")  # the advice works


def test_divergence_is_recorded_at_the_update_where_it_happened_whatever_the_log_interval(tmp_path):
    """The loop reads the device's sums only at log points; the non-finite update is still the one
    recorded (status, metrics), and nothing after it is validated or checkpointed."""
    require_data("multi30k")
    found = []
    for every in (1, 7):
        over = ["train.progress=false", "model.norm=post", "optim.lr=1e6", "train.max_updates=20"]
        over += [f"train.log_every={every}", "train.save_every=1", "train.valid_every=1", "train.valid_bleu=false"]
        cfg = config.load(ROOT / "configs" / "tiny-translation.toml", over)
        run = tmp_path / f"r{every}"
        train(cfg, run)
        status = json.loads((run / "status.json").read_text())
        (rec,) = metrics(run, "diverged")
        assert status["status"] == "diverged" and status["update"] == rec["update"]
        assert f"at update {rec['update']}" in status["reason"]
        saved = [int(p.name.split("_")[1]) for p in (run / "checkpoints").glob("update_*")]
        assert max(saved, default=0) < rec["update"]
        found.append(rec["update"])
    assert found[0] == found[1]


def test_compiled_and_eager_training_give_the_same_losses(tmp_path):
    """train.compile on the same batches (padded to multiples of 64, so only the batch size varies): the losses
    of 6 updates agree with eager ones to float32 round-off; the compiled graphs are logged."""
    require_data("multi30k")
    over = ["train.progress=false", "train.max_updates=6", "train.valid_bleu=false", "data.pad_to_multiple=64"]
    over += ["model.dropout=0.0", "train.log_every=1"]
    eager = config.load(ROOT / "configs" / "tiny-translation.toml", over)
    train(eager, tmp_path / "eager")
    train(config.override(eager, ["train.compile=true"]), tmp_path / "compiled")
    a, b = metrics(tmp_path / "eager"), metrics(tmp_path / "compiled")
    assert [r["update"] for r in a] == [r["update"] for r in b] == list(range(1, 7))
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-4)
    assert all(r["compiled_graphs"] >= 1 for r in b) and "compiled_graphs" not in a[0]


def test_pad_to_multiple_rounds_sequence_lengths_with_padding_only(tmp_path):
    from preln.tasks import load_data

    cfg = config.load(ROOT / "configs" / "tiny-translation.toml")
    plain, _ = load_data(cfg)
    padded, _ = load_data(config.override(cfg, ["data.pad_to_multiple=16"]))
    for k in range(5):
        a, b = plain.batch("train", 1, k).tensors, padded.batch("train", 1, k).tensors
        for name, fill in (("src", 0), ("tgt_in", 0), ("tgt_out", -100)):
            n = a[name].shape[1]
            assert b[name].shape[1] % 16 == 0 and b[name].shape[1] >= n
            assert b[name][:, :n].equal(a[name]) and (b[name][:, n:] == fill).all()


@pytest.mark.parametrize("task", ["translation", "mlm"])
def test_prefetched_batches_train_exactly_as_batches_built_on_the_spot(tmp_path, monkeypatch, task):
    """Across epoch ends and with two batches per update: the prefetched batches are the ones the
    trainer would have built itself (losses, gradient norms and final weights bit-identical)."""
    require_data("multi30k")
    sets = ["train.progress=false", "train.max_updates=14", "train.update_freq=2", "data.max_train_examples=300"]
    cfg = config.load(ROOT / "configs" / f"tiny-{task}.toml", sets)
    calls = []

    def on_the_spot(self, key, following):
        calls.append(key)
        return self.build(key)

    train(cfg, tmp_path / "prefetched")
    with monkeypatch.context() as m:
        m.setattr(Prefetch, "get", on_the_spot)
        train(cfg, tmp_path / "on_the_spot")
    rows = {name: metrics(tmp_path / name) for name in ("prefetched", "on_the_spot")}
    assert max(r["epoch"] for r in rows["prefetched"]) >= 2  # crossed an epoch end
    assert [(r["loss"], r["grad_norm"]) for r in rows["prefetched"]] == [
        (r["loss"], r["grad_norm"]) for r in rows["on_the_spot"]
    ]
    a, b = (load_run(tmp_path / name)[1].state_dict() for name in ("prefetched", "on_the_spot"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(calls) == 14


def test_prefetch_builds_the_announced_key_ahead_and_anything_else_on_the_spot():
    built = []

    def build(key):
        built.append(key)
        if key == "bad":
            raise ValueError("no such batch")
        return [key]

    p = Prefetch(build)
    assert p.get(1, 2) == [1] and p.get(2, 3) == [2] and p.get(5, "bad") == [5]
    with pytest.raises(ValueError, match="no such batch"):  # the thread's error, raised where it is used
        p.get("bad", None)
    p.close()
    assert sorted(built, key=str) == [1, 2, 3, 5, "bad"]  # 3 ahead, though never used
