"""The paper's claims beside what a study measured: the value in the paper's convention, and
whether the claimed ordering holds by a 95% interval (Welch over seeds for two conditions, the
seed bootstrap for the speed ratio). ``claims.json`` is the same summary as data."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from .document import Text, code, mean, mean_std, plain, strong
from .finetune_report import metric_values
from .predictions import welch_interval


def values_of(metric: str, runs: list[dict], res: dict | None = None, condition: str = "") -> list[float]:
    """Per-run values of a claim metric (test BLEU in the paper's tokenized-lowercased convention;
    ``test_accuracy:<task>`` and the like from the fine-tuning runs)."""
    if ":" in metric:
        return metric_values((res or {}).get("finetune", {}), metric, condition)
    if metric == "test_bleu":
        return [r["bleu"]["tok_lc"] for r in runs if r["bleu"]]
    done = [r for r in runs if r["curve"]]
    return [r["curve"][-1][1] if metric == "final_nll" else min(v for _, v in r["curve"]) for r in done]


def _shows(claim: dict, res: dict, sp: dict | None) -> tuple[str, Text]:
    """Whether the claim's expected ordering holds, by a 95% interval — the verdict (yes, no,
    undecided, or "" where the claim compares nothing) and its words: ``better_than =
    "<condition>"`` (higher BLEU or accuracy, or lower NLL, than that condition; a Welch interval of
    the difference of means over seeds), a speed ratio (the first compared condition needs fewer
    updates) by its seed-bootstrap interval."""
    other, metric = claim.get("better_than"), claim.get("metric", "test_bleu")
    if metric == "speed_ratio":
        return _speed_verdict(sp)
    if not other:
        return "", ""
    a = values_of(metric, res["conditions"].get(claim.get("condition", ""), []), res, claim.get("condition", ""))
    b = values_of(metric, res["conditions"].get(other, []), res, other)
    if not a or not b:
        return "", "not measured"
    sign = 1 if metric == "test_bleu" or ":" in metric else -1  # +: the claimed direction
    means = [f" ({mean(a):.2f} vs {mean(b):.2f} for ", code(other)]
    iv = welch_interval(a, b)
    if iv is None:  # one run on a side: an ordering of two numbers, nothing decided
        order = "as claimed" if sign * (mean(a) - mean(b)) > 0 else "not as claimed"
        return "undecided", [f"undecided: {order} by the means", *means, "; one run on a side, no interval)"]
    d, lo, hi = (sign * v for v in iv)
    lo, hi = min(lo, hi), max(lo, hi)
    tail = f"; difference {d:+.2f} [{lo:+.2f}, {hi:+.2f}], 95% Welch interval)"
    if lo > 0:
        return "yes", ["yes", *means, tail]
    if hi < 0:
        return "no", [strong("no"), *means, tail]
    return "undecided", ["undecided", *means, tail]


def _speed_verdict(sp: dict | None) -> tuple[str, Text]:
    """Fewer updates for the first compared condition: yes when the whole 95% interval of the ratio
    is below 1, no when it is above, undecided when it holds 1."""
    if not sp or "compare" not in sp:
        return "", "not measured"
    if sp["ratio"] is None:  # one of the two never reached the target on its mean curve
        a = sp["conditions"][sp["compare"][0]]["mean_curve"]
        return (
            ("yes", "yes (only it reached the target)")
            if a is not None
            else (
                "no",
                [strong("no"), " (it never reached the target)"],
            )
        )
    iv = sp.get("interval")
    if not iv:
        return "undecided", "undecided (no interval)"
    if iv[1] < 1:
        return "yes", "yes (the 95% interval is below 1)"
    if iv[0] > 1:
        return "no", [strong("no"), " (the 95% interval is above 1)"]
    return "undecided", "undecided (the 95% interval holds 1)"


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
        return mean_std(values_of(metric, runs)) + " tok-lc BLEU"
    if ":" in metric:
        values = values_of(metric, runs, res, claim.get("condition", ""))
        return (mean_std(values, 1) + f" % ({metric.split(':')[1]}, {len(values)} runs)") if values else "not measured"
    if metric in ("final_nll", "best_nll"):
        return mean_std(values_of(metric, runs)) + " nats"
    if metric == "diverged":
        return f"{sum(r['status'] == 'diverged' for r in runs)} / {len(runs)} runs"
    raise ValueError(
        f"claim metric {metric!r}: use test_bleu, final_nll, best_nll, diverged, speed_ratio or "
        "test_accuracy:<task> / dev_accuracy:<task> / test_f1:<task>"
    )


def claim_setting(res: dict) -> Text:
    """One line: the paper's setting, ours (corpus, size, length of the study's runs), and whether
    they differ."""
    meta = res["meta"]
    paper_at, paper_corpus = meta.get("paper_setting", ""), meta.get("paper_corpus", "")
    here = "; ".join(dict.fromkeys(r["scale"] for runs in res["conditions"].values() for r in runs if r.get("scale")))
    other = paper_corpus and here and paper_corpus.lower() not in here.lower()
    text: list = [f"The paper: {paper_at}. "] if paper_at else []
    if here:
        text.append(f"Measured here: {here}")
        text += [" — ", strong("another corpus and scale than the paper's"), "."] if other else ["."]
    return text


def judge(res: dict, sp: dict | None) -> list[dict]:
    """Per claim of the study: ``claim``, ``paper``, ``measured``, ``shows`` (texts) and
    ``verdict`` (yes / no / undecided / "")."""
    out = []
    for c in res["meta"].get("claims", []):
        verdict, shows = _shows(c, res, sp)
        out.append(
            {"claim": c["text"], "paper": c.get("paper", ""), "measured": _claim_value(c, res, sp)}
            | {"verdict": verdict, "shows": shows}
        )
    return out


def rows(judged: list[dict]) -> list[list[Text]]:
    """Table rows: the claim, the paper's value, ours, whether the expected ordering shows."""
    return [[j["claim"], j["paper"], j["measured"], j["shows"]] for j in judged]


def claim_rows(res: dict, sp: dict | None) -> list[list[Text]]:
    return rows(judge(res, sp))


def prediction_counts(analyses: list[tuple[str, str, Path]]) -> list[dict]:
    """Per analysis (study name, title, folder) that has run: how many of its predictions hold by
    their 95% intervals, of those that are predictions."""
    out = []
    for name, title, folder in analyses:
        with contextlib.suppress(OSError, ValueError):
            preds = json.loads((folder / "analysis.json").read_text()).get("predictions", [])
            held, judged = sum(p["holds"] is True for p in preds), sum(p["holds"] is not None for p in preds)
            out.append({"study": name, "title": title, "hold": held, "judged": judged})
    return out


def claims_record(studies: list[tuple[str, list[dict]]], predictions: list[dict]) -> dict:
    """The summary as data (``claims.json``): per claim the study, the paper's words and value,
    ours, the verdict and its words; the analyses' prediction counts."""
    claims = [
        {"study": name, **{k: v if k == "verdict" else plain(v) for k, v in j.items()}}
        for name, judged in studies
        for j in judged
    ]
    return {"claims": claims, "predictions": predictions}


def summary_text(out: Path) -> str:
    """The report's summary for a terminal, from ``claims.json``: two lines per claim."""
    try:
        rec = json.loads((out / "claims.json").read_text())
    except (OSError, ValueError):
        return ""
    lines = []
    for c in rec["claims"]:
        lines.append(f"{c['study']}: {c['claim']}")
        lines.append(f"    paper: {c['paper']} | here: {c['measured']}" + (f" | {c['shows']}" if c["shows"] else ""))
    lines += [
        f"{p['study']}: {p['hold']} of {p['judged']} predictions hold (95% intervals)" for p in rec["predictions"]
    ]
    return "\n".join(lines)
