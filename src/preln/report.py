"""Figures and markdown from result files (never from live state).

``analysis.json`` -> ``fig3_layers.png`` (Fig. 3a/b analogue), ``fig3_depth.png`` (Fig. 3c/d and
the width sweep), ``lemma2.png`` and ``summary.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"post": "tab:red", "pre": "tab:blue", "after": "tab:orange"}


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
        ax.minorticks_off()  # log axes: label only the measured x values
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_ylabel("||E[grad W2]||_F")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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


def summary_markdown(res: dict, figures: list[str]) -> str:
    lines = ["# preln analyze: gradients and hidden states at initialization", ""]
    lines.append(f"Data: {res['data']}. Preset `{res['preset']}`; settings in `analysis.json`.")
    if res.get("synthetic"):
        lines += ["", "**These numbers come from SYNTHETIC random tokens, not a corpus.**"]
    lines += ["", "| prediction (Xiong et al. 2020) | theory | measured | holds |", "|---|---|---|---|"]
    for p in res["predictions"]:
        lines.append(f"| {p['claim']} | {p['theory']} | {p['measured']} | {'yes' if p['holds'] else '**no**'} |")
    if "depth" in res:
        lines += [
            "",
            "Last-layer W2 expected-gradient norm by depth (mean over seeds, decoder / encoder):",
            "",
            "| L | Post-LN decoder | Pre-LN decoder | Post-LN encoder | Pre-LN encoder |",
            "|---|---|---|---|---|",
        ]
        d = res["depth"]
        for i, L in enumerate(d["depths"]):
            cells = [
                f"{d[n][s]['mean'][i]:.4g} ± {d[n][s]['std'][i]:.2g}"
                for s in ("decoder", "encoder")
                for n in ("post", "pre")
            ]
            lines.append(f"| {L} | " + " | ".join(cells) + " |")
    if "width" in res:
        w = res["width"]
        lines += [
            "",
            "Last decoder layer W2 norm by width (mean over seeds):",
            "",
            "| d | Post-LN | Pre-LN |",
            "|---|---|---|",
        ]
        lines += [
            f"| {d} | {w['post']['mean'][i]:.4g} | {w['pre']['mean'][i]:.4g} |" for i, d in enumerate(w["widths"])
        ]
    failed = [p for p in res["predictions"] if not p["holds"]]
    if failed:
        lines += [
            "",
            "Where a prediction does not hold, the table says by how much; nothing was tuned to make it hold.",
        ]
    lines += [""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(lines)


def write_analysis_report(folder: Path) -> list[Path]:
    """Render figures and ``summary.md`` from ``folder/analysis.json``."""
    res = json.loads((folder / "analysis.json").read_text())
    figures = []
    if "fig3" in res:
        plot_layers(res, folder / "fig3_layers.png")
        figures.append("fig3_layers.png")
    if "depth" in res or "width" in res:
        plot_depth_width(res, folder / "fig3_depth_width.png")
        figures.append("fig3_depth_width.png")
    if "lemma2_theory" in res:
        plot_lemma2(res, folder / "lemma2.png")
        figures.append("lemma2.png")
    (folder / "summary.md").write_text(summary_markdown(res, figures))
    return [folder / f for f in figures] + [folder / "summary.md"]


# --------------------------------------------------------------------------- studies


def _rows(folder: Path) -> list[dict]:
    path = folder / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.is_file() else []


def _mean_std(xs: list[float]) -> str:
    if not xs:
        return "-"
    m = sum(xs) / len(xs)
    sd = (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0
    return f"{m:.2f} ± {sd:.2f}"


def study_results(sdir: Path) -> dict:
    """Per condition: valid curves, final/best valid NLL, test BLEU, divergences, updates to the
    baseline's target; read from the run folders only."""
    meta = json.loads((sdir / "study.json").read_text())
    by_cond: dict[str, list[dict]] = {}
    for r in meta["runs"]:
        folder = sdir / r["folder"]
        rows = _rows(folder)
        valid = [x for x in rows if x["kind"] == "valid"]
        status = json.loads((folder / "status.json").read_text()) if (folder / "status.json").is_file() else {}
        bleu = (
            json.loads((folder / "bleu.json").read_text())["splits"]["test"] if (folder / "bleu.json").is_file() else {}
        )
        by_cond.setdefault(r["condition"], []).append(
            {
                "seed": r["seed"],
                "status": status.get("status", "missing"),
                "update": status.get("update"),
                "curve": [(x["update"], x["valid_nll"]) for x in valid],
                "bleu": bleu,
            }
        )
    target = None
    if meta["baseline"] in by_cond:
        bests = [min(v for _, v in run["curve"]) for run in by_cond[meta["baseline"]] if run["curve"]]
        target = sum(bests) / len(bests) if bests else None
    for runs in by_cond.values():
        for run in runs:
            hit = [u for u, v in run["curve"] if target is not None and v <= target]
            run["updates_to_target"] = hit[0] if hit else None
    return {"meta": meta, "conditions": by_cond, "target": target}


def _speed_ratio(res: dict) -> str:
    comp = res["meta"]["compare"]
    if len(comp) != 2 or res["target"] is None:
        return ""
    a, b = ([r["updates_to_target"] for r in res["conditions"].get(c, [])] for c in comp)
    if not a or not b or None in a or None in b:
        return f"updates to reach the target: {comp[0]} {a}, {comp[1]} {b} (None = never reached)"
    ratio = (sum(a) / len(a)) / (sum(b) / len(b))
    return (
        f"updates to reach validation NLL {res['target']:.3f} (the best of `{res['meta']['baseline']}`, "
        f"mean over seeds): {comp[0]} {a}, {comp[1]} {b}; ratio {comp[0]} / {comp[1]} = {ratio:.2f} "
        f"(paper: 9 / 15 epochs = 0.60)"
    )


def plot_curves(res: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (cond, runs) in enumerate(sorted(res["conditions"].items())):
        color = f"C{i}"
        for run in runs:
            if run["curve"]:
                ax.plot(*zip(*run["curve"]), color=color, alpha=0.3, lw=0.8)
        updates = sorted({u for run in runs for u, _ in run["curve"]})
        mean = [
            sum(v for run in runs for uu, v in run["curve"] if uu == u)
            / max(1, sum(1 for run in runs for uu, _ in run["curve"] if uu == u))
            for u in updates
        ]
        ax.plot(updates, mean, color=color, lw=2, label=f"{cond} ({len(runs)} seeds)")
    if res["target"] is not None:
        ax.axhline(res["target"], color="grey", ls="--", lw=0.8, label="target (baseline's best)")
    ax.set_xlabel("update")
    ax.set_ylabel("validation NLL (nats / token)")
    ax.set_title(res["meta"]["title"], fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def study_markdown(name: str, res: dict) -> str:
    lines = [
        f"## {res['meta']['title']}",
        "",
        f"![curves]({name}_curves.png)",
        "",
        "| condition | runs | diverged | final valid NLL | best valid NLL | test sacreBLEU | test tok-lc BLEU "
        "| updates to target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cond, runs in sorted(res["conditions"].items()):
        final = [r["curve"][-1][1] for r in runs if r["curve"] and r["status"] == "completed"]
        best = [min(v for _, v in r["curve"]) for r in runs if r["curve"]]
        div = [f"s{r['seed']}@{r['update']}" for r in runs if r["status"] == "diverged"]
        b1 = [r["bleu"]["sacrebleu"] for r in runs if r["bleu"]]
        b2 = [r["bleu"]["tok_lc"] for r in runs if r["bleu"]]
        upd = [r["updates_to_target"] for r in runs]
        lines.append(
            f"| {cond} | {len(runs)} | {', '.join(div) or 0} | {_mean_std(final)} | {_mean_std(best)} | "
            f"{_mean_std(b1)} | {_mean_std(b2)} | {upd} |"
        )
    ratio = _speed_ratio(res)
    return "\n".join(lines + ([""] + [ratio] if ratio else []) + [""])


def write_study_report(out: Path) -> tuple[Path, Path]:
    """``report.md`` and a self-contained ``report.html`` (figures embedded) for every study
    folder under ``out`` (and ``out/analysis`` if present)."""
    import base64
    import html

    parts, images = ["# preln report", "", f"Runs folder: `{out}`", ""], {}
    for sdir in sorted(p for p in out.iterdir() if (p / "study.json").is_file()):
        res = study_results(sdir)
        png = out / f"{sdir.name}_curves.png"
        plot_curves(res, png)
        images[png.name] = png
        parts.append(study_markdown(sdir.name, res))
    analysis = out / "analysis"
    if (analysis / "summary.md").is_file():
        text = (analysis / "summary.md").read_text().replace("](", "](analysis/")
        parts.append(text.replace("# preln analyze", "## preln analyze", 1))
        images.update({f"analysis/{p.name}": p for p in analysis.glob("*.png")})
    md = "\n".join(parts)
    (out / "report.md").write_text(md)
    body, in_table = [], False
    for line in md.splitlines():
        is_row = line.startswith("|")
        if in_table and not is_row:
            body.append("</table>")
        if is_row and not in_table:
            body.append("<table>")
        in_table = is_row
        if is_row:
            if not set(line) <= set("|- "):  # skip the |---| separator
                cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
                body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        elif line.startswith("![") and "](" in line:
            src = line.split("](", 1)[1].rstrip(")")
            if src in images:
                data = base64.b64encode(images[src].read_bytes()).decode()
                body.append(f'<p><img alt="{html.escape(src)}" src="data:image/png;base64,{data}"></p>')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    page = "\n".join(body)
    (out / "report.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>preln report</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td{border:1px solid #ccc;padding:3px}"
        "table{border-collapse:collapse}img{max-width:100%}</style>\n" + page + "\n"
    )
    return out / "report.md", out / "report.html"
