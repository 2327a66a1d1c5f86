"""Learning-rate sensitivity (Wortsman et al. 2023, "Small-scale proxies for large-scale Transformer
training instabilities", arXiv 2309.14322): the final validation loss against the peak learning
rate on a log grid, one curve per setting (placement, warm-up, size), and the curve's LR
sensitivity

    LRS = mean over the lr grid of [ min(loss(lr), loss_0) - min over the grid of loss ]

with the loss capped at ``loss_0``, the loss at initialization (here ln V, the uniform
distribution's NLL over the vocabulary, which a freshly initialized model is near), so that a
diverged run counts as no progress at all. 0: the same loss at every lr; larger: more sensitive.

A curve is a grid's conditions with their ``lr=`` factor left out (``sweep,norm=post,warmup=none``
for ``sweep,norm=post,warmup=none,lr=0.001``); its LRS is computed per seed (a seed's runs at every
lr are one replicate of the curve) and compared across curves by the claims' rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .results import Run, Sample, StudyResults
from .studies import LR_FACTOR, curve_name


@dataclass(frozen=True)
class Curve:
    name: str
    group: str
    lrs: tuple[float, ...]
    """The grid's peak learning rates, ascending."""
    runs: dict[float, list[Run]]
    """Per lr, the runs (seeds) of that condition."""


def curves(res: StudyResults) -> dict[str, Curve]:
    """The study's lr sweeps: every condition with an ``lr=`` factor, grouped into curves."""
    out: dict[str, dict[float, list[Run]]] = {}
    groups: dict[str, str] = {}
    for cond, runs in res.conditions.items():
        name, m = curve_name(cond), LR_FACTOR.search(cond)
        if name is None:
            continue
        try:
            lr = float(m.group(1))
        except ValueError:
            continue
        out.setdefault(name, {})[lr] = runs
        groups[name] = runs[0].group if runs else ""
    return {n: Curve(n, groups[n], tuple(sorted(by)), dict(sorted(by.items()))) for n, by in out.items()}


def final_loss(run: Run, cap: float) -> float | None:
    """A run's loss for the sweep: its last validation NLL capped at ``cap``; a diverged run is
    ``cap``; None for a run without a result (not finished)."""
    if run.diverged:
        return cap
    if not run.completed or not run.curve:
        return None
    v = run.curve[-1][1]
    return min(v, cap) if math.isfinite(v) else cap


def initial_loss(run: Run) -> float:
    """ln V of the run's vocabulary (from its config), the cap of the sweep's losses."""
    import tomllib

    try:
        vocab = tomllib.loads((run.folder / "config.toml").read_text())["model"]["vocab_size"]
    except (OSError, KeyError, TypeError, ValueError):  # ValueError: not TOML, not UTF-8 (damaged)
        vocab = 0
    return math.log(vocab) if vocab and vocab > 1 else math.inf


def per_seed(c: Curve) -> dict[int, list[float | None]]:
    """Per seed, its capped final loss at each lr of the grid (None: no result)."""
    any_run = next(r for runs in c.runs.values() for r in runs)
    cap = initial_loss(any_run)
    seeds = sorted({r.seed for runs in c.runs.values() for r in runs})
    out = {}
    for s in seeds:
        row = []
        for lr in c.lrs:
            run = next((r for r in c.runs[lr] if r.seed == s), None)
            row.append(None if run is None else final_loss(run, cap))
        out[s] = row
    return out


def lrs(losses: list[float]) -> float:
    """Wortsman et al.'s LR sensitivity of one seed's capped losses over the grid."""
    best = min(losses)
    return sum(x - best for x in losses) / len(losses)


def sample(res: StudyResults, curve: str) -> Sample:
    """The curve's LR sensitivity, one value per seed whose every lr has a result."""
    c = curves(res).get(curve)
    if c is None:
        return Sample((), 0)
    rows = per_seed(c)
    values = tuple(lrs(row) for row in rows.values() if all(x is not None for x in row))
    return Sample(values, len(rows), 0, len(rows) - len(values))  # diverged runs are in it, capped


def plot(res: StudyResults, path) -> None:
    """Final validation loss against peak lr (log scale), a line per curve (mean over seeds, each
    seed thin), a panel per grid (model size); the cap (ln V) dashed; x: a diverged run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cs = curves(res)
    groups = list(dict.fromkeys(c.group for c in cs.values()))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.0), squeeze=False)
    for ax, group in zip(axes[0], groups):
        for i, c in enumerate(x for x in cs.values() if x.group == group):
            rows = per_seed(c)
            color = f"C{i % 10}"
            for row in rows.values():
                pts = [(lr, y) for lr, y in zip(c.lrs, row) if y is not None]
                if pts:
                    ax.plot(*zip(*pts), color=color, alpha=0.3, lw=0.8)
            means = []
            for k, lr in enumerate(c.lrs):
                ys = [row[k] for row in rows.values() if row[k] is not None]
                if ys:
                    means.append((lr, sum(ys) / len(ys)))
            label = c.name[len(group) + 1 :] if group and c.name.startswith(group + ",") else c.name
            if means:
                ax.plot(*zip(*means), color=color, lw=2, marker="o", ms=3, label=label)
            for lr in c.lrs:
                div = [r for r in c.runs[lr] if r.diverged]
                if div:
                    ax.plot([lr], [initial_loss(div[0])], "x", color=color, ms=8)
        cap = next(
            (initial_loss(r) for c in cs.values() if c.group == group for rs in c.runs.values() for r in rs), None
        )
        if cap is not None and math.isfinite(cap):
            ax.axhline(cap, color="grey", ls="--", lw=0.8, label="cap: ln V (initialization)")
        runs = [r for c in cs.values() if c.group == group for rs in c.runs.values() for r in rs]
        uni = [r.unigram_nll for r in runs if r.unigram_nll is not None]
        if uni:  # masked LM: below this line a run has learned context
            ax.axhline(sum(uni) / len(uni), color="black", ls=":", lw=0.8, label="unigram model")
        ax.set_xscale("log")
        grid = sorted({lr for c in cs.values() if c.group == group for lr in c.lrs})
        ax.set_xticks(grid, [f"{lr:g}" for lr in grid])
        ax.minorticks_off()
        ax.set_xlabel("peak learning rate")
        ax.set_ylabel("final validation NLL (capped)")
        ax.set_title(group or res.study.title, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table_rows(res: StudyResults) -> tuple[list[str], list[list[str]]]:
    """(header, rows): per curve its mean capped loss at each lr, its LRS with a 95% interval over
    seeds, the diverged runs and the best lr."""
    from .document import mean_std
    from .stats import mean_interval

    cs = curves(res)
    grid = sorted({lr for c in cs.values() for lr in c.lrs})
    head = ["curve", "seeds", *(f"lr {lr:g}" for lr in grid), "LR sensitivity (nats)", "diverged runs", "best lr"]
    rows = []
    for c in cs.values():
        per = per_seed(c)
        cells = []
        for lr in grid:
            k = c.lrs.index(lr) if lr in c.lrs else None
            ys = [row[k] for row in per.values() if k is not None and row[k] is not None]
            cells.append(f"{sum(ys) / len(ys):.2f}" if ys else "-")
        s = sample(res, c.name)
        iv = mean_interval(s.values) if len(s.values) > 1 else None
        value = mean_std(list(s.values)) + (f" [{iv.lo:.2f}, {iv.hi:.2f}]" if iv else "") if s.values else "-"
        div = sum(r.diverged for rs in c.runs.values() for r in rs)
        total = sum(len(rs) for rs in c.runs.values())
        means = [(float(x), lr) for x, lr in zip(cells, grid) if x != "-"]
        best = f"{min(means)[1]:g}" if means else "-"
        rows.append([c.name, str(len(per)), *cells, value, f"{div} of {total}", best])
    return head, rows
