"""The paper's claims beside what a study measured, each decided by its metric's rule
(``lab/stats.py``; docs/statistics.md): an ordering ("better than", "worse than") by the Welch
interval of the difference over seeds, "at least as good as" by non-inferiority with the metric's
margin, a speed claim by the interval of the updates-to-target ratio. ``claims.json`` and the
terminal summary are the same verdicts as data and as lines."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from . import convergence, sensitivity
from .document import Text, code, mean_std, plain, strong
from .metrics import Metric, metric
from .results import Sample, StudyResults
from .stats import MOST_SEEDS, POWER, Decision, bound, mean_interval, noninferiority, ordering, seeds_to_decide
from .studies import CONTROL, Claim


@dataclass(frozen=True)
class Judged:
    """One claim of one study, measured and decided."""

    study: str
    claim: Claim
    measured: Text
    """The claim's condition's value (mean ± sd over its runs, with what diverged counted)."""
    decision: Decision | None
    """None: the claim states a value and compares nothing."""
    shows: Text
    """The verdict in words, with the numbers it read."""
    seeds_needed: int | None = None
    """An undecided comparison: the seeds per condition that would decide it ``stats.POWER`` of the
    time were the measured means and spreads the true ones (0: more than ``stats.MOST_SEEDS``);
    None where not planned (decided, a speed claim, fewer than two values a side, no spread)."""

    @property
    def verdict(self) -> str:
        return self.decision.verdict if self.decision else ""

    @property
    def reason(self) -> str:
        return self.decision.reason if self.decision else ""


def judge(res: StudyResults) -> list[Judged]:
    """Every claim of the study, measured and decided."""
    return [_judge(res, c) for c in res.study.claims]


def _judge(res: StudyResults, c: Claim) -> Judged:
    m = metric(c.metric)
    known = [*res.conditions, CONTROL, *sensitivity.curves(res)]
    if c.condition and c.condition not in known or c.other and c.other not in known:
        return Judged(res.name, c, "not run in this preset", None, "")
    if m.name == "speed_ratio":
        return _speed(res, c)
    if m.name == "diverged":
        runs = res.conditions[c.condition]
        return Judged(res.name, c, f"{sum(r.diverged for r in runs)} of {len(runs)} runs diverged", None, "")
    a = _sample(res, m, c.condition)
    measured = _value(a, m)
    if c.above is not None:
        iv = mean_interval(a.values) if a.values else None
        d = bound(iv, c.above, True, len(a.values)) if iv else Decision("undecided", "bound", "no completed run")
        return _planned(Judged(res.name, c, measured, d, _bound_words(d, c.above)), c.above, [a])
    if not c.other:
        return Judged(res.name, c, measured, None, "")
    b = _sample(res, m, c.other)
    if c.as_good_as:
        d = noninferiority(a.values, b.values, m.higher_is_better, m.margin)
    else:
        d = ordering(a.values, b.values, m.higher_is_better if c.better_than else not m.higher_is_better)
    threshold = -m.margin if c.as_good_as else 0.0
    return _planned(Judged(res.name, c, measured, d, _shows(d, a, b, c, m)), threshold, [a, b])


def _planned(j: Judged, threshold: float, samples: list[Sample]) -> Judged:
    """``j`` with, when undecided, the seeds that would decide it (``stats.seeds_to_decide`` at the
    measured distance of the estimate from the rule's ``threshold`` and the samples' variances)."""
    d = j.decision
    if d is None or d.verdict != "undecided" or d.interval is None or any(len(s.values) < 2 for s in samples):
        return j
    variances = [statistics.variance(s.values) for s in samples]
    distance = d.interval.estimate - threshold
    if distance == 0 or not any(variances):
        return j
    n = seeds_to_decide(distance, variances) or 0
    each = " per condition" if len(samples) > 1 else ""
    plan = f"about {n} seeds{each}" if n else f"more than {MOST_SEEDS} seeds{each}"
    verdict = "yes" if distance > 0 else "no"
    words = f'{plan} would give "{verdict}" {POWER:.0%} of the time, were these means and spreads the true ones'
    shows = [*j.shows, f" — {words}"] if isinstance(j.shows, (list, tuple)) else [j.shows, f" — {words}"]
    return Judged(j.study, j.claim, j.measured, d, shows, n)


def _sample(res: StudyResults, m: Metric, condition: str) -> Sample:
    if m.name == "lr_sensitivity":  # a curve over the lr grid, one value per seed
        return sensitivity.sample(res, condition)
    return res.sample(m, condition)


def _value(s: Sample, m: Metric) -> Text:
    """``mean ± sd unit (n runs; k of n diverged)``; a fine-tuning metric's ``(n models × k
    fine-tunings)``."""
    if not s.values:
        return "not measured" + (f" ({s.note()})" if s.note() else "")
    unit = f" {m.unit}" if m.unit not in ("%",) else " %"
    return mean_std(list(s.values), m.digits) + f"{unit} ({_replicates(s)}" + (f"; {s.note()})" if s.note() else ")")


def _replicates(s: Sample) -> str:
    """ "3 runs"; for a fine-tuning metric the models (the replicates), each a mean of fine-tunings:
    "6 models × 2 fine-tunings", or their total where the counts differ."""
    n = len(s.values)
    if not s.fine_tunings:
        return f"{n} run{'s' * (n != 1)}"
    k, models = s.fine_tunings[0], f"{n} model{'s' * (n != 1)}"
    if len(set(s.fine_tunings)) == 1:
        return f"{models} × {k} fine-tuning{'s' * (k != 1)}"
    return f"{models}, {sum(s.fine_tunings)} fine-tunings"


def _shows(d: Decision, a: Sample, b: Sample, c: Claim, m: Metric) -> Text:
    """ "yes (3.05 vs 4.30 for `b`; difference -1.25 [-1.89, -0.61] nats, ordering: ...)"."""
    word: Text = strong("no") if d.verdict == "no" else d.verdict
    if not a.values or not b.values:
        return [word, f" ({d.reason})"]
    means = [f" ({m.fmt(sum(a.values) / len(a.values))} vs {m.fmt(sum(b.values) / len(b.values))} for ", code(c.other)]
    notes = "; ".join(f"{name}: {s.note()}" for name, s in ((c.condition, a), (c.other, b)) if s.note())
    tail = f"; {notes}" if notes else ""
    if d.interval is None:
        return [word, *means, f"; {d.reason}{tail})"]
    sign = 1 if (m.higher_is_better == (not c.worse_than)) else -1  # back from the claimed direction to A - B
    iv = d.interval.scaled(sign)
    diff = f"difference {iv.estimate:+.{m.digits}f} [{iv.lo:+.{m.digits}f}, {iv.hi:+.{m.digits}f}]"
    return [word, *means, f"; {diff}, 95% {d.rule}: {d.reason}{tail})"]


def _bound_words(d: Decision, limit: float) -> Text:
    word: Text = strong("no") if d.verdict == "no" else d.verdict
    if d.interval is None:
        return [word, f" ({d.reason})"]
    iv = d.interval
    return [word, f" (mean {iv.estimate:.3f} [{iv.lo:.3f}, {iv.hi:.3f}] against {limit:g}; 95% {d.rule}: {d.reason})"]


def _speed(res: StudyResults, c: Claim) -> Judged:
    sp = convergence.speed(res.conditions, c.condition, c.better_than)
    if sp is None:
        return Judged(res.name, c, "not measured (no completed run)", None, "")
    d = sp.decision
    per = "; ".join(f"{name}: {', '.join(x.text() for x in xs) or '-'}" for name, xs in sp.crossings.items())
    if d.interval is None:
        measured: Text = f"updates to NLL {sp.target:.3f}: {per}"
    else:
        iv = d.interval
        measured = f"{iv.estimate:.2f} [{iv.lo:.2f}, {iv.hi:.2f}] (updates to NLL {sp.target:.3f}: {per})"
    word: Text = strong("no") if d.verdict == "no" else d.verdict
    return Judged(res.name, c, measured, d, [word, f" ({d.reason})"])


def rows(judged: list[Judged]) -> list[list[Text]]:
    """Table rows: the claim, the paper's value, ours, whether it shows here."""
    return [[j.claim.text, j.claim.paper, j.measured, j.shows or "(a value: nothing to decide)"] for j in judged]


def claim_setting(res: StudyResults) -> Text:
    """One line: the paper's setting, ours (corpus, size, length of the study's runs), and whether
    they differ."""
    paper_at, paper_corpus = res.study.paper
    here = "; ".join(dict.fromkeys(r.scale for runs in res.conditions.values() for r in runs if r.scale))
    other = paper_corpus and here and paper_corpus.lower() not in here.lower()
    text: list = [f"The paper: {paper_at}. "] if paper_at else []
    if here:
        text.append(f"Measured here: {here}")
        text += [" — ", strong("another corpus and scale than the paper's"), "."] if other else ["."]
    return text


@dataclass(frozen=True)
class Tally:
    """How many decided claims (and predictions) came out each way, and why the rest did not."""

    yes: int = 0
    no: int = 0
    undecided: int = 0
    reasons: tuple[tuple[str, int], ...] = ()
    """(reason, count) of the undecided ones, most frequent first."""

    @property
    def checked(self) -> int:
        return self.yes + self.no + self.undecided

    def line(self, what: str, whose: str = "") -> str:
        """ "Of the paper's 9 claims checked here: 6 shown, 1 not shown, 2 undecided (...)"."""
        if self.checked == 1:  # "the paper's 1 claim", "the 1 prediction at initialization"
            first, _, rest = what.partition(" ")
            what = first.removesuffix("s") + (f" {rest}" if rest else "")
        head = f"Of the {whose + ' ' if whose else ''}{self.checked} {what} checked here: {self.yes} shown, "
        head += f"{self.no} not shown, "
        why = "; ".join(f"{n} {r}" for r, n in self.reasons)
        return head + f"{self.undecided} undecided" + (f" ({why})" if why else "") + "."


def reason_kind(reason: str) -> str:
    """An undecided verdict's reason, grouped for the summary."""
    if reason.startswith("too few seeds"):
        return "too few seeds"
    if reason.startswith("zero spread"):
        return "zero spread"
    if "bound" in reason:
        return "a run never reached the speed target"
    if "wider than" in reason:
        return "interval wider than the tolerance"
    return "interval too wide to decide"


def tally(verdicts: list[tuple[str, str]]) -> Tally:
    """Counts of (verdict, reason) pairs; "" verdicts (nothing to decide) are left out."""
    v = Counter(verdict for verdict, _ in verdicts)
    reasons = Counter(reason_kind(r) for verdict, r in verdicts if verdict == "undecided")
    return Tally(v["yes"], v["no"], v["undecided"], tuple(reasons.most_common()))


def record(judged: list[Judged], analyses: list[dict], summary: str) -> dict:
    """``claims.json``: the summary line; per claim the study, the paper's words and value, ours,
    the verdict, its rule, reason and interval; per analysis its predictions with theirs."""
    claims = []
    for j in judged:
        d = j.decision
        iv = d.interval if d else None
        claims.append(
            {"study": j.study, "claim": j.claim.text, "paper": j.claim.paper, "measured": plain(j.measured)}
            | {"verdict": j.verdict, "rule": d.rule if d else "", "reason": d.reason if d else ""}
            | {"interval": [iv.estimate, iv.lo, iv.hi] if iv else None, "shows": plain(j.shows)}
            | ({"seeds_needed": j.seeds_needed or f">{MOST_SEEDS}"} if j.seeds_needed is not None else {})
        )
    return {"summary": summary, "claims": claims, "analyses": analyses}


def summary_text(out: Path) -> str:
    """The report's summary for a terminal, from ``claims.json``: the tally, then two lines per
    claim."""
    try:
        rec = json.loads((out / "claims.json").read_text())
    except (OSError, ValueError):
        return ""
    lines = [rec.get("summary", "")]
    for c in rec["claims"]:
        lines.append(f"{c['study']}: {c['claim']}")
        lines.append(f"    paper: {c['paper']} | here: {c['measured']}" + (f" | {c['shows']}" if c["shows"] else ""))
    for a in rec.get("analyses", []):
        lines.append(f"{a['study']}: {a['line']}")
    return "\n".join(ln for ln in lines if ln)
