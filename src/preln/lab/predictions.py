"""The paper's predictions about gradients and hidden states (Theorem 1, Lemma 2, Fig. 3) beside
the values ``analysis.run_analysis`` measured: a pure function of its results dict, so a report
re-judges an older ``analysis.json`` by today's rules.

Each prediction has one rule of ``lab/stats.py`` (docs/statistics.md), read on a 95% t interval
over seeds: a direction ("rises toward the top", "shrinks after warm-up", "no faster than the
bound") is a *bound* or an *ordering*; an equality ("flat", "slope -1/2", "1.5 d") is an
*equivalence* with a stated tolerance, so that a noisier measurement cannot pass more easily. The
verdict is yes, no, undecided, or "" for information (Theorem 1's bound claims no tightness).
"""

from __future__ import annotations

import math

import numpy as np

from .stats import (
    Decision,
    bound,
    combination_interval,
    equivalence,
    mean_interval,
    ordering,
    slope_interval,
    slope_weights,
)

FLAT = math.log(1.5)
"""Pre-LN's top/bottom gradient ratio counts as flat within 2/3..3/2 (on the log scale +-ln 1.5)."""
SLOPE_TOLERANCE = 0.1
"""A depth slope equals the theory's within +-0.1."""
LEMMA2_TOLERANCE = 0.05
"""Lemma 2's values hold within 5% (finite width d, finite batches)."""


def _record(claim: str, theory: str, measured: str, d: Decision | None) -> dict:
    verdict = d.verdict if d else ""
    holds = {"yes": True, "no": False}.get(verdict) if d else None
    return {"claim": claim, "theory": theory, "measured": measured, "verdict": verdict, "holds": holds} | (
        {"rule": d.rule, "reason": d.reason} if d else {"rule": "", "reason": "information, not a prediction"}
    )


def _fmt(m: float, lo: float, hi: float, digits: int = 2, sign: str = "") -> str:
    return f"{m:{sign}.{digits}f} [{lo:{sign}.{digits}f}, {hi:{sign}.{digits}f}]"


def _log_top_bottom(col: dict) -> list[float]:
    return [math.log(v[-1] / v[0]) for v in col["values"]]


def _gradients(res: dict) -> list[dict]:
    out, f = [], res["fig3"]
    n = len(f["post"]["encoder"]["W2"]["values"])
    for stack in ("encoder", "decoder"):
        post = mean_interval(_log_top_bottom(f["post"][stack]["W2"]))
        pre = mean_interval(_log_top_bottom(f["pre"][stack]["W2"]))
        out.append(
            _record(
                f"Post-LN W2 gradient norm rises toward the top layer ({stack}, init)",
                "top/bottom > 1",
                f"top/bottom = {_fmt(*(math.exp(x) for x in (post.estimate, post.lo, post.hi)))} ({n} seeds)",
                bound(post, 0.0, above=True, n=n, words="1 (ratio)"),
            )
        )
        out.append(
            _record(
                f"Pre-LN W2 gradient norm is flat across layers ({stack}, init)",
                "top/bottom = 1 within 2/3..3/2",
                f"top/bottom = {_fmt(*(math.exp(x) for x in (pre.estimate, pre.lo, pre.hi)))} ({n} seeds)",
                equivalence(pre, 0.0, FLAT, n, band="2/3..3/2 (ratio)"),
            )
        )
    if "after_warmup" in res:
        after = [float(np.mean(v)) for v in res["after_warmup"]["decoder"]["W2"]["values"]]
        init = [float(np.mean(v)) for v in f["post"]["decoder"]["W2"]["values"]]
        d = ordering(after, init, higher_is_better=False)
        out.append(
            _record(
                "Post-LN gradients shrink after warm-up (decoder W2, mean over layers)",
                "after < init",
                f"after {np.mean(after):.3g} ({len(after)} seed{'s' * (len(after) > 1)}) vs init "
                f"{np.mean(init):.3g} ({len(init)} seeds)",
                d,
            )
        )
    return out


def _slope(xs: list[float], values: list[list[float]]):
    """The log-log slope of the per-x values (seeds at each x), its interval, and the fewest seeds."""
    logs = [np.log(np.asarray(v, dtype=float)) for v in values]
    return slope_interval(np.log(xs), logs), logs, min(len(v) for v in values)


def _depth(res: dict) -> list[dict]:
    out, fits = [], {}
    depths = res["depth"]["depths"]
    for norm, value in (("post", 0.0), ("pre", -0.5)):
        iv, logs, n = _slope(depths, res["depth"][norm]["decoder"]["values"])
        fits[norm] = (logs, iv)
        out.append(
            _record(
                f"{norm.capitalize()}-LN last-layer W2 gradient norm vs depth L (log-log slope)",
                f"{value:+.1f} (within ±{SLOPE_TOLERANCE:g})",
                _fmt(iv.estimate, iv.lo, iv.hi, 3, "+") + f" ({n} seeds per depth)",
                equivalence(iv, value, SLOPE_TOLERANCE, n),
            )
        )
    (post_logs, _), (pre_logs, pre) = fits["post"], fits["pre"]
    w = slope_weights(np.log(depths))
    diff = combination_interval([*w, *(-w)], [*pre_logs, *post_logs])  # pre slope - post slope
    n = min(len(v) for v in [*pre_logs, *post_logs])
    d = _all([bound(pre, 0.0, above=False, n=n), bound(diff, 0.0, above=False, n=n)])
    out.append(
        _record(
            "Depth slopes land on the predicted sides (Pre-LN decays with L, faster than Post-LN)",
            "pre < 0 and pre - post < 0",
            f"pre {_fmt(pre.estimate, pre.lo, pre.hi, 3, '+')}, "
            f"pre - post {_fmt(diff.estimate, diff.lo, diff.hi, 3, '+')}",
            d,
        )
    )
    return out


def _width(res: dict) -> list[dict]:
    t = res["width"]["theory_slope"]
    iv, _, n = _slope(res["width"]["widths"], res["width"]["post"]["values"])
    measured = _fmt(iv.estimate, iv.lo, iv.hi, 3, "+") + f" ({n} seeds per width)"
    return [
        _record(
            "Theorem 1 bound: Post-LN last-layer W2 gradient grows with width d no faster than "
            "d sqrt(ln d) (log-log slope)",
            f"<= {t:+.3f}",
            measured,
            bound(iv, t, above=False, n=n),
        ),
        _record(
            "Information (not a prediction: Theorem 1 is an O() bound): how close the slope comes "
            "to that of d sqrt(ln d)",
            f"bound slope {t:+.3f}",
            measured,
            None,
        ),
    ]


def _all(decisions: list[Decision], parts: str = "") -> Decision:
    """Every part holds: yes when each does, no when any does not (that part's reason), else the
    first undecided part's reason; ``parts`` names the parts ("layer") in the reasons."""
    for verdict in ("no", "undecided"):
        i, hit = next(((i, d) for i, d in enumerate(decisions) if d.verdict == verdict), (0, None))
        if hit:
            where = f"{parts} {i}: " if parts else ""
            return Decision(hit.verdict, hit.rule, where + hit.reason, hit.interval)
    what = f"every {parts}'s interval lies inside its band" if parts else "each part holds"
    return Decision("yes", decisions[0].rule, what)


def _lemma2(res: dict) -> list[dict]:
    lt = res["lemma2_theory"]
    n = len(lt["post"]["values"])
    post = [mean_interval(col) for col in np.array(lt["post"]["values"]).T]  # per layer over seeds
    post_d = [equivalence(iv, 1.5, 1.5 * LEMMA2_TOLERANCE, n) for iv in post]
    worst = max(abs(iv.estimate / 1.5 - 1) for iv in post)
    pre = lt["pre"]
    pre_iv = [mean_interval(col) for col in np.array(pre["values"]).T]
    pre_d = []
    for iv, lo, hi in zip(pre_iv, pre["lower"], pre["upper"]):
        mid, half = (lo + hi) / 2, (hi - lo) / 2 + LEMMA2_TOLERANCE * hi  # the band, widened by 5%
        pre_d.append(equivalence(iv, mid, half, n))
    vals = ", ".join(f"{iv.estimate:.2f}" for iv in pre_iv)
    return [
        _record(
            "Lemma 2, Post-LN: E‖x^{post,5}_l‖² = 1.5 d at every layer (theory setting)",
            f"1.5 d (within {LEMMA2_TOLERANCE:.0%})",
            f"{min(iv.estimate for iv in post):.3f} d .. {max(iv.estimate for iv in post):.3f} d "
            f"(worst mean {worst:.1%} off; {n} seeds)",
            _all(post_d, "layer"),
        ),
        _record(
            "Lemma 2, Pre-LN: (1 + l/2) d ≤ E‖x_l‖² ≤ (1 + 3l/2) d (theory setting)",
            f"within the bounds (± {LEMMA2_TOLERANCE:.0%})",
            f"l = 0..{len(pre_iv) - 1}: {vals} (x d; {n} seeds)",
            _all(pre_d, "layer"),
        ),
    ]


def predictions(res: dict) -> list[dict]:
    """Each prediction of the paper next to the measured value and its verdict."""
    out = []
    if res.get("fig3"):
        out += _gradients(res)
    if "depth" in res:
        out += _depth(res)
    if "width" in res:
        out += _width(res)
    if "lemma2_theory" in res:
        out += _lemma2(res)
    return out
