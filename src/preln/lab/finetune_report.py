"""The fine-tuning part of a study with steps ``["train", "finetune"]`` (Fig. 5c/d): per task, dev
accuracy after every fine-tuning epoch (seeds thin, mean bold), and the final model's dev and test
accuracy (and F1) per pretraining condition, beside the random-init control and the task's shallow
reference (``finetune_reference`` in the study file). Reads run folders only."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .document import Block, Figure, Heading, Para, Table, code, mean_std, strong  # noqa: E402
from .metrics import metric  # noqa: E402
from .results import FinetuneRun, StudyResults  # noqa: E402
from .studies import CONTROL  # noqa: E402


def mean_by_epoch(runs: list[FinetuneRun]) -> list[tuple[int, float]]:
    """Mean dev accuracy over the runs that reached each epoch."""
    at: dict[int, list[float]] = {}
    for r in runs:
        for e, a in r.curve:
            at.setdefault(e, []).append(a)
    return [(e, sum(v) / len(v)) for e, v in sorted(at.items())]


def trained(runs: list[FinetuneRun]) -> list[FinetuneRun]:
    """The fine-tunings that left the constant classifier, as the scores count them (all of them
    where every one predicts one class, so a table or a curve still shows something)."""
    return [r for r in runs if not r.one_class] or runs


def per_model(res: StudyResults) -> list[str]:
    """Where each model was fine-tuned more than once, what a table's value is."""
    k = max((r.replicate for conds in res.finetune.values() for runs in conds.values() for r in runs), default=1)
    if k == 1:
        return []
    return [
        f" Each model was fine-tuned {k} times (seeds apart): a model's score is the mean of its fine-tunings, "
        "and the mean ± std and the claims' intervals are over the models (the independent replicates)."
    ]


def finetune_blocks(res: StudyResults) -> list[Block]:
    """The fine-tuning tables (one per task) under the figure ``<study>_finetune.png``."""
    blocks: list[Block] = [
        Heading("Fine-tuning (Fig. 5c, d)", 3),
        Figure(f"{res.name}_finetune.png", "fine-tuning"),
        Para(
            [
                "Each pretrained model (its newest checkpoint) fine-tuned on each task; ",
                code(CONTROL),
                " is the same architecture and vocabulary fine-tuned from random weights (the control that shows "
                "what pretraining gave). Accuracy in %, mean ± std over the fine-tuned runs; the final fine-tuned "
                "model on dev and test.",
            ]
            + per_model(res)
        ),
    ]
    head = ["pretrained", "fine-tuned runs", "dev accuracy by epoch (mean)", "dev accuracy", "test accuracy"]
    head += ["test F1", "test above the shallow reference"]
    reference = dict(res.study.reference)
    for task, conds in res.finetune.items():
        ref = reference.get(task)
        rows = []
        for cond, runs in conds.items():
            done = [r for r in runs if r.test or r.dev]
            skipped = [r for r in res.conditions.get(cond, []) if r.diverged]
            count = f"{len(done)}" + (f" ({len(skipped)} pretraining diverged: not fine-tuned)" if skipped else "")
            by_epoch = ", ".join(f"e{e}: {a:.1f}" for e, a in mean_by_epoch(trained(runs))) or "-"
            dev, acc, f1 = (
                list(res.sample(metric(f"{m}:{task}"), cond).values)
                for m in ("dev_accuracy", "test_accuracy", "test_f1")
            )
            failed = res.sample(metric(f"test_accuracy:{task}"), cond).one_class[0]
            count += f" ({failed} predict one class: left out)" if failed else ""
            above = "-" if ref is None or not acc else f"{sum(a > ref for a in acc)} of {len(acc)}"
            rows.append([cond, count, by_epoch, mean_std(dev, 1), mean_std(acc, 1), mean_std(f1, 1), above])
        shallow = f" (shallow six-feature logistic regression: {ref:g}%)" if ref is not None else ""
        blocks += [Para([strong(task), shallow]), Table(head, rows)]
    return blocks


def plot_finetune(res: StudyResults, path: Path) -> None:
    """Dev accuracy vs fine-tuning epoch, a panel per task (Fig. 5c, d); a condition's colour is
    its colour in the pretraining curves (its place among the study's conditions), the control
    grey and dashed. A fine-tuning that predicts one class is drawn dotted with x marks and left
    out of the bold mean, as the tables leave it out."""
    ft, reference = res.finetune, dict(res.study.reference)
    fig, axes = plt.subplots(1, max(len(ft), 1), figsize=(5.5 * max(len(ft), 1), 3.8), squeeze=False)
    order = list(res.conditions)
    conds = order + [c for t in ft.values() for c in t if c not in order]
    for ax, (task, by_cond) in zip(axes[0], ft.items()):
        for cond, runs in by_cond.items():
            color = "grey" if cond == CONTROL else f"C{conds.index(cond) % 10}"
            ls = "--" if cond == CONTROL else "-"
            for r in runs:
                if r.curve:
                    style = {"ls": ":", "marker": "x"} if r.one_class else {"ls": ls, "marker": "."}
                    ax.plot(*zip(*r.curve), color=color, alpha=0.3, lw=0.8, **style)
            failed = sum(r.one_class for r in runs)
            mean = mean_by_epoch(trained(runs))
            if mean:
                ax.plot(
                    *zip(*mean),
                    color=color,
                    ls=ls,
                    lw=2,
                    marker="o" if len(mean) == 1 else None,
                    label=f"{cond} ({len(runs)}" + (f"; {failed} one-class, left out)" if failed else ")"),
                )
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
