"""TensorBoard event files in the run folder (``train.tensorboard = true``; the optional extra
``pip install 'preln[tensorboard]'``): the same numbers as ``metrics.jsonl`` and
``telemetry.jsonl``, for ``tensorboard --logdir runs/``. A resumed run purges the events after its
checkpoint's update, as it truncates its JSON logs."""

from __future__ import annotations

from pathlib import Path

from .config import ConfigError

SKIP = {"kind", "update", "epoch", "time"}


class TensorBoard:
    def __init__(self, folder: Path, resumed_at: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "train.tensorboard = true needs the tensorboard package: pip install 'preln[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(str(folder / "tensorboard"), purge_step=resumed_at + 1 if resumed_at else None)

    def scalars(self, prefix: str, record: dict, step: int) -> None:
        """Every number of ``record`` as ``prefix/key``; nested dicts (telemetry) as ``prefix/key/sub``."""
        for key, value in record.items():
            if key in SKIP:
                continue
            if isinstance(value, dict):
                self.scalars(f"{prefix}/{key}", value, step)
            elif isinstance(value, list):
                self.scalars(f"{prefix}/{key}", {str(i): v for i, v in enumerate(value)}, step)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
