"""``preln plot``: figures of plain run folders, from their files only.

``plot_runs``: one metric of any runs overlaid (validation or training curves, lr, BLEU), each
labelled by what differs between their configs. ``plot_telemetry``: layer x update heatmaps of
``telemetry.jsonl`` (the FFN W2 gradient norm, its update-to-weight ratio, the residual stream's
RMS), where Post-LN's large top-layer gradients at the start of training, and what warm-up does
to them, can be seen.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .. import config  # noqa: E402
from ..errors import RunFolderError, UsageError
from ..runs import RESUME_MAY_CHANGE, RunFolder  # noqa: E402

VALID = {"valid_loss", "valid_nll", "valid_ppl", "valid_bleu_greedy", "valid_bleu_greedy_tok_lc", "valid_accuracy"}
TRAIN = {"loss", "nll", "lr", "grad_norm", "tokens_per_s"}
W2 = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.ffn\.w2\.weight$")


LOGGING_ONLY = RESUME_MAY_CHANGE | {"train.tensorboard", "train.telemetry_every", "train.log_every"}
LOGGING_ONLY |= {"train.valid_every", "train.save_every", "train.keep_last", "train.valid_bleu"}
LOGGING_ONLY |= {"data.cache_dir", "train.loggers"}
"""Settings that change what is logged or where, not what is computed: never a curve's label."""


def _flat(cfg) -> dict[str, str]:
    return {f"{sec}.{k}": str(v) for sec, vals in config.to_dict(cfg).items() for k, v in vals.items()}


def _labels(runs: list[Path], most: int = 4) -> list[str]:
    """Each run by its folder name and the settings that differ between the runs (those that
    change what is computed; at most ``most`` of them, then how many more)."""
    flat = [_flat(config.load(r / "config.toml")) if (r / "config.toml").is_file() else {} for r in runs]
    rank = {"model": 0, "optim": 1, "schedule": 2, "train": 3, "data": 4}  # what a reader compares first
    keys = sorted({k for f in flat for k in f}, key=lambda k: (rank.get(k.split(".")[0], 5), k))
    differ = [k for k in keys if k not in LOGGING_ONLY and len({f.get(k) for f in flat}) > 1]
    labels = []
    for run, f in zip(runs, flat):
        shown = [f"{k.split('.', 1)[1]}={f.get(k, '-')}" for k in differ[:most]]
        more = f" +{len(differ) - most} more" if len(differ) > most else ""
        labels.append(f"{run.name}: {', '.join(shown)}{more}" if shown else run.name)
    return labels


def plot_runs(runs: list[Path], metric: str, x: str, out: Path) -> Path:
    """``metric`` (a key of metrics.jsonl's train or valid lines) against ``x`` (update, epoch or
    time in minutes since the run's first line), one line per run."""
    if metric not in VALID | TRAIN:
        raise UsageError(f"--metric {metric!r}: one of {', '.join(sorted(VALID | TRAIN))}")
    if x not in ("update", "epoch", "time"):
        raise UsageError(f"--x {x!r}: one of update, epoch, time")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    kind = "valid" if metric in VALID else "train"
    for run, label in zip(runs, _labels(runs)):
        need = {metric, "time" if x == "time" else x}
        rows = [r for r in RunFolder(run, writer=False).metrics() if r.get("kind") == kind and need <= r.keys()]
        if not rows:
            raise RunFolderError(f"{run}: no {kind} lines with {' and '.join(sorted(need))} in metrics.jsonl")
        t0 = rows[0].get("time", 0.0)
        xs = [(r.get("time", t0) - t0) / 60 if x == "time" else r[x] for r in rows]
        ax.plot(xs, [r[metric] for r in rows], marker="o" if kind == "valid" else None, ms=3, label=label)
    ax.set_xlabel({"update": "update", "epoch": "epoch", "time": "minutes"}[x])
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, loc="best")  # inside the axes: never pushed off the figure by a long label
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _grid(rows: list[dict], field: str, pick) -> tuple[np.ndarray, list[str]]:
    """(layers, updates) array of one telemetry field: encoder layers first, then decoder."""
    keys = sorted({k for r in rows for k in pick(r[field])}, key=lambda k: (k[0] != "encoder", k[1]))
    arr = np.array([[_number(pick(r[field]).get(k)) for r in rows] for k in keys], dtype=float)
    return arr, [f"{s[:3]} {i + 1}" for s, i in keys]


def _number(v) -> float:
    """A logged value as a float; anything else (a damaged line) is a gap in the picture."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def _w2(values: dict) -> dict:
    out = {}
    for name, v in values.items():
        m = W2.match(name)
        if m:
            out[(m.group(1), int(m.group(2)))] = v
    return out


def _stream(values: dict) -> dict:
    return {(stack, i): v for stack, vs in values.items() if isinstance(vs, list) for i, v in enumerate(vs)}


def plot_telemetry(run: Path, out: Path) -> Path:
    fields = ("update", "grad_norm", "update_ratio", "stream_rms")
    rows = [r for r in RunFolder(run, writer=False).metrics("telemetry.jsonl") if all(k in r for k in fields)]
    rows = [r for r in rows if isinstance(r["update"], int) and all(isinstance(r[k], dict) for k in fields[1:])]
    if not rows or not all(r[k] for r in rows for k in fields[1:]):
        raise FileNotFoundError(
            f"{run}: no complete telemetry.jsonl lines (update, grad_norm, update_ratio, stream_rms; "
            "train with --set train.telemetry_every=N)"
        )
    updates = [r["update"] for r in rows]
    panels = [
        ("grad_norm", _w2, "FFN W2 gradient norm"),
        ("update_ratio", _w2, "FFN W2 ||dw|| / ||w||"),
        ("stream_rms", _stream, "residual stream RMS (entering layer l; last: leaving)"),
    ]
    grids = [_grid(rows, field, pick) for field, pick, _ in panels]
    if not all(names for _, names in grids):
        raise RunFolderError(f"{run}: telemetry.jsonl names no layer preln measures (a file of another kind?)")
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
    for ax, (_, _, title), (arr, names) in zip(axes, panels, grids):
        positive = arr[np.isfinite(arr) & (arr > 0)]
        norm = matplotlib.colors.LogNorm(positive.min(), positive.max()) if positive.size else None
        im = ax.imshow(np.where(arr > 0, arr, np.nan), aspect="auto", origin="lower", norm=norm, cmap="viridis")
        ticks = np.linspace(0, len(updates) - 1, min(len(updates), 8)).round().astype(int)
        ax.set_xticks(ticks, [str(updates[i]) for i in ticks])
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set(xlabel="update", title=title)
        fig.colorbar(im, ax=ax)
    fig.suptitle(f"telemetry of {run.name}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
