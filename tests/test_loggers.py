"""Trackers behind one interface (``train.loggers``): TensorBoard with the config as text and
HParams, Weights & Biases offline, MLflow's local store; each gets the run's numbers, its config,
and its end; a resumed run continues the same tracked run. Read back with each library's own
reader (W&B offline: the run file's records)."""

import glob
import json

import pytest

from preln import config
from preln.fit import train

from .conftest import ROOT, require_data

SETS = ["train.max_updates=4", "train.log_every=1", "train.progress=false", "train.valid_bleu=false"]


def tiny(tmp_path, loggers: str, updates: int = 4):
    require_data("multi30k")
    sets = [*SETS, f"train.loggers={loggers}", f"train.max_updates={updates}"]
    return train(config.load(ROOT / "configs" / "tiny-translation.toml", sets), tmp_path / "run")


def test_tensorboard_gets_the_numbers_the_config_and_hparams(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = tiny(tmp_path, '["tensorboard"]')
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"tensors": 0}).Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    assert "valid/valid_nll" in events.Tags()["scalars"]
    assert "config/text_summary" in events.Tags()["tensors"]
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert 'norm = "pre"' in text
    hp = EventAccumulator(glob.glob(str(tmp_path / "run" / "tensorboard" / "hparams"))[0]).Reload()
    final = hp.Scalars("final/valid_nll")
    assert final and final[0].value == pytest.approx(res["valid_nll"], rel=1e-6)


def test_wandb_offline_gets_the_config_history_and_summary_and_resumes_the_same_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is the default: no login, no network
    tiny(tmp_path, '["wandb"]')
    (first,) = glob.glob(str(tmp_path / "run" / "wandb" / "offline-run-*" / "run-*.wandb"))
    data = open(first, "rb").read()
    for key in (b"train/loss", b"valid/valid_nll", b"final/valid_nll", b"model.norm", b"optim.lr"):
        assert key in data, key
    tiny(tmp_path, '["wandb"]', updates=6)  # resumed: the same W&B run id
    runs = sorted(glob.glob(str(tmp_path / "run" / "wandb" / "offline-run-*" / "run-*.wandb")))
    assert len({p.rsplit("run-", 1)[1] for p in runs}) == 1 and len(runs) >= 1


def test_mlflow_local_store_gets_params_metrics_and_status_and_resumes_the_same_run(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tiny(tmp_path, '["mlflow"]')
    run_id = (tmp_path / "run" / "mlflow_run_id").read_text().strip()
    client = mlflow.tracking.MlflowClient(tracking_uri=(tmp_path / "run" / "mlruns").resolve().as_uri())
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and got.data.params["model.norm"] == "pre"
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [1, 2, 3, 4]
    tiny(tmp_path, '["mlflow"]', updates=6)  # resumed: the same MLflow run, its history extended
    assert (tmp_path / "run" / "mlflow_run_id").read_text().strip() == run_id
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")][-2:] == [5, 6]
    history = [json.loads(x) for x in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert history and all("train.loggers" not in str(h.get("changed", "")) for h in history)


def test_a_missing_tracker_package_is_one_line(tmp_path, monkeypatch, capsys):
    import sys

    from preln.cli import main

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    require_data("multi30k")
    sets = [x for s in [*SETS, 'train.loggers=["wandb"]'] for x in ("--set", s)]
    assert main(["train", str(ROOT / "configs" / "tiny-translation.toml"), "--out", str(tmp_path / "r"), *sets]) == 2
    assert "needs the wandb package: pip install wandb" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before the run folder was made
