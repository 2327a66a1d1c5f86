"""Where a run's numbers go besides its JSON logs: the trackers named by ``train.loggers``
("tensorboard", "wandb", "mlflow"; ``train.tensorboard = true`` adds "tensorboard"), each an
optional extra, behind one small interface the training loop calls: ``log`` (a line of
metrics.jsonl or telemetry.jsonl, under its kind) and ``finish`` (the end: status and scores). Each
is given the run's resolved config at its start: TensorBoard as text and, at the end, as
hyper-parameters (HParams) with the final scores; W&B as the run's config; MLflow as parameters.
A resumed run continues the same tracked run (TensorBoard purges the events after its checkpoint,
as the JSON logs are truncated; W&B resumes its id; MLflow reopens the run id kept in the folder).
Adding a tracker: a class with ``log`` and ``finish`` and an entry in ``LOGGERS``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol

from . import config
from .config import ConfigError, RunConfig

SKIP = {"kind", "update", "epoch", "time"}


class Logger(Protocol):
    def log(self, kind: str, record: dict, step: int) -> None: ...

    def finish(self, status: str, scores: dict) -> None: ...


def numbers(record: dict, prefix: str) -> dict[str, float]:
    """Every number of ``record`` as ``prefix/key``; nested dicts and lists (telemetry) as
    ``prefix/key/sub``."""
    out = {}
    for key, value in record.items():
        if key in SKIP:
            continue
        if isinstance(value, list):
            value = {str(i): v for i, v in enumerate(value)}
        if isinstance(value, dict):
            out |= numbers(value, f"{prefix}/{key}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}/{key}"] = float(value)
    return out


def hparams(cfg: RunConfig) -> dict[str, str | int | float | bool]:
    """The config flat (``model.norm``, ``optim.lr``, ...), lists as text: what trackers filter by."""
    flat = {}
    for section, fields in config.to_dict(cfg).items():
        for key, value in fields.items():
            flat[f"{section}.{key}"] = value if isinstance(value, (str, int, float, bool)) else str(value)
    return flat


class TensorBoard:
    def __init__(self, folder: Path, cfg: RunConfig, resumed_at: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "train.loggers 'tensorboard' needs the tensorboard package: pip install tensorboard"
            ) from None
        self.cfg = cfg
        self.writer = SummaryWriter(str(folder / "tensorboard"), purge_step=resumed_at + 1 if resumed_at else None)
        self.writer.add_text("config", "```toml\n" + config.dumps(cfg) + "```", resumed_at)

    def log(self, kind: str, record: dict, step: int) -> None:
        for tag, value in numbers(record, kind).items():
            self.writer.add_scalar(tag, value, step)

    def finish(self, status: str, scores: dict) -> None:
        final = numbers(scores, "final") or {"final/none": 0.0}  # HParams needs a metric to show a row
        self.writer.add_hparams(hparams(self.cfg) | {"status": status}, final, run_name="hparams")
        self.writer.flush()
        self.writer.close()


def _stable_id(folder: Path) -> str:
    """The same id for the same run folder, so a resumed run continues its tracked run."""
    return hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]


class Wandb:
    """Offline unless ``WANDB_MODE`` says otherwise (an online run needs ``wandb login``); the
    files go to ``RUN/wandb/`` (``wandb sync`` uploads them); project from ``WANDB_PROJECT``
    (default "preln")."""

    def __init__(self, folder: Path, cfg: RunConfig, resumed_at: int) -> None:
        try:
            import wandb
        except ImportError:
            raise ConfigError("train.loggers 'wandb' needs the wandb package: pip install wandb") from None
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "preln"),
            name=folder.name,
            id=_stable_id(folder),
            resume="allow",
            dir=str(folder),
            mode=os.environ.get("WANDB_MODE", "offline"),
            config=hparams(cfg),
        )

    def log(self, kind: str, record: dict, step: int) -> None:
        self.run.log(numbers(record, kind), step=step)

    def finish(self, status: str, scores: dict) -> None:
        self.run.summary.update({"status": status, **numbers(scores, "final")})
        self.run.finish(exit_code=0 if status == "completed" else 1)


class Mlflow:
    """``MLFLOW_TRACKING_URI`` if set, else a file store in ``RUN/mlruns/`` (MLflow's local
    store; ``mlflow ui --backend-store-uri RUN/mlruns``); experiment from ``MLFLOW_EXPERIMENT_NAME``
    (default "preln"); the run id is kept in ``RUN/mlflow_run_id`` for resumes."""

    def __init__(self, folder: Path, cfg: RunConfig, resumed_at: int) -> None:
        try:
            import mlflow
        except ImportError:
            raise ConfigError("train.loggers 'mlflow' needs the mlflow package: pip install mlflow-skinny") from None
        if "MLFLOW_TRACKING_URI" not in os.environ:  # the local file store, which MLflow asks to allow
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri((folder / "mlruns").resolve().as_uri())
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "preln"))
        kept = folder / "mlflow_run_id"
        run_id = kept.read_text().strip() if kept.is_file() else None
        self.mlflow, self.run = mlflow, mlflow.start_run(run_id=run_id, run_name=folder.name)
        if run_id is None:
            kept.write_text(self.run.info.run_id + "\n")
            mlflow.log_params(hparams(cfg))

    def log(self, kind: str, record: dict, step: int) -> None:
        self.mlflow.log_metrics(numbers(record, kind), step=step)

    def finish(self, status: str, scores: dict) -> None:
        self.mlflow.log_metrics(numbers(scores, "final"))
        self.mlflow.end_run("FINISHED" if status == "completed" else "FAILED" if status == "diverged" else "KILLED")


LOGGERS = {"tensorboard": TensorBoard, "wandb": Wandb, "mlflow": Mlflow}
PACKAGES = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow-skinny"),
}


def names(cfg: RunConfig) -> list[str]:
    return list(dict.fromkeys([*cfg.train.loggers, *(["tensorboard"] if cfg.train.tensorboard else [])]))


def check(cfg: RunConfig) -> None:
    """Refuse, before anything is written, trackers whose package is not installed."""
    import importlib.util

    for name in names(cfg):
        module, package = PACKAGES[name]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a module set to None (tests), or a broken install
            found = False
        if not found:
            raise ConfigError(f"train.loggers {name!r} needs the {module} package: pip install {package}")


def open_loggers(cfg: RunConfig, folder: Path, resumed_at: int) -> list[Logger]:
    """The trackers ``cfg`` names, started."""
    return [LOGGERS[name](folder, cfg, resumed_at) for name in names(cfg)]
