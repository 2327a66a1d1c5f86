"""Figures and the summary document of ``preln analyze`` results, from its files (never from live state).

``analysis.json`` -> ``fig3_layers.png`` (Fig. 3a/b analogue), ``fig3_depth.png`` (Fig. 3c/d and
the width sweep), ``lemma2.png`` and ``summary.md``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .document import Block, Figure, Heading, Para, Table, code, strong, to_markdown  # noqa: E402

COLORS = {"post": "tab:red", "pre": "tab:blue", "after": "tab:orange"}
PLACEMENT_COLORS = {"post": "tab:red", "pre": "tab:blue", "sandwich": "tab:green", "deepnorm": "tab:purple"}
PLACEMENT_COLORS |= {"admin": "tab:brown", "rezero": "tab:gray", "mix": "tab:olive"}


def _layer_axis(col_enc: dict, col_dec: dict) -> tuple[list[int], list[float], list[float]]:
    """Encoder layers 1..L then decoder layers L+1..2L on one axis, as in the paper's Fig. 3."""
    mean = col_enc["mean"] + col_dec["mean"]
    std = col_enc["std"] + col_dec["std"]
    return list(range(1, len(mean) + 1)), mean, std


def plot_layers(res: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, mat in zip(axes, ("W1", "W2")):
        curves = [("post", "Post-LN (init)", res["fig3"]["post"]), ("pre", "Pre-LN (init)", res["fig3"]["pre"])]
        if "after_warmup" in res:
            curves.append(("after", f"Post-LN (after {res['warmup_updates']} warm-up updates)", res["after_warmup"]))
        for key, label, table in curves:
            x, m, s = _layer_axis(table["encoder"][mat], table["decoder"][mat])
            ax.errorbar(x, m, yerr=s, marker="o", capsize=3, color=COLORS[key], label=label)
        L = len(res["fig3"]["post"]["encoder"][mat]["mean"])
        ax.axvline(L + 0.5, color="grey", lw=0.8, ls="--")
        ax.set_xlabel(f"layer (1-{L} encoder, {L + 1}-{2 * L} decoder)")
        ax.set_ylabel(f"||E[grad {mat}]||_F")
        ax.set_title(f"FFN {mat}: expected-gradient norm per layer")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_depth_width(res: dict, path: Path) -> None:
    panels = [p for p in ("depth", "width") if p in res]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, part in zip(axes[0], panels):
        xs = res[part]["depths" if part == "depth" else "widths"]
        for norm in ("post", "pre"):
            r = res[part][norm]["decoder"] if part == "depth" else res[part][norm]
            fit = r["fit"]
            for x, vals in zip(xs, r["values"]):
                ax.scatter([x] * len(vals), vals, s=8, alpha=0.35, color=COLORS[norm])
            ax.plot(
                xs,
                r["mean"],
                marker="o",
                color=COLORS[norm],
                label=f"{norm.capitalize()}-LN: slope {fit['slope']:+.2f} "
                f"[{fit['ci95'][0]:+.2f}, {fit['ci95'][1]:+.2f}]",
            )
            if part == "depth":  # Theorem 1's slopes, through the first measured mean
                slope = {"post": 0.0, "pre": -0.5}[norm]
                ys = [r["mean"][0] * (x / xs[0]) ** slope for x in xs]
                ax.plot(xs, ys, ls="--", lw=1, color=COLORS[norm], label=f"theory: slope {slope:+.1f}")
        if part == "width":  # the shape of Theorem 1's bound, d sqrt(ln d), through Post-LN's first mean
            ref = [x * math.sqrt(math.log(x)) for x in xs]
            first = res["width"]["post"]["mean"][0]
            ys = [first * v / ref[0] for v in ref]
            ax.plot(xs, ys, ls=":", color="grey", label=f"d sqrt(ln d): slope {res['width']['theory_slope']:+.2f}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        if part == "depth":
            ax.set_xlabel("layers L (encoder = decoder)")
            ax.set_title("last decoder layer W2 gradient vs depth\n(theory: Post ~0, Pre -1/2)")
        else:
            ax.set_xlabel("d_model")
            ax.set_title(
                f"last decoder layer W2 gradient vs width\n(d sqrt(ln d): slope {res['width']['theory_slope']:+.2f})"
            )
        log_axes(ax, xs)
        ax.set_ylabel("||E[grad W2]||_F")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def log_axes(ax, xs: list) -> None:
    """Readable log-log axes: the measured x values as x ticks, y ticks at 1, 2, 5 x 10^k with
    plain numbers."""
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.3g"))
    ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def plot_lemma2(res: dict, path: Path) -> None:
    lt = res["lemma2_theory"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    ax.plot(lt["post"]["layers"], lt["post"]["mean"], marker="o", color=COLORS["post"], label="Post-LN measured")
    ax.plot(lt["post"]["layers"], lt["post"]["theory"], ls="--", color=COLORS["post"], label="Post-LN theory 1.5")
    ax.plot(lt["pre"]["layers"], lt["pre"]["mean"], marker="o", color=COLORS["pre"], label="Pre-LN measured")
    ax.fill_between(
        lt["pre"]["layers"],
        lt["pre"]["lower"],
        lt["pre"]["upper"],
        color=COLORS["pre"],
        alpha=0.15,
        label="Pre-LN bounds (1+l/2 .. 1+3l/2)",
    )
    ax.set_title(f"Lemma 2, theory setting (d={lt['d']}, {lt['seeds']} seeds)")
    ax.set_xlabel("layer l")
    ax.set_ylabel("E||x_l||^2 / d")
    ax.legend(fontsize=8)
    ax = axes[1]
    for norm in ("post", "pre"):
        for stack, ls in (("encoder", "-"), ("decoder", ":")):
            v = res["lemma2_real"][norm][stack]
            start = 0 if norm == "pre" else 1
            ax.plot(
                range(start, start + len(v)),
                v,
                ls=ls,
                marker="o",
                color=COLORS[norm],
                label=f"{norm.capitalize()}-LN {stack}",
            )
    ax.set_title("the same statistic on the real model at init")
    ax.set_xlabel("layer l")
    ax.set_ylabel("E||x_l||^2 / d")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_placements(res: dict, path: Path) -> None:
    """One line per placement: W2 gradient per layer, last-layer W2 gradient vs depth, residual
    stream growth."""
    pl = res["placements"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for norm in pl["placements"]:
        r, color = pl[norm], PLACEMENT_COLORS.get(norm)
        x, m, _ = _layer_axis(r["layers"]["encoder"]["W2"], r["layers"]["decoder"]["W2"])
        axes[0].plot(x, [v if v > 0 else float("nan") for v in m], marker="o", color=color, label=norm)
        dec = r["depth"]["decoder"]
        fit = dec["fit"]
        slope = "slope n/a (zero gradient)" if fit is None else f"slope {fit['slope']:+.2f}"
        axes[1].plot(pl["depths"], [v if v > 0 else float("nan") for v in dec["mean"]], marker="o", color=color)
        axes[1].plot([], [], color=color, label=f"{norm}: {slope}")
        enc = r["stream"]["encoder"]
        axes[2].plot(range(len(enc)), enc, marker="o", color=color, label=norm)
    L = len(pl[pl["placements"][0]]["layers"]["encoder"]["W2"]["mean"])
    axes[0].axvline(L + 0.5, color="grey", lw=0.8, ls="--")
    axes[0].set(yscale="log", xlabel=f"layer (1-{L} encoder, {L + 1}-{2 * L} decoder)", ylabel="||E[grad W2]||_F")
    axes[0].set_title("FFN W2 expected-gradient norm per layer\n(at initialization)")
    axes[1].set(xscale="log", yscale="log", xlabel="layers per stack", ylabel="||E[grad W2]||_F, last decoder layer")
    log_axes(axes[1], pl["depths"])
    axes[1].set_title("last W2 gradient vs depth\n(theory: Post-LN slope ~0, Pre-LN -1/2)")
    axes[2].set(yscale="log", xlabel="layer l (encoder)", ylabel="E||x_l||^2 / d")
    axes[2].xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[2].set_title("residual stream entering layer l\n(and leaving the last)")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def placements_table(res: dict) -> list[Block]:
    pl = res["placements"]
    rows = []
    for norm in pl["placements"]:
        r = pl[norm]
        m = r["layers"]["decoder"]["W2"]["mean"]
        ratio = f"{m[-1] / m[0]:.2f}" if m[0] > 0 else "n/a (zero gradient)"
        fits = [r["depth"][s]["fit"] for s in ("decoder", "encoder")]
        slopes = [
            "n/a (zero gradient)" if f is None else f"{f['slope']:+.2f} [{f['ci95'][0]:+.2f}, {f['ci95'][1]:+.2f}]"
            for f in fits
        ]
        rows.append([norm, ratio, *slopes, f"{r['stream']['encoder'][-1]:.3g}, {r['stream']['decoder'][-1]:.3g}"])
    head = ["placement", "W2 grad, last / first decoder layer", "depth slope, decoder", "depth slope, encoder"]
    return [
        Para(
            "Placements side by side at initialization (same model, batches and seeds): the FFN W2 gradient of the "
            "last decoder layer over the first's, its log-log slope against depth with a 95% seed-bootstrap "
            "interval (theory: Post-LN ~0, Pre-LN -1/2), and the residual stream E‖x_L‖² / d leaving the last layer."
        ),
        Table([*head, "stream E‖x_L‖²/d encoder, decoder"], rows),
    ]


def figures(res: dict) -> list[str]:
    """The figures ``write_analysis_report`` draws for these results, in the summary's order."""
    parts = [("fig3", "fig3_layers.png"), ("lemma2_theory", "lemma2.png"), ("placements", "placements.png")]
    names = [name for key, name in parts if key in res]
    if "depth" in res or "width" in res:
        names.insert(1 if "fig3" in res else 0, "fig3_depth_width.png")
    return names


def _verdict(p: dict):
    """A prediction's verdict and reason (an ``analysis.json`` before 0.3 has only ``holds``)."""
    if "verdict" not in p:
        return {True: "yes", False: strong("no"), None: "(information)"}[p["holds"]]
    if not p["verdict"]:
        return "(information)"
    word = strong("no") if p["verdict"] == "no" else p["verdict"]
    return [word, f" ({p['reason']})"]


def summary_blocks(res: dict, figure_dir: str = "") -> list[Block]:
    """The summary of an analysis as a document: its data, the predictions with their verdicts,
    the depth/width/placement tables, its figures (paths under ``figure_dir``)."""
    blocks: list[Block] = [
        Heading("preln analyze: gradients and hidden states at initialization", 1),
        Para([f"Data: {res['data']}. Preset ", code(res["preset"]), "; settings in ", code("analysis.json"), "."]),
    ]
    if res.get("synthetic"):
        blocks.append(Para(strong("These numbers come from SYNTHETIC random tokens, not a corpus.")))
    blocks.append(
        Para(
            "Each verdict is its rule's (docs/statistics.md), read on a 95% Student t interval over seeds (for "
            "slopes, of the least-squares slope of the per-seed means): a direction by a bound, an equality by "
            "equivalence within the stated tolerance; yes, no, or undecided."
        )
    )
    preds = res["predictions"]
    rows = [[p["claim"], p["theory"], p["measured"], _verdict(p)] for p in preds]
    if rows:  # none when only the placements were measured
        tones = [p.get("verdict", "") for p in preds]
        blocks.append(Table(["prediction (Xiong et al. 2020)", "theory", "measured", "holds?"], rows, tones))
    if "depth" in res:
        d = res["depth"]
        rows = [
            [str(L)]
            + [
                f"{d[n][s]['mean'][i]:.4g} ± {d[n][s]['std'][i]:.2g}"
                for s in ("decoder", "encoder")
                for n in ("post", "pre")
            ]
            for i, L in enumerate(d["depths"])
        ]
        blocks += [
            Para("Last-layer W2 expected-gradient norm by depth (mean over seeds, decoder / encoder):"),
            Table(["L", "Post-LN decoder", "Pre-LN decoder", "Post-LN encoder", "Pre-LN encoder"], rows),
        ]
    if "width" in res:
        w = res["width"]
        rows = [
            [str(d), f"{w['post']['mean'][i]:.4g}", f"{w['pre']['mean'][i]:.4g}"] for i, d in enumerate(w["widths"])
        ]
        blocks += [
            Para("Last decoder layer W2 norm by width (mean over seeds):"),
            Table(["d", "Post-LN", "Pre-LN"], rows),
        ]
    if "placements" in res:
        blocks += placements_table(res)
    if any(p.get("verdict") == "no" for p in res["predictions"]):
        blocks.append(
            Para("Where a prediction does not hold, the table says by how much; nothing was tuned to make it hold.")
        )
    return blocks + [Figure(f"{figure_dir}{f}", f) for f in figures(res)]


def write_analysis_report(folder: Path) -> list[Path]:
    """Render figures and ``summary.md`` from ``folder/analysis.json``."""
    res = json.loads((folder / "analysis.json").read_text())
    draw = {
        "fig3_layers.png": plot_layers,
        "fig3_depth_width.png": plot_depth_width,
        "lemma2.png": plot_lemma2,
        "placements.png": plot_placements,
    }
    names = figures(res)
    for name in names:
        draw[name](res, folder / name)
    (folder / "summary.md").write_text(to_markdown(summary_blocks(res)))
    return [folder / f for f in names] + [folder / "summary.md"]
