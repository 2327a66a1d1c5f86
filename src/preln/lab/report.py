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
import tomllib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..runs import RunFolder  # noqa: E402
from . import analysis_report  # noqa: E402
from .claims import claim_setting, claims_record, judge, prediction_counts, rows  # noqa: E402
from .convergence import mean_curve, speed  # noqa: E402
from .document import (  # noqa: E402
    Block,
    Figure,
    Heading,
    Para,
    Table,
    code,
    mean,
    mean_std,
    parts,
    strong,
    to_html,
    to_markdown,
)
from .finetune_report import finetune_blocks, finetune_results, plot_finetune  # noqa: E402


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


def study_blocks(name: str, res: dict, sp: dict | None, judged: list[dict]) -> tuple[list[Block], float | None]:
    """The study's section and its target validation NLL (None without a baseline); ``sp`` is its
    ``convergence.speed``, ``judged`` its ``claims.judge``."""
    meta = res["meta"]
    blocks: list[Block] = [Heading(meta["title"]), Figure(f"{name}_curves.png", "curves")]
    if sp:
        blocks.append(
            Para(
                [
                    f"Target validation NLL {sp['target']:.3f} = minimum of ",
                    code(sp["baseline"]),
                    "'s mean curve. Updates to target: mean curve (per seed), at the validation interval's resolution.",
                ]
            )
        )
    blocks.append(_conditions_table(res, sp))
    if sp and "compare" in sp:
        blocks.append(_speed_para(sp, meta))
    if meta.get("claims"):
        blocks += _claims_table(res, judged)
    return blocks, (sp or {}).get("target")


def _conditions_table(res: dict, sp: dict | None) -> Table:
    """A row per condition: runs, divergences, final/best NLL, BLEU where any run translated,
    updates to the target."""
    bleu = any(r["bleu"] or r["valid_bleu"] for runs in res["conditions"].values() for r in runs)
    head = ["condition", "runs", "diverged (seed@update)", "final valid NLL", "best valid NLL"]
    head += ["greedy valid BLEU (update: mean)", "test sacreBLEU", "test tok-lc BLEU"] if bleu else []
    rows = []
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
        row = [cond, f"{len(runs) - missing}{f' (+{missing} not run)' if missing else ''}", ", ".join(div) or "0"]
        row += [mean_std(final), mean_std(best)]
        row += [_bleu_by_update(runs), mean_std(b1), mean_std(b2)] if bleu else []
        rows.append([*row, upd])
    return Table([*head, "updates to target"], rows)


def _speed_para(sp: dict, meta: dict) -> Para:
    a, b = sp["compare"]
    ratio = "not defined (a condition never reached the target)" if sp["ratio"] is None else f"{sp['ratio']:.2f}"
    iv = sp.get("interval")
    text: list = [strong("Convergence speed"), ": updates for ", code(a), " / updates for ", code(b)]
    text += [f" to reach NLL {sp['target']:.3f} = ", strong(ratio)]
    text.append(
        (f", 95% seed-bootstrap interval [{iv[0]:.2f}, {iv[1]:.2f}]" if iv else "")
        + (f" ({sp['boot_misses']:.0%} of resamples never reached it)" if sp["boot_misses"] else "")
        + ". "
        + "".join(f"The paper: {c['paper']}." for c in meta.get("claims", []) if c.get("metric") == "speed_ratio")
    )
    if sp.get("upper_bound"):
        text += [
            " ",
            code(a),
            f" was already below the target at its first validation (update {sp['conditions'][a]['mean_curve']}), "
            "so the measured ratio is an upper bound (validate more often to resolve it).",
        ]
    return Para(text)


def _claims_table(res: dict, judged: list[dict]) -> list[Block]:
    """The paper's claims beside the measured values, under one line saying where each side was
    measured."""
    return [
        Para(
            "The paper's numbers next to ours: BLEU in the paper's convention (tokenized, lowercased); where the "
            "corpus or scale differs, compare directions and orderings, not values."
        ),
        Para(claim_setting(res)),
        Table(["the paper says", "paper", "measured here", "shows here?"], rows(judged)),
    ]


def _summary(studies: list[tuple[str, dict, list[dict]]], predictions: list[dict]) -> list[Block]:
    """The report's first section: every claim of every study in one table (each study's setting
    in one line under it), and the analyses' predictions counted (the sections below have the
    details)."""
    table = [[name, *row] for name, _, judged in studies for row in rows(judged)]
    blocks: list[Block] = []
    if table:
        blocks.append(Table(["study", "the paper says", "paper", "measured here", "shows here?"], table))
        settings = [(name, claim_setting(res)) for name, res, _ in studies if res["meta"].get("claims")]
        blocks += [Para([code(name), ": ", *parts(text)]) for name, text in settings if parts(text)]
    for p in predictions:
        text = f" ({p['title']}): {p['hold']} of {p['judged']} predictions hold by their 95% intervals (details below)."
        blocks.append(Para([code(p["study"]), text]))
    return [Heading("Summary"), *blocks] if blocks else []


def _headline_first(metas: dict[Path, dict]) -> list[Path]:
    """Study folders, those with a speed claim (Fig. 4, the paper's headline) first, then by name."""

    def key(sdir: Path) -> tuple[bool, str]:
        return (not any(c.get("metric") == "speed_ratio" for c in metas[sdir].get("claims", [])), sdir.name)

    return sorted(metas, key=key)


def write_report(out: Path) -> tuple[Path, Path]:
    """``report.md`` and ``report.html`` for every study folder under ``out``, both rendered from
    one document: the sections of its training runs and of its analyses (from ``analysis.json``)."""
    if not out.is_dir():
        raise FileNotFoundError(f"no runs folder {out}")
    sections: list[Block] = []
    images: dict[str, Path] = {}
    metas = {p: json.loads((p / "study.json").read_text()) for p in out.iterdir() if (p / "study.json").is_file()}
    study_dirs = _headline_first(metas)
    studies, analyses = [], []
    for sdir in study_dirs:
        meta = metas[sdir]
        for folder in _analysis_folders(sdir, meta):
            sections += _analysis_section(out, folder, meta["title"], images)
            analyses.append((sdir.name, meta["title"], folder))
        if training_jobs(meta):
            res = study_results(sdir, meta)
            sp = speed(res)  # once per study: a seed bootstrap
            studies.append((sdir.name, res, judge(res, sp)))
            sections += _study_section(out, sdir.name, res, sp, studies[-1][2], images)
    loose = None if study_dirs else plain_runs(out)
    if loose is not None:  # run folders outside any study: one section of them all
        res = study_results(out, loose)
        sections += _study_section(out, out.name, res, speed(res), [], images)
    if not sections:
        raise FileNotFoundError(f"{out}: no study folders (study.json) or run folders (metrics.jsonl) to report on")
    predictions = prediction_counts(analyses)
    doc = [Heading("preln report", 1), _header(out), *_summary(studies, predictions), *sections]
    (out / "report.md").write_text(to_markdown(doc))
    (out / "report.html").write_text(to_html(doc, images))
    record = claims_record([(name, judged) for name, _, judged in studies], predictions)
    (out / "claims.json").write_text(json.dumps(record, indent=1))
    return out / "report.md", out / "report.html"


def _study_section(
    out: Path, name: str, res: dict, sp: dict | None, judged: list[dict], images: dict[str, Path]
) -> list[Block]:
    """A study's blocks; draws its figures into ``out`` and adds them to ``images``."""
    blocks, target = study_blocks(name, res, sp, judged)
    png = out / f"{name}_curves.png"
    plot_curves(res, png, target)
    images[png.name] = png
    if res.get("finetune"):
        ref = res["meta"].get("finetune_reference", {})
        png = out / f"{name}_finetune.png"
        plot_finetune(res["finetune"], ref, png, list(res["conditions"]))
        images[png.name] = png
        blocks += finetune_blocks(name, res["finetune"], ref, res["conditions"])
    return blocks


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


def _analysis_section(out: Path, folder: Path, title: str, images: dict[str, Path]) -> list[Block]:
    """An analysis's summary (from its ``analysis.json``) under the study's title, its figures'
    paths relative to ``out``."""
    try:
        res = json.loads((folder / "analysis.json").read_text())
    except (OSError, ValueError):
        return [Heading(title), Para("(not run yet)")]
    rel = folder.relative_to(out).as_posix() + "/"
    images.update({f"{rel}{p.name}": p for p in folder.glob("*.png")})
    return [Heading(title), *analysis_report.summary_blocks(res, rel)[1:]]


def _header(out: Path) -> Para:
    """Who made these numbers: preln version, commit, preset, machine, date, wall time (from the
    ``reproduce.json`` that ``preln reproduce`` appends to; absent for hand-made folders)."""
    try:
        runs = json.loads((out / "reproduce.json").read_text())["invocations"]
    except (OSError, ValueError, KeyError):
        return Para(["Runs folder: ", code(out.name)])
    last = runs[-1]
    total = sum(r["seconds"] for r in runs)
    return Para(
        [
            f"preln {last['preln']}, commit {last['commit']}, preset ",
            code(last["preset"]),
            f", studies {', '.join(last['studies'])}; {last['machine']}; started {runs[0]['started']}; wall time "
            f"{total / 60:.0f} min over {len(runs)} invocation{'s' * (len(runs) > 1)} of ",
            code("preln reproduce"),
            f" (--jobs {last['jobs']}). Runs folder: ",
            code(out.name),
            ".",
        ]
    )
