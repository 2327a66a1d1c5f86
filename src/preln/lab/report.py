"""``preln report RUNS_DIR``: the studies under a runs folder as ``report.md`` and a
self-contained ``report.html`` (figures embedded), from the run folders' files only.

It opens with the verdict — of the claims checked here, how many the rules of docs/statistics.md
decide each way and why the rest stay undecided — then every claim in one table (rows coloured by
verdict in HTML), then a section per study: validation curves (seeds thin, mean bold), per
condition final/best validation NLL, greedy validation BLEU at epoch ends, test BLEU in both
conventions (mean ± sd over its completed runs) and divergences; grids of several factors (the
placements study) as a table per grid of which setting trained how; the speed claims with their
per-seed updates to a common target; the claims beside the paper's numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .. import atomic  # noqa: E402
from ..locks import folder_lock  # noqa: E402
from . import analysis_report, claims, sensitivity, timing  # noqa: E402
from .claims import Judged, Tally, claim_setting, judge, rows, tally  # noqa: E402
from .convergence import Speed, mean_curve, speed  # noqa: E402
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
from .finetune_report import finetune_blocks, plot_finetune  # noqa: E402
from .metrics import metric  # noqa: E402
from .predictions import predictions as judge_predictions  # noqa: E402
from .results import Run, StudyResults, study_results  # noqa: E402
from .studies import JobSpec, Study, read_study_json  # noqa: E402


def plot_curves(res: StudyResults, path: Path, target: float | None) -> None:
    groups: dict[str, dict[str, list[Run]]] = {}
    for cond, runs in res.conditions.items():
        groups.setdefault(runs[0].group, {})[cond] = runs
    fig, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 4.2), squeeze=False)
    styles = curve_styles({g: list(conds) for g, conds in groups.items()})
    for ax, (group, conds) in zip(axes[0], groups.items()):  # the study file's order
        finite = [v for runs in conds.values() for r in runs for _, v in r.curve if math.isfinite(v)]  # this panel's
        for cond, runs in conds.items():
            color, ls, label = styles[cond]
            for r in runs:
                if r.curve:
                    ax.plot(*zip(*r.curve), color=color, ls=ls, alpha=0.3, lw=0.8)
                if r.diverged and r.curve:
                    ax.plot(*r.curve[-1], "x", color=color, ms=8)
            mc = [(u, v) for u, v in mean_curve(runs) if math.isfinite(v)]
            if mc:
                seeds = f"{len(runs)} seed{'s' * (len(runs) > 1)}"
                marker = "o" if len(mc) < 3 else None  # a curve of one or two points must still show
                ax.plot(*zip(*mc), color=color, ls=ls, lw=2, marker=marker, label=f"{label} ({seeds})")
        if target is not None:
            ax.axhline(target, color="grey", ls="--", lw=0.8, label="speed target")
        if finite:
            ax.set_ylim(min(finite) - 0.2, min(max(finite), min(finite) + 8) + 0.2)
        ax.set_xlabel("update")
        ax.set_ylabel(f"validation NLL (nats / {'example' if group == 'classification' else 'token'})")
        ax.set_title(group or res.study.title, fontsize=9)
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


def _bleu_by_update(runs: list[Run]) -> str:
    updates = sorted({u for r in runs for u, _ in r.valid_bleu})
    cells = [f"u{u}: {mean([b for r in runs for uu, b in r.valid_bleu if uu == u]):.1f}" for u in updates]
    return ", ".join(cells) or "-"


def speeds(res: StudyResults) -> list[Speed]:
    """The study's speed claims, measured."""
    out = []
    for c in res.study.claims:
        if c.metric == "speed_ratio" and c.condition in res.conditions and c.better_than in res.conditions:
            sp = speed(res.conditions, c.condition, c.better_than)
            if sp is not None:
                out.append(sp)
    return out


def study_blocks(res: StudyResults, judged: list[Judged], sps: list[Speed]) -> list[Block]:
    """The study's section: figure, conditions, grids, speed paragraphs, claims."""
    blocks: list[Block] = [Heading(res.study.title), Figure(f"{res.name}_curves.png", "curves")]
    blocks.append(_conditions_table(res))
    blocks += _grid_tables(res)
    blocks += [_speed_para(sp, res) for sp in sps]
    if res.study.claims:
        blocks += _claims_table(res, judged)
    return blocks


def _conditions_table(res: StudyResults) -> Table:
    """A row per condition: runs, divergences, final/best NLL (completed runs), BLEU where any run
    translated."""
    bleu = any(r.test_bleu or r.valid_bleu for runs in res.conditions.values() for r in runs)
    unigram = any(r.unigram_nll is not None for runs in res.conditions.values() for r in runs)
    head = ["condition", "runs", "diverged (seed@update)", "final valid NLL", "best valid NLL"]
    head += ["unigram model's valid NLL"] if unigram else []
    head += ["greedy valid BLEU (update: mean)", "test sacreBLEU", "test tok-lc BLEU"] if bleu else []
    out = []
    for cond, runs in res.conditions.items():
        final, best = (list(res.sample(metric(m), cond).values) for m in ("final_nll", "best_nll"))
        div = [f"s{r.seed}@{r.update}" for r in runs if r.diverged]
        missing = sum(r.status == "missing" for r in runs)
        row = [cond, f"{len(runs) - missing}{f' (+{missing} not run)' if missing else ''}", ", ".join(div) or "0"]
        row += [mean_std(final), mean_std(best)]
        if unigram:
            row.append(mean_std([r.unigram_nll for r in runs if r.unigram_nll is not None]))
        if bleu:
            b1, b2 = (list(res.sample(metric(m), cond).values) for m in ("test_sacrebleu", "test_bleu"))
            row += [_bleu_by_update(runs), mean_std(b1), mean_std(b2)]
        out.append(row)
    return Table(head, out)


def _grid_tables(res: StudyResults) -> list[Block]:
    """Per grid of two or more factors, a table: the first factor's values down, the others'
    across; each cell the final validation NLL over its completed runs and how many diverged —
    which setting trains (the placements study: each placement at each warm-up or depth)."""
    blocks: list[Block] = []
    groups: dict[str, list[str]] = {}
    for cond, runs in res.conditions.items():
        if runs[0].group and cond.startswith(runs[0].group + ","):
            groups.setdefault(runs[0].group, []).append(cond)
    for group, conds in groups.items():
        split = {c: c[len(group) + 1 :].split(",") for c in conds}
        if not all(len(f) >= 2 for f in split.values()):
            continue
        down = list(dict.fromkeys(f[0] for f in split.values()))
        across = list(dict.fromkeys(",".join(f[1:]) for f in split.values()))
        by = {(f[0], ",".join(f[1:])): c for c, f in split.items()}
        table = []
        for d in down:
            row = [d]
            for a in across:
                c = by.get((d, a))
                row.append(_cell(res, c) if c else "-")
            table.append(row)
        blocks += [
            Para(
                [strong(f"{group}"), ": final validation NLL, mean ± sd over completed runs (diverged runs counted)."]
            ),
            Table([group, *across], table),
        ]
    return blocks


def _cell(res: StudyResults, cond: str) -> str:
    s = res.sample(metric("final_nll"), cond)
    text = mean_std(list(s.values)) if s.values else "no result"
    return text + (f" ({s.diverged} of {s.runs} diverged)" if s.diverged else "")


def _speed_para(sp: Speed, res: StudyResults) -> Para:
    d = sp.decision
    text: list = [strong("Convergence speed"), ": updates for ", code(sp.condition), " / updates for "]
    text += [code(sp.other), f" to reach validation NLL {sp.target:.3f} (the highest best NLL of their completed runs"]
    text.append(", so every completed run of both reaches it)")
    if d.interval is not None:
        iv = d.interval
        text += [": ", strong(f"{iv.estimate:.2f}"), f", 95% interval [{iv.lo:.2f}, {iv.hi:.2f}]"]
        text.append(" (ratio of geometric means; t interval on log updates)")
    per = "; ".join(f"{name}: {', '.join(x.text() for x in xs) or '-'}" for name, xs in sp.crossings.items())
    text.append(". Per run, interpolated between validations (≤: already below it at the first validation; ")
    text.append(f">: never reached it): {per}. Verdict: {d.verdict} ({d.reason}).")
    paper = [c.paper for c in res.study.claims if c.metric == "speed_ratio" and c.condition == sp.condition]
    if paper and paper[0]:
        text.append(f" The paper: {paper[0]}.")
    return Para(text)


def _claims_table(res: StudyResults, judged: list[Judged]) -> list[Block]:
    """The claims beside the measured values, under the metrics' conventions and one line saying
    where each side was measured."""
    used = list(dict.fromkeys(metric(c.metric) for c in res.study.claims))
    conventions = "; ".join(f"{m.name}: {m.label}" for m in used)
    return [
        Para(
            f"The paper's numbers next to ours ({conventions}). Where the corpus or scale differs, compare "
            "directions and orderings, not values. Each verdict is its rule's (docs/statistics.md): yes, no, or "
            "undecided."
        ),
        Para(claim_setting(res)),
        Table(["the paper says", "paper", "measured here", "shows here?"], rows(judged), [j.verdict for j in judged]),
    ]


def _summary(studies: list[tuple[StudyResults, list[Judged]]], analyses: list[dict]) -> list[Block]:
    """The report's first section: the verdict line (claims and predictions tallied, the main
    reasons for undecided), every claim of every study in one table (each study's setting in one
    line under it), and the analyses' predictions tallied per analysis."""
    judged = [j for _, js in studies for j in js]
    blocks: list[Block] = []
    lead = _lead(judged, analyses)
    if lead:
        blocks.append(Para(lead, lead=True))
    if judged:
        table = [[j.study, *row] for j, row in zip(judged, rows(judged))]
        head = ["study", "the paper says", "paper", "measured here", "shows here?"]
        blocks.append(Table(head, table, [j.verdict for j in judged]))
        settings = [(res.name, claim_setting(res)) for res, _ in studies if res.study.claims]
        blocks += [Para([code(name), ": ", *parts(text)]) for name, text in settings if parts(text)]
        blocks += _not_shown(judged)
    for a in analyses:
        blocks.append(Para([code(a["study"]), f" ({a['title']}): {a['line']} (details below)"]))
    return [Heading("Summary"), *blocks] if blocks else []


def _not_shown(judged: list[Judged]) -> list[Block]:
    """Each claim decided no, with the study file's reason (``if_no``)."""
    out: list[Block] = []
    for j in judged:
        if j.verdict != "no":
            continue
        why = [j.claim.if_no] if j.claim.if_no else ["The study file gives no reason (", code("if_no"), ")."]
        out.append(Para([strong("Not shown"), " (", code(j.study), f"): {j.claim.text}. ", *why]))
    return out


def _lead(judged: list[Judged], analyses: list[dict]) -> str:
    decided = tally([(j.verdict, j.reason) for j in judged])
    preds = Tally(*(sum(a[k] for a in analyses) for k in ("yes", "no", "undecided")))
    out = []
    if decided.checked:
        out.append(decided.line("claims", "paper's"))
    if preds.checked:
        out.append(preds.line("predictions at initialization", "theory's"))
    return " ".join(out)


def _headline_first(studies: dict[Path, Study]) -> list[Path]:
    """Study folders, those with a speed claim (Fig. 4, the paper's headline) first, then by name."""

    def key(sdir: Path) -> tuple[bool, str]:
        return (not any(c.metric == "speed_ratio" for c in studies[sdir].claims), sdir.name)

    return sorted(studies, key=key)


def _read_studies(out: Path) -> dict[Path, Study]:
    return {p: read_study_json(p) for p in sorted(out.iterdir()) if (p / "study.json").is_file()}


def report_folder(out: Path) -> tuple[Path, Path]:
    """``preln report``: ``write_report`` under the folder's lock (not while a ``reproduce``, a run
    or another report writes it)."""
    if not out.is_dir():
        raise FileNotFoundError(f"no runs folder {out}")
    with folder_lock(out):
        return write_report(out)


def write_report(out: Path) -> tuple[Path, Path]:
    """``report.md``, ``report.html`` and ``claims.json`` for every study folder under ``out`` (or
    the run folders in it), rendered from one document."""
    if not out.is_dir():
        raise FileNotFoundError(f"no runs folder {out}")
    sections: list[Block] = []
    images: dict[str, Path] = {}
    found = _read_studies(out)
    studies, analyses = [], []
    for sdir in _headline_first(found):
        study = found[sdir]
        for job in study.jobs:
            if "analyze" in job.steps:
                blocks, counted = _analysis_section(out, sdir / job.folder, study, images)
                sections += blocks
                analyses += counted
        if study.runs:
            res = study_results(sdir, study)
            judged, sps = judge(res), speeds(res)
            studies.append((res, judged))
            sections += _study_section(out, res, judged, sps, images)
    loose = None if found else plain_runs(out)
    if loose is not None:  # run folders outside any study: one section of them all
        res = study_results(out, loose)
        sections += _study_section(out, res, [], [], images)
    if not sections:
        raise FileNotFoundError(f"{out}: no study folders (study.json) or run folders (metrics.jsonl) to report on")
    runs = _invocations(out)
    wall = sum(r["seconds"] for r in runs) if runs else None
    timed = timing.time_blocks(out, wall, runs[-1]["jobs"] if runs else 1)
    doc = [
        Heading("preln report", 1),
        _header(out, list(found.values())),
        *_summary(studies, analyses),
        *sections,
        *timed,
    ]
    atomic.write_text(out / "report.md", to_markdown(doc))  # a reader never sees half a report
    atomic.write_text(out / "report.html", to_html(doc, images))
    every = [j for _, js in studies for j in js]
    atomic.write_text(out / "claims.json", json.dumps(claims.record(every, analyses, _lead(every, analyses)), indent=1))
    return out / "report.md", out / "report.html"


def _study_section(
    out: Path, res: StudyResults, judged: list[Judged], sps: list[Speed], images: dict[str, Path]
) -> list[Block]:
    """A study's blocks; draws its figures into ``out`` and adds them to ``images``."""
    blocks = study_blocks(res, judged, sps)
    png = out / f"{res.name}_curves.png"
    plot_curves(res, png, sps[0].target if sps else None)
    images[png.name] = png
    if sensitivity.curves(res):
        png = out / f"{res.name}_lr_sweep.png"
        sensitivity.plot(res, png)
        images[png.name] = png
        blocks += _sensitivity_blocks(res)
    if res.finetune:
        png = out / f"{res.name}_finetune.png"
        plot_finetune(res, png)
        images[png.name] = png
        blocks += finetune_blocks(res)
    return blocks


def _sensitivity_blocks(res: StudyResults) -> list[Block]:
    head, rows = sensitivity.table_rows(res)
    return [
        Heading("Learning-rate sensitivity", 3),
        Figure(f"{res.name}_lr_sweep.png", "final loss against peak learning rate"),
        Para(
            "Final validation NLL against the peak learning rate (Wortsman et al. 2023, Fig. 1), mean over seeds; "
            "LR sensitivity = the mean over the lr grid of (the loss capped at ln V, the loss at initialization, minus "
            "the best loss of the sweep), per seed, then mean ± sd [95% t interval] over seeds. A diverged run counts "
            "as the cap."
        ),
        Table(head, rows),
    ]


def plain_runs(out: Path) -> Study | None:
    """A study of the run folders outside any study: ``out`` itself if it is a run folder, else its
    subfolders that are; None if there are none."""
    runs = [p for p in sorted(out.iterdir()) if (p / "metrics.jsonl").is_file()]
    runs = [out] if (out / "metrics.jsonl").is_file() else runs
    if not runs:
        return None
    tasks = {r: _task(r) for r in runs}
    mixed = len(set(tasks.values())) > 1  # one panel per task: their losses are not on one scale
    panel = {"translation": "translation", "mlm": "masked LM", "classify": "classification"}
    group = {r: panel.get(t, t) if mixed else "" for r, t in tasks.items()}
    jobs = tuple(JobSpec(("train",), "" if r == out else r.name, r.name, 1, group[r]) for r in runs)
    return Study(out.name, f"Runs in {out.name}", jobs)


def _task(run: Path) -> str:
    """The run's ``model.task`` from its config.toml ("" when unreadable)."""
    import tomllib

    try:
        return str(tomllib.loads((run / "config.toml").read_text())["model"]["task"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _analysis_section(out: Path, folder: Path, study: Study, images: dict[str, Path]) -> tuple[list[Block], list]:
    """An analysis's summary under the study's title (its predictions judged anew from its
    ``analysis.json`` by today's rules), its figures' paths relative to ``out``; and its tally."""
    try:
        res = json.loads((folder / "analysis.json").read_text())
    except (OSError, ValueError):
        return [Heading(study.title), Para("(not run yet)")], []
    res["predictions"] = judge_predictions(res)
    rel = folder.relative_to(out).as_posix() + "/"
    images.update({f"{rel}{p.name}": p for p in folder.glob("*.png")})
    t = tally([(p["verdict"], p["reason"]) for p in res["predictions"]])
    counted = {"study": study.name, "title": study.title, "yes": t.yes, "no": t.no, "undecided": t.undecided}
    counted["line"] = t.line("predictions")
    counted["predictions"] = res["predictions"]
    return [Heading(study.title), *analysis_report.summary_blocks(res, rel)[1:]], [counted]


def _presets(studies: list[Study], fallback: str, names: list[str]) -> list:
    """ "preset `quick`, studies fig3, fig4" or, where the study folders differ, "presets `quick`
    (fig3, fig4), `long` (fig5)" (a study.json of an older preln counts as ``fallback``)."""
    by: dict[str, list[str]] = {}
    for s in studies:
        by.setdefault(s.preset or fallback, []).append(s.name)
    if len(by) <= 1:
        return ["preset ", code(next(iter(by), fallback)), f", studies {', '.join(names)}"]
    out: list = ["presets "]
    for i, (preset, which) in enumerate(by.items()):
        out += [", " if i else "", code(preset), f" ({', '.join(which)})"]
    return out


def _invocations(out: Path) -> list[dict]:
    """The ``reproduce`` invocations that filled ``out`` ([] for a hand-made folder)."""
    try:
        return list(json.loads((out / "reproduce.json").read_text())["invocations"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _header(out: Path, studies: list[Study]) -> Para:
    """Who made these numbers: preln version, commit, preset, machine, date, wall time (from the
    ``reproduce.json`` that ``preln reproduce`` appends to; absent for hand-made folders). The
    presets are the study folders' own (``study.json``), so a folder extended with another
    preset's study says which study is which."""
    runs = _invocations(out)
    if not runs:
        return Para(["Runs folder: ", code(out.name)])
    last = runs[-1]
    total = sum(r["seconds"] for r in runs)
    # every invocation's commit and studies (a folder filled in parts names each of them)
    commits = list(dict.fromkeys(str(r["commit"]) for r in runs))
    names = list(dict.fromkeys(s for r in runs for s in r["studies"]))
    return Para(
        [
            f"preln {last['preln']}, commit{'s' * (len(commits) > 1)} {', '.join(commits)}, ",
            *_presets(studies, last["preset"], names),
            f"; {last['machine']}; started {runs[0]['started']}; wall time "
            f"{timing.minutes(total)} over {len(runs)} invocation{'s' * (len(runs) > 1)} of ",
            code("preln reproduce"),
            f" (--jobs {last['jobs']}){_steal(runs)}. Runs folder: ",
            code(out.name),
            ".",
        ]
    )


def _steal(runs: list[dict]) -> str:
    """The host's steal share over the invocations that recorded one, weighted by their wall time
    ("" when none did): a wall time from a busy shared host is not the machine's speed."""
    known = [r for r in runs if isinstance(r.get("host_steal"), (int, float)) and r.get("seconds")]
    if not known:
        return ""
    share = sum(r["host_steal"] * r["seconds"] for r in known) / sum(r["seconds"] for r in known)
    return f"; the host took {share:.0%} of the CPU time (steal)"
