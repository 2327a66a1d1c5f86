"""Telemetry (train.telemetry_every): the logged values against an independent computation on a
tiny model, and a log that resumes like metrics.jsonl."""

import json
import shutil

import pytest
import torch

from preln import config
from preln.config import ConfigError
from preln.data.tokenizer import PAD
from preln.fit import train
from preln.losses import label_smoothed_nll
from preln.tasks import build_model, load_data

from .conftest import ROOT, require_data

TINY = ROOT / "configs" / "tiny-translation.toml"


def rows(run, name="telemetry.jsonl"):
    return [json.loads(ln) for ln in (run / name).read_text().splitlines()]


def test_telemetry_equals_an_independent_computation(tmp_path):
    require_data("multi30k")
    sets = ["train.progress=false", "train.max_updates=1", "train.telemetry_every=1", "train.valid_bleu=false"]
    cfg = config.load(TINY, sets)
    train(cfg, tmp_path / "r")
    (rec,) = rows(tmp_path / "r")
    assert rec["update"] == 1
    # the same model from the same seed, the same first batch, by hand
    data, tok = load_data(cfg)
    torch.manual_seed(cfg.train.seed)
    model = build_model(config.with_vocab(cfg, len(tok)).model, PAD).train()
    t = data.batch("train", 1, 0).tensors
    loss, _ = label_smoothed_nll(model(t["src"], t["tgt_in"]), t["tgt_out"], cfg.train.label_smoothing)
    ntok = int((t["tgt_out"] != -100).sum())
    names = [n for n, p in model.named_parameters() if p.dim() == 2 and ".layers." in n]
    grads = torch.autograd.grad(loss / ntok, [dict(model.named_parameters())[n] for n in names])
    assert set(rec["grad_norm"]) == set(names) and len(names) == 2 * 6 + 2 * 10  # 2+2 layers: 4 / 10 matrices
    params = dict(model.named_parameters())
    for n, g in zip(names, grads):
        assert rec["grad_norm"][n] == pytest.approx(float(g.norm()), rel=1e-4), n
        # Adam's first step: m_hat = g, v_hat = g^2, so the step is lr * g / (|g| + eps)
        step = cfg.optim.lr * g / (g.abs() + cfg.optim.eps)
        assert rec["update_ratio"][n] == pytest.approx(float(step.norm() / params[n].detach().norm()), rel=1e-4), n
    # the residual stream's RMS entering each layer and leaving the last, all positions
    with torch.no_grad():
        x, mask = model.src_embed(t["src"]), (t["src"] != PAD)[:, None, None, :]
        enc = []
        for layer in model.encoder.layers:
            enc.append(float(x.pow(2).mean().sqrt()))
            x = layer(x, mask=mask)
        enc.append(float(x.pow(2).mean().sqrt()))
    assert rec["stream_rms"]["encoder"] == pytest.approx(enc, rel=1e-5)
    assert len(rec["stream_rms"]["decoder"]) == 3


def test_telemetry_resumes_like_the_metrics(tmp_path):
    """12 updates straight vs killed after the checkpoint at 6 and resumed: the same lines."""
    require_data("multi30k")
    base = ["train.progress=false", "train.max_updates=12", "train.telemetry_every=2", "train.valid_bleu=false"]
    train(config.load(TINY, base), tmp_path / "a")
    cfg_b = config.load(TINY, [*base, "train.save_every=6", "train.keep_last=5"])
    train(cfg_b, tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "update_0000012")
    (tmp_path / "b" / "status.json").unlink()
    train(cfg_b, tmp_path / "b")  # lines after update 6 are dropped on resume and redone
    a, b = rows(tmp_path / "a"), rows(tmp_path / "b")
    assert [r["update"] for r in b] == [2, 4, 6, 8, 10, 12]
    assert [{k: v for k, v in r.items() if k != "time"} for r in a] == [
        {k: v for k, v in r.items() if k != "time"} for r in b
    ]


def test_telemetry_is_off_by_default_and_checked():
    cfg = config.load(TINY)
    assert cfg.train.telemetry_every == 0
    with pytest.raises(ConfigError, match="train.telemetry_every must be >= 0"):
        config.load(TINY, ["train.telemetry_every=-1"])


def test_plot_draws_telemetry_heatmaps_and_overlaid_curves(tmp_path, capsys):
    from preln.cli import main

    require_data("multi30k")
    base = ["train.progress=false", "train.max_updates=6", "train.telemetry_every=2", "train.valid_every=3"]
    train(config.load(TINY, [*base, "train.valid_bleu=false"]), tmp_path / "pre")
    train(config.load(TINY, [*base, "train.valid_bleu=false", "model.norm='post'"]), tmp_path / "post")
    assert main(["plot", str(tmp_path / "post"), "--telemetry"]) == 0
    assert (tmp_path / "post" / "telemetry.png").stat().st_size > 10_000
    out = tmp_path / "curves.png"
    assert main(["plot", str(tmp_path / "pre"), str(tmp_path / "post"), "--metric", "loss", "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    from preln.lab.plots import _labels

    assert _labels([tmp_path / "pre", tmp_path / "post"]) == ["pre: norm=pre", "post: norm=post"]
    assert main(["plot", str(tmp_path / "pre"), "--metric", "bleu"]) == 2
    assert "--metric 'bleu': one of" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    # a resumed or extended run may still be trained in a folder that holds plots
    assert train(config.load(TINY, [*base, "train.valid_bleu=false"]), tmp_path / "pre")["status"] == "completed"


def test_tensorboard_holds_the_metrics_and_the_telemetry(tmp_path):
    require_data("multi30k")
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sets = ["train.progress=false", "train.max_updates=6", "train.valid_every=3", "train.tensorboard=true"]
    sets += ["train.telemetry_every=3"]
    train(config.load(TINY, sets), tmp_path / "r")
    (events,) = (tmp_path / "r" / "tensorboard").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events.parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "valid/valid_nll", "valid/valid_bleu_greedy"} <= tags
    assert "telemetry/grad_norm/decoder.layers.1.ffn.w2.weight" in tags and "telemetry/stream_rms/encoder/0" in tags
    logged = [(r["update"], r["loss"]) for r in rows(tmp_path / "r", "metrics.jsonl") if r["kind"] == "train"]
    assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in acc.Scalars("train/loss")] == logged
    valid = [(r["update"], r["valid_nll"]) for r in rows(tmp_path / "r", "metrics.jsonl") if r["kind"] == "valid"]
    assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in acc.Scalars("valid/valid_nll")] == valid
    assert [u for u, _ in valid] == [3, 6]
