"""The fine-tuning part of a study with steps ``["train", "finetune"]`` (Fig. 5c/d): per task, dev
accuracy after every fine-tuning epoch (seeds thin, mean bold), and the final model's dev and test
accuracy (and F1) per pretraining condition, beside the random-init control and the task's shallow
reference (``finetune_reference`` in the study file). Reads run folders only."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..runs import RunFolder  # noqa: E402
from .document import Block, Figure, Heading, Para, Table, code, mean_std, strong  # noqa: E402
from .studies import CONTROL, finetune_folder  # noqa: E402


def _scores(folder: Path) -> dict:
    """One fine-tuning run: status, dev accuracy per epoch, and scores.json's dev/test."""
    run = RunFolder(folder, writer=False)
    status = (run.status() or {}).get("status", "missing")
    epochs = [(x["epoch"], x["valid_accuracy"]) for x in run.metrics() if "valid_accuracy" in x]
    try:
        final = json.loads((folder / "scores.json").read_text())
    except (OSError, ValueError):
        final = {}
    return {"status": status, "curve": epochs, "dev": final.get("valid", {}), "test": final.get("test", {})}


def finetune_results(sdir: Path, meta: dict) -> dict:
    """{task: {condition (or the control): [per seed {"seed", "status", "curve", "dev", "test"}]}}."""
    out: dict[str, dict[str, list[dict]]] = {}
    for job in meta.get("jobs", []):
        for step in job["steps"]:
            if ":" not in step:
                continue
            kind, task = step.split(":", 1)
            cond = CONTROL if kind == "control" else job["condition"]
            res = _scores(finetune_folder(sdir / job["folder"], step))
            out.setdefault(task, {}).setdefault(cond, []).append({"seed": job["seed"], **res})
    for task, conds in out.items():  # the control last
        out[task] = dict(sorted(conds.items(), key=lambda kv: kv[0] == CONTROL))
    return out


def metric_values(ft: dict, metric: str, condition: str) -> list[float]:
    """``test_accuracy:<task>``, ``dev_accuracy:<task>``, ``test_f1:<task>``: one value per run."""
    name, task = metric.split(":", 1)
    split, key = name.split("_", 1)  # split: "test" or "dev"
    return [r[split][key] for r in ft.get(task, {}).get(condition, []) if key in r[split]]


def mean_by_epoch(runs: list[dict]) -> list[tuple[int, float]]:
    """Mean dev accuracy over the runs that reached each epoch."""
    at: dict[int, list[float]] = {}
    for r in runs:
        for e, a in r["curve"]:
            at.setdefault(e, []).append(a)
    return [(e, sum(v) / len(v)) for e, v in sorted(at.items())]


def finetune_blocks(name: str, ft: dict, reference: dict, pretrain: dict) -> list[Block]:
    """The fine-tuning tables (one per task) under the figure ``<name>_finetune.png``."""
    blocks: list[Block] = [
        Heading("Fine-tuning (Fig. 5c, d)", 3),
        Figure(f"{name}_finetune.png", "fine-tuning"),
        Para(
            [
                "Each pretrained model (its newest checkpoint) fine-tuned on each task; ",
                code(CONTROL),
                " is the same architecture and vocabulary fine-tuned from random weights (the control that shows "
                "what pretraining gave). Accuracy in %, mean ± std over the pretraining seeds; the final fine-tuned "
                "model on dev and test.",
            ]
        ),
    ]
    head = ["pretrained", "fine-tuned runs", "dev accuracy by epoch (mean)", "dev accuracy", "test accuracy"]
    head += ["test F1", "test above the shallow reference"]
    for task, conds in ft.items():
        ref = reference.get(task)
        rows = []
        for cond, runs in conds.items():
            done = [r for r in runs if r["test"] or r["dev"]]
            skipped = [r for r in pretrain.get(cond, []) if r["status"] == "diverged"]
            count = f"{len(done)}" + (f" ({len(skipped)} pretraining diverged: not fine-tuned)" if skipped else "")
            by_epoch = ", ".join(f"e{e}: {a:.1f}" for e, a in mean_by_epoch(runs)) or "-"
            dev, acc, f1 = (
                metric_values(ft, f"{m}:{task}", cond) for m in ("dev_accuracy", "test_accuracy", "test_f1")
            )
            above = "-" if ref is None or not acc else f"{sum(a > ref for a in acc)} of {len(acc)}"
            rows.append([cond, count, by_epoch, mean_std(dev, 1), mean_std(acc, 1), mean_std(f1, 1), above])
        shallow = f" (shallow six-feature logistic regression: {ref:g}%)" if ref is not None else ""
        blocks += [Para([strong(task), shallow]), Table(head, rows)]
    return blocks


def plot_finetune(ft: dict, reference: dict, path: Path, order: list[str]) -> None:
    """Dev accuracy vs fine-tuning epoch, a panel per task (Fig. 5c, d); a condition's colour is
    its colour in the pretraining curves (its place in ``order``), the control grey and dashed."""
    fig, axes = plt.subplots(1, max(len(ft), 1), figsize=(5.5 * max(len(ft), 1), 3.8), squeeze=False)
    conds = order + [c for t in ft.values() for c in t if c not in order]
    for ax, (task, by_cond) in zip(axes[0], ft.items()):
        for cond, runs in by_cond.items():
            color = "grey" if cond == CONTROL else f"C{conds.index(cond) % 10}"
            ls = "--" if cond == CONTROL else "-"
            for r in runs:
                if r["curve"]:
                    ax.plot(*zip(*r["curve"]), color=color, ls=ls, alpha=0.3, lw=0.8, marker=".")
            epochs = sorted({e for r in runs for e, _ in r["curve"]})
            mean = [
                (
                    e,
                    sum(a for r in runs for ee, a in r["curve"] if ee == e)
                    / sum(ee == e for r in runs for ee, _ in r["curve"]),
                )
                for e in epochs
            ]
            if mean:
                ax.plot(*zip(*mean), color=color, ls=ls, lw=2, label=f"{cond} ({len(runs)})")
        ref = reference.get(task)
        if ref is not None and math.isfinite(ref):
            ax.axhline(ref, color="black", ls=":", lw=0.8, label=f"shallow reference ({ref:g}%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("fine-tuning epoch")
        ax.set_ylabel("dev accuracy (%)")
        ax.set_title(task, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
