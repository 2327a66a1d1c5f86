"""``preln report RUNS_DIR``: the studies under a runs folder as ``report.md`` and a
self-contained ``report.html`` (figures embedded), from the run folders' files only.

Per condition: validation curves (seeds thin, mean bold), final/best validation NLL, greedy
validation BLEU at epoch ends, test BLEU in both conventions (mean ± std over seeds), divergences,
and *updates to reach a target validation NLL*: the target is the minimum of the baseline
condition's mean curve (mean over seeds at each validation), so the baseline reaches it by
construction. The speed ratio compares two conditions' mean curves; its 95% interval resamples
seeds (with replacement) within each condition. Each study's claims of the paper stand beside the
measured values.
"""

from __future__ import annotations

import json
import math
import random
import tomllib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..runs import RunFolder  # noqa: E402
from .finetune_report import finetune_markdown, finetune_results, metric_values, plot_finetune  # noqa: E402
from .markdown import cell, mean, mean_std, sd, to_html  # noqa: E402

INF = math.inf


def study_results(sdir: Path, meta: dict | None = None) -> dict:
    """{"meta": study.json (or ``meta``), "conditions": {name: [run dict per seed]}} from the run
    folders."""
    meta = meta or json.loads((sdir / "study.json").read_text())
    by_cond: dict[str, list[dict]] = {}
    for r in training_jobs(meta):
        folder = sdir / r["folder"]
        run = RunFolder(folder, writer=False)
        valid = [x for x in run.metrics() if x.get("kind") == "valid" and {"update", "valid_nll"} <= x.keys()]
        status = run.status() or {}
        bleu = json.loads((folder / "bleu.json").read_text()) if (folder / "bleu.json").is_file() else {}
        key = (
            "valid_bleu_greedy"
            if not any("valid_bleu_greedy_tok_lc" in x and "valid_bleu_greedy" not in x for x in valid)
            else "valid_bleu_greedy_tok_lc"
        )
        by_cond.setdefault(r["condition"], []).append(
            {
                "seed": r["seed"],
                "group": r.get("group", ""),
                "status": status.get("status", "missing"),
                "update": status.get("update"),
                "curve": [(x["update"], x["valid_nll"]) for x in valid],
                "valid_bleu": [(x["update"], x[key]) for x in valid if key in x],
                "bleu": bleu.get("splits", {}).get("test", {}),
                "scale": _scale(folder),
            }
        )
    res = {"meta": meta, "conditions": by_cond}
    if any(":" in step for j in meta.get("jobs", []) for step in j["steps"]):
        res["finetune"] = finetune_results(sdir, meta)
    return res


def training_jobs(meta: dict) -> list[dict]:
    """The jobs of a ``study.json`` that train a model (a ``study.json`` written before 0.2 lists
    them as ``runs``)."""
    jobs = meta.get("jobs", [{**r, "steps": ["train"]} for r in meta.get("runs", [])])
    return [j for j in jobs if "train" in j["steps"]]


def _analysis_folders(sdir: Path, meta: dict) -> list[Path]:
    """The folders of a study's ``analyze`` steps (a pre-0.2 ``study.json``: the study folder, if
    it holds an analysis)."""
    jobs = meta.get("jobs", [{"folder": "", "steps": ["analyze"]}] if (sdir / "analysis.json").is_file() else [])
    return [sdir / j["folder"] for j in jobs if "analyze" in j["steps"]]


def _scale(folder: Path) -> str:
    """Where a run was measured, in words: corpus, model size, length (from its config.toml)."""
    try:
        c = tomllib.loads((folder / "config.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return ""
    m, d, t = c["model"], c["data"], c["train"]
    corpus = Path(d["path"]).name or d["corpus"]
    layers = f"{m['encoder_layers']}+{m['decoder_layers']}" if m["task"] == "translation" else m["encoder_layers"]
    length = f"{t['max_updates']} updates" if t["max_updates"] else f"{t['max_epochs']} epochs"
    return f"{corpus}, d {m['d_model']}, {layers} layers, {length}"


def mean_curve(runs: list[dict]) -> list[tuple[int, float]]:
    """Mean validation NLL over seeds at each validated update. A diverged run counts as +inf
    after its last validation (it never gets there); runs not started are left out."""
    runs = [r for r in runs if r["curve"]]
    updates = sorted({u for r in runs for u, _ in r["curve"]})
    out = []
    for u in updates:
        vals = []
        for r in runs:
            d = dict(r["curve"])
            if u in d:
                vals.append(d[u])
            elif r["status"] == "diverged" and u > r["curve"][-1][0]:
                vals.append(INF)
        if vals:
            out.append((u, mean(vals)))
    return out


def updates_to(curve: list[tuple[int, float]], target: float) -> int | None:
    """First validated update whose NLL is <= target (resolution: the validation interval)."""
    return next((u for u, v in curve if v <= target), None)


def speed(res: dict, n_boot: int = 2000, seed: int = 0) -> dict | None:
    """Target, updates to it (mean curves and per seed) and the ratio compare[0] / compare[1]
    with a 95% seed-bootstrap interval; None when the study names no baseline."""
    meta, conds = res["meta"], res["conditions"]
    base = [r for r in conds.get(meta.get("baseline") or "", []) if r["curve"]]
    if not base:
        return None
    target = min(v for _, v in mean_curve(base))
    out = {"target": target, "baseline": meta["baseline"], "conditions": {}}
    for name, runs in conds.items():
        out["conditions"][name] = {
            "mean_curve": updates_to(mean_curve(runs), target),
            "per_seed": [updates_to(r["curve"], target) if r["curve"] else None for r in runs],
        }
    comp = meta.get("compare", [])
    if len(comp) == 2 and all(c in conds for c in comp):
        a, b = (out["conditions"][c]["mean_curve"] for c in comp)
        out["compare"] = comp
        out["ratio"] = a / b if a is not None and b else None
        # reached at its first validation: the true crossing may be earlier, the ratio an upper bound
        first = min((r["curve"][0][0] for r in conds[comp[0]] if r["curve"]), default=None)
        out["upper_bound"] = a is not None and a == first
        rng, ratios, misses = random.Random(seed), [], 0
        for _ in range(n_boot):
            pick = {c: [rng.choice(conds[c]) for _ in conds[c]] for c in {*comp, meta["baseline"]}}
            t = min(v for _, v in mean_curve(pick[meta["baseline"]]))
            ua, ub = (updates_to(mean_curve(pick[c]), t) for c in comp)
            if ua is None or not ub:
                misses += 1
            else:
                ratios.append(ua / ub)
        ratios.sort()
        if ratios:
            out["interval"] = (ratios[int(0.025 * len(ratios))], ratios[min(len(ratios) - 1, int(0.975 * len(ratios)))])
        out["boot_misses"] = misses / n_boot
    return out


def _metric_values(metric: str, runs: list[dict], res: dict | None = None, condition: str = "") -> list[float]:
    """Per-run values of a claim metric (test BLEU in the paper's tokenized-lowercased convention;
    ``test_accuracy:<task>`` and the like from the fine-tuning runs)."""
    if ":" in metric:
        return metric_values((res or {}).get("finetune", {}), metric, condition)
    if metric == "test_bleu":
        return [r["bleu"]["tok_lc"] for r in runs if r["bleu"]]
    done = [r for r in runs if r["curve"]]
    return [r["curve"][-1][1] if metric == "final_nll" else min(v for _, v in r["curve"]) for r in done]


def _shows(claim: dict, res: dict) -> str:
    """Whether the claim's expected ordering shows: ``better_than = "<condition>"`` (higher BLEU or
    lower NLL than that condition, comparing means over seeds); empty where the claim has none."""
    other, metric = claim.get("better_than"), claim.get("metric", "test_bleu")
    if not other:
        return ""
    a = _metric_values(metric, res["conditions"].get(claim.get("condition", ""), []), res, claim.get("condition", ""))
    b = _metric_values(metric, res["conditions"].get(other, []), res, other)
    if not a or not b:
        return "not measured"
    ma, mb = mean(a), mean(b)
    ok = ma > mb if metric == "test_bleu" or ":" in metric else ma < mb
    spread = max(sd(a), sd(b))  # a difference inside one side's seed-to-seed spread decides nothing
    tie = f", within the seeds' spread ({spread:.2f})" if 0 < abs(ma - mb) <= spread else ""
    return f"{'yes' if ok else '**no**'} ({ma:.2f} vs {mb:.2f} for `{other}`; means{tie})"


def _claim_value(claim: dict, res: dict, sp: dict | None) -> str:
    metric, runs = claim.get("metric", "test_bleu"), res["conditions"].get(claim.get("condition", ""), [])
    if claim.get("condition") and not runs:
        return "not run in this preset"
    if metric == "speed_ratio":
        if not sp or sp.get("ratio") is None:
            return "not reached"
        iv = sp.get("interval")
        bound = "<= " if sp.get("upper_bound") else ""
        return f"{bound}{sp['ratio']:.2f}" + (f" [{iv[0]:.2f}, {iv[1]:.2f}]" if iv else "")
    if metric == "test_bleu":  # the paper reports tokenized lowercased BLEU: compare like with like
        return mean_std(_metric_values(metric, runs)) + " tok-lc BLEU"
    if ":" in metric:
        values = _metric_values(metric, runs, res, claim.get("condition", ""))
        return (mean_std(values, 1) + f" % ({metric.split(':')[1]}, {len(values)} runs)") if values else "not measured"
    if metric in ("final_nll", "best_nll"):
        return mean_std(_metric_values(metric, runs)) + " nats"
    if metric == "diverged":
        return f"{sum(r['status'] == 'diverged' for r in runs)} / {len(runs)} runs"
    raise ValueError(
        f"claim metric {metric!r}: use test_bleu, final_nll, best_nll, diverged, speed_ratio or "
        "test_accuracy:<task> / dev_accuracy:<task> / test_f1:<task>"
    )


def plot_curves(res: dict, path: Path, target: float | None) -> None:
    groups: dict[str, dict] = {}
    for cond, runs in res["conditions"].items():
        groups.setdefault(runs[0]["group"], {})[cond] = runs
    fig, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 4.2), squeeze=False)
    finite = [v for runs in res["conditions"].values() for r in runs for _, v in r["curve"] if math.isfinite(v)]
    styles = curve_styles({g: list(conds) for g, conds in groups.items()})
    for ax, (group, conds) in zip(axes[0], groups.items()):  # the study file's order
        for cond, runs in conds.items():
            color, ls, label = styles[cond]
            for r in runs:
                if r["curve"]:
                    ax.plot(*zip(*r["curve"]), color=color, ls=ls, alpha=0.3, lw=0.8)
                if r["status"] == "diverged" and r["curve"]:
                    ax.plot(*r["curve"][-1], "x", color=color, ms=8)
            mc = [(u, v) for u, v in mean_curve(runs) if math.isfinite(v)]
            if mc:
                seeds = f"{len(runs)} seed{'s' * (len(runs) > 1)}"
                ax.plot(*zip(*mc), color=color, ls=ls, lw=2, label=f"{label} ({seeds})")
        if target is not None:
            ax.axhline(target, color="grey", ls="--", lw=0.8, label="target (baseline's best mean)")
        if finite:
            ax.set_ylim(min(finite) - 0.2, min(max(finite), min(finite) + 8) + 0.2)
        ax.set_xlabel("update")
        ax.set_ylabel("validation NLL (nats / token)")
        ax.set_title(group or res["meta"]["title"], fontsize=9)
        ax.legend(fontsize=6 if len(conds) > 8 else 7, ncol=2 if len(conds) > 8 else 1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def curve_styles(groups: dict[str, list[str]]) -> dict[str, tuple[str, str, str]]:
    """(colour, line style, legend label) per condition, over all panels. Grid conditions
    (``group,k1=v1,k2=v2``): colour by every factor but the last (Fig. 2: the peak lr, the same
    colour for the same lr in every panel), line style by the last (the warm-up), the label without
    the group's name. Other conditions: a colour each, solid."""
    factors = {c: c.split(",")[1:] if g and c.startswith(g + ",") else [] for g, conds in groups.items() for c in conds}
    if not all(len(f) >= 2 for f in factors.values()):
        return {c: (f"C{i % 10}", "-", c) for i, c in enumerate(factors)}
    colors = list(dict.fromkeys(",".join(f[:-1]) for f in factors.values()))
    dashes = ["-", "--", ":", "-."]
    styles = {}
    for conds in groups.values():  # line styles by the last factor within each panel
        lines = list(dict.fromkeys(factors[c][-1] for c in conds))
        for c in conds:
            f = factors[c]
            styles[c] = (f"C{colors.index(','.join(f[:-1])) % 10}", dashes[lines.index(f[-1]) % 4], ", ".join(f))
    return styles


def _bleu_by_update(runs: list[dict]) -> str:
    updates = sorted({u for r in runs for u, _ in r["valid_bleu"]})
    cells = [f"u{u}: {mean([b for r in runs for uu, b in r['valid_bleu'] if uu == u]):.1f}" for u in updates]
    return ", ".join(cells) or "-"


def study_markdown(name: str, res: dict) -> tuple[str, str | None]:
    """The study's section and the name of its figure."""
    sp = speed(res)
    meta = res["meta"]
    lines = [f"## {meta['title']}", "", f"![curves]({name}_curves.png)", ""]
    if sp:
        lines += [
            f"Target validation NLL {sp['target']:.3f} = minimum of `{sp['baseline']}`'s mean curve. "
            "Updates to target: mean curve (per seed), at the validation interval's resolution.",
            "",
        ]
    bleu = any(r["bleu"] or r["valid_bleu"] for runs in res["conditions"].values() for r in runs)
    head = ["condition", "runs", "diverged (seed@update)", "final valid NLL", "best valid NLL"]
    head += ["greedy valid BLEU (update: mean)", "test sacreBLEU", "test tok-lc BLEU"] if bleu else []
    head += ["updates to target"]
    lines += [f"| {' | '.join(head)} |", "|" + "---|" * len(head)]
    for cond, runs in res["conditions"].items():
        final = [r["curve"][-1][1] for r in runs if r["curve"] and r["status"] == "completed"]
        best = [min(v for _, v in r["curve"]) for r in runs if r["curve"]]
        div = [f"s{r['seed']}@{r['update']}" for r in runs if r["status"] == "diverged"]
        b1 = [r["bleu"]["sacrebleu"] for r in runs if "sacrebleu" in r["bleu"]]
        b2 = [r["bleu"]["tok_lc"] for r in runs if r["bleu"]]
        missing = sum(r["status"] == "missing" for r in runs)
        upd = "-"
        if sp:
            c = sp["conditions"][cond]
            per = ", ".join("never" if u is None else str(u) for u in c["per_seed"])
            upd = f"{c['mean_curve'] if c['mean_curve'] is not None else 'never'} ({per})"
        row = [cell(cond), f"{len(runs) - missing}{f' (+{missing} not run)' if missing else ''}", ", ".join(div) or "0"]
        row += [mean_std(final), mean_std(best)]
        row += [_bleu_by_update(runs), mean_std(b1), mean_std(b2)] if bleu else []
        lines.append(f"| {' | '.join([*row, upd])} |")
    if sp and "compare" in sp:
        a, b = sp["compare"]
        ratio = "not defined (a condition never reached the target)" if sp["ratio"] is None else f"{sp['ratio']:.2f}"
        iv = sp.get("interval")
        lines += [
            "",
            f"**Convergence speed**: updates for `{a}` / updates for `{b}` to reach NLL {sp['target']:.3f} = "
            f"**{ratio}**"
            + (f", 95% seed-bootstrap interval [{iv[0]:.2f}, {iv[1]:.2f}]" if iv else "")
            + (f" ({sp['boot_misses']:.0%} of resamples never reached it)" if sp["boot_misses"] else "")
            + ". "
            + "".join(f"The paper: {c['paper']}." for c in meta.get("claims", []) if c.get("metric") == "speed_ratio")
            + (
                f" `{a}` was already below the target at its first validation (update "
                f"{sp['conditions'][a]['mean_curve']}), so the measured ratio is an upper bound (validate more often "
                "to resolve it)."
                if sp.get("upper_bound")
                else ""
            ),
        ]
    if meta.get("claims"):
        lines += _claims_table(res, sp)
    return "\n".join(lines + [""]), (sp or {}).get("target")


def _claims_table(res: dict, sp: dict | None) -> list[str]:
    """The paper's claims beside the measured values, under one line saying where each side was
    measured."""
    return [
        "",
        "The paper's numbers next to ours: BLEU in the paper's convention (tokenized, lowercased); where the "
        "corpus or scale differs, compare directions and orderings, not values.",
        "",
        claim_setting(res),
        "",
        "| the paper says | paper | measured here | shows here? |",
        "|---|---|---|---|",
        *[f"| {' | '.join(row)} |" for row in claim_rows(res, sp)],
    ]


def claim_setting(res: dict) -> str:
    """One line: the paper's setting, ours (corpus, size, length of the study's runs), and whether
    they differ."""
    meta = res["meta"]
    paper_at, paper_corpus = meta.get("paper_setting", ""), meta.get("paper_corpus", "")
    here = "; ".join(dict.fromkeys(r["scale"] for runs in res["conditions"].values() for r in runs if r.get("scale")))
    other = paper_corpus and here and paper_corpus.lower() not in here.lower()
    parts = [f"The paper: {cell(paper_at)}."] if paper_at else []
    if here:
        differs = " — **another corpus and scale than the paper's**" if other else ""
        parts.append(f"Measured here: {cell(here)}{differs}.")
    return " ".join(parts)


def claim_rows(res: dict, sp: dict | None) -> list[list[str]]:
    """Per claim: the claim, the paper's value, ours, whether the expected ordering shows."""
    return [
        [cell(c["text"]), cell(c.get("paper", "")), cell(_claim_value(c, res, sp)), _shows(c, res)]
        for c in res["meta"].get("claims", [])
    ]


def _summary(studies: list[tuple[str, dict]], analyses: list[tuple[str, Path]]) -> list[str]:
    """The report's first section: every claim of every study in one table (each study's setting
    in one line under it), and the analyses' predictions counted (the sections below have the
    details)."""
    rows = [[cell(name), *row] for name, res in studies for row in claim_rows(res, speed(res))]
    lines = ["## Summary", ""]
    if rows:
        lines += [
            "| study | the paper says | paper | measured here | shows here? |",
            "|---|---|---|---|---|",
            *[f"| {' | '.join(r)} |" for r in rows],
            "",
            *[f"`{name}`: {claim_setting(res)}" + "\n" for name, res in studies if res["meta"].get("claims")],
        ]
    for title, folder in analyses:
        try:
            preds = json.loads((folder / "analysis.json").read_text()).get("predictions", [])
        except (OSError, ValueError):
            continue
        held = sum(p["holds"] is True for p in preds)
        judged = sum(p["holds"] is not None for p in preds)
        lines.append(f"{title}: {held} of {judged} predictions hold by their 95% intervals (details below).")
    return lines + [""] if len(lines) > 2 else []


def _headline_first(metas: dict[Path, dict]) -> list[Path]:
    """Study folders, those with a speed claim (Fig. 4, the paper's headline) first, then by name."""

    def key(sdir: Path) -> tuple[bool, str]:
        return (not any(c.get("metric") == "speed_ratio" for c in metas[sdir].get("claims", [])), sdir.name)

    return sorted(metas, key=key)


def write_report(out: Path) -> tuple[Path, Path]:
    """``report.md`` and ``report.html`` for every study folder under ``out``: the sections of
    its training runs and of its analyses (each ``summary.md`` with its figures)."""
    if not out.is_dir():
        raise FileNotFoundError(f"no runs folder {out}")
    parts, images = [], {}
    metas = {p: json.loads((p / "study.json").read_text()) for p in out.iterdir() if (p / "study.json").is_file()}
    study_dirs = _headline_first(metas)
    studies, analyses = [], []
    for sdir in study_dirs:
        meta = metas[sdir]
        for folder in _analysis_folders(sdir, meta):
            parts.append(_analysis_section(out, folder, meta["title"], images))
            analyses.append((f"`{sdir.name}` ({meta['title']})", folder))
        if training_jobs(meta):
            res = study_results(sdir, meta)
            studies.append((sdir.name, res))
            text, target = study_markdown(sdir.name, res)
            png = out / f"{sdir.name}_curves.png"
            plot_curves(res, png, target)
            images[png.name] = png
            parts.append(text)
            if res.get("finetune"):
                ref = meta.get("finetune_reference", {})
                png = out / f"{sdir.name}_finetune.png"
                plot_finetune(res["finetune"], ref, png, list(res["conditions"]))
                images[png.name] = png
                parts.append(finetune_markdown(sdir.name, res["finetune"], ref, res["conditions"]))
    plain = None if study_dirs else plain_runs(out)
    if plain is not None:  # run folders outside any study: one section of them all
        res = study_results(out, plain)
        text, _ = study_markdown(out.name, res)
        png = out / f"{out.name}_curves.png"
        plot_curves(res, png, None)
        images[png.name] = png
        parts.append(text)
    if not images and not any(p.startswith("## ") for p in parts):
        raise FileNotFoundError(f"{out}: no study folders (study.json) or run folders (metrics.jsonl) to report on")
    md = "\n".join(["# preln report", "", *_header(out), "", *_summary(studies, analyses), *parts])
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(to_html(md, images))
    return out / "report.md", out / "report.html"


def plain_runs(out: Path) -> dict | None:
    """A study.json-like description of run folders outside any study: ``out`` itself if it is a
    run folder, else its subfolders that are; None if there are none."""
    runs = [p for p in sorted(out.iterdir()) if (p / "metrics.jsonl").is_file()]
    runs = [out] if (out / "metrics.jsonl").is_file() else runs
    if not runs:
        return None
    jobs = [
        {"folder": "" if r == out else r.name, "condition": r.name, "seed": 1, "group": "", "steps": ["train"]}
        for r in runs
    ]
    return {"title": f"Runs in {out.name}", "baseline": None, "compare": [], "claims": [], "jobs": jobs}


def _analysis_section(out: Path, folder: Path, title: str, images: dict[str, Path]) -> str:
    """An analysis's ``summary.md`` under the study's title, its figures' paths made relative to
    ``out``."""
    if not (folder / "summary.md").is_file():
        return "\n".join([f"## {title}", "", "(not run yet)", ""])
    rel = folder.relative_to(out).as_posix()
    text = (folder / "summary.md").read_text().replace("](", f"]({rel}/").splitlines()
    images.update({f"{rel}/{p.name}": p for p in folder.glob("*.png")})
    return "\n".join([f"## {title}", *text[1:], ""])


def _header(out: Path) -> list[str]:
    """Who made these numbers: preln version, commit, preset, machine, date, wall time (from the
    ``reproduce.json`` that ``preln reproduce`` appends to; absent for hand-made folders)."""
    try:
        runs = json.loads((out / "reproduce.json").read_text())["invocations"]
    except (OSError, ValueError, KeyError):
        return [f"Runs folder: `{out.name}`"]
    last = runs[-1]
    total = sum(r["seconds"] for r in runs)
    return [
        f"preln {last['preln']}, commit {last['commit']}, preset `{last['preset']}`, studies "
        f"{', '.join(last['studies'])}; {last['machine']}; started {runs[0]['started']}; wall time "
        f"{total / 60:.0f} min over {len(runs)} invocation{'s' * (len(runs) > 1)} of `preln reproduce` "
        f"(--jobs {last['jobs']}). Runs folder: `{out.name}`."
    ]
