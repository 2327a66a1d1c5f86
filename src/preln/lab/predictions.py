"""The paper's predictions about gradients and hidden states (Theorem 1, Lemma 2, Fig. 3) beside
the values ``analysis.run_analysis`` measured: a pure function of its results dict.

Every verdict is decided by a 95% interval over seeds, never by a point estimate: a ratio that is
above 1 in the mean but within the seeds' spread of 1 does not "hold". ``holds`` is True, False,
or None for statements that are information rather than predictions (Theorem 1 is an O() bound:
it claims no tightness).
"""

from __future__ import annotations

import math

import numpy as np

# two-sided 95% Student t quantiles by degrees of freedom (1..30); normal beyond
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145]
_T95 += [2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048]
_T95 += [2.045, 2.042]


def t95(df: float) -> float:
    """The two-sided 95% Student t quantile; a fractional df (Welch) is rounded down, which widens
    the interval."""
    k = max(int(df), 1)
    return _T95[k - 1] if k <= len(_T95) else 1.96


def welch_interval(a, b) -> tuple[float, float, float] | None:
    """mean(a) - mean(b) and its 95% Welch interval (unequal variances, Welch-Satterthwaite
    degrees of freedom); None with fewer than two values on a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = float(xa.mean() - xb.mean())
    va, vb = float(xa.var(ddof=1)) / len(xa), float(xb.var(ddof=1)) / len(xb)
    se = math.sqrt(va + vb)
    if se == 0:
        return d, d, d
    df = (va + vb) ** 2 / (va**2 / (len(xa) - 1) + vb**2 / (len(xb) - 1))
    return d, d - t95(df) * se, d + t95(df) * se


def t_interval(xs) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval of the mean of independent seeds' values; with one value
    the interval is unbounded (nothing can be decided from one seed)."""
    x = np.asarray(xs, dtype=float)
    m = float(x.mean())
    if len(x) < 2:
        return m, -math.inf, math.inf
    t = t95(len(x) - 1)
    half = t * float(x.std(ddof=1)) / math.sqrt(len(x))
    return m, m - half, m + half


def _top_bottom(col: dict) -> tuple[float, float, float]:
    """Top layer over bottom layer, per seed; the geometric mean and its 95% interval."""
    logs = [math.log(v[-1] / v[0]) for v in col["values"]]
    m, lo, hi = t_interval(logs)
    return math.exp(m), math.exp(lo), math.exp(hi)


def _fmt(m: float, lo: float, hi: float, digits: int = 2) -> str:
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _gradients(res: dict) -> list[dict]:
    out, f = [], res["fig3"]
    n = len(f["post"]["encoder"]["W2"]["values"])
    for stack in ("encoder", "decoder"):
        post, pre = _top_bottom(f["post"][stack]["W2"]), _top_bottom(f["pre"][stack]["W2"])
        out.append(
            {
                "claim": f"Post-LN W2 gradient norm rises toward the top layer ({stack}, init)",
                "theory": "top/bottom > 1",
                "measured": f"top/bottom = {_fmt(*post)} ({n} seeds, 95% interval)",
                "holds": post[1] > 1,
            }
        )
        out.append(
            {
                "claim": f"Pre-LN W2 gradient norm is flat across layers ({stack}, init)",
                "theory": "top/bottom ~ 1 (within 2/3..3/2)",
                "measured": f"top/bottom = {_fmt(*pre)} ({n} seeds, 95% interval)",
                "holds": 2 / 3 < pre[1] and pre[2] < 3 / 2,
            }
        )
    if "after_warmup" in res:
        after = float(np.mean(res["after_warmup"]["decoder"]["W2"]["mean"]))
        init = t_interval([np.mean(v) for v in f["post"]["decoder"]["W2"]["values"]])
        out.append(
            {
                "claim": "Post-LN gradients shrink after warm-up (decoder W2, mean over layers)",
                "theory": "after < init",
                "measured": f"after {after:.3g} vs init {init[0]:.3g} [{init[1]:.3g}, {init[2]:.3g}] "
                f"({n} init seeds, 95% interval)",
                "holds": after < init[1],
            }
        )
    return out


def _depth(res: dict) -> list[dict]:
    out, fits = [], {}
    for norm, target in (("post", 0.0), ("pre", -0.5)):
        fit = fits[norm] = res["depth"][norm]["decoder"]["fit"]
        lo, hi = fit["ci95"]
        out.append(
            {
                "claim": f"{norm.capitalize()}-LN last-layer W2 gradient norm vs depth L (log-log slope)",
                "theory": f"{target:+.1f}",
                "measured": f"{fit['slope']:+.3f} [{lo:+.3f}, {hi:+.3f}]",
                "holds": lo <= target <= hi,
            }
        )
    (p_lo, p_hi), (q_lo, q_hi) = fits["post"]["ci95"], fits["pre"]["ci95"]
    out.append(
        {
            "claim": "Depth slopes land on the predicted sides (Pre-LN decays with L, faster than Post-LN)",
            "theory": "pre < 0 and pre < post (intervals)",
            "measured": f"post [{p_lo:+.3f}, {p_hi:+.3f}], pre [{q_lo:+.3f}, {q_hi:+.3f}]",
            "holds": q_hi < 0 and q_hi < p_lo,
        }
    )
    return out


def _width(res: dict) -> list[dict]:
    t, fit = res["width"]["theory_slope"], res["width"]["post"]["fit"]
    lo, hi = fit["ci95"]
    measured = f"{fit['slope']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    return [
        {
            "claim": "Theorem 1 bound: Post-LN last-layer W2 gradient grows with width d no faster than "
            "d sqrt(ln d) (log-log slope)",
            "theory": f"<= {t:+.3f}",
            "measured": measured,
            "holds": hi <= t,
        },
        {
            "claim": "Information (not a prediction: Theorem 1 is an O() bound): how close the slope comes "
            "to that of d sqrt(ln d)",
            "theory": f"bound slope {t:+.3f}",
            "measured": measured,
            "holds": None,
        },
    ]


def _lemma2(res: dict) -> list[dict]:
    lt = res["lemma2_theory"]
    post = [t_interval(col) for col in np.array(lt["post"]["values"]).T]  # per layer over seeds
    # holds when every layer's interval reaches 1.5 (within the 5% a finite d and batch allow)
    post_ok = all(lo <= 1.5 * 1.05 and hi >= 1.5 * 0.95 for _, lo, hi in post)
    worst = max(abs(m / 1.5 - 1) for m, _, _ in post)
    pre = lt["pre"]
    pre_iv = [t_interval(col) for col in np.array(pre["values"]).T]
    pre_ok = all(
        lo_i <= hi_b * 1.05 and hi_i >= lo_b * 0.95
        for (_, lo_i, hi_i), lo_b, hi_b in zip(pre_iv, pre["lower"], pre["upper"])
    )
    vals = ", ".join(f"{m:.2f}" for m, _, _ in pre_iv)
    n = len(lt["post"]["values"])
    return [
        {
            "claim": "Lemma 2, Post-LN: E‖x^{post,5}_l‖² = 1.5 d at every layer (theory setting)",
            "theory": "1.5 d",
            "measured": f"{min(m for m, _, _ in post):.3f} d .. {max(m for m, _, _ in post):.3f} d "
            f"(worst mean {worst:.1%} off; {n} seeds)",
            "holds": post_ok,
        },
        {
            "claim": "Lemma 2, Pre-LN: (1 + l/2) d ≤ E‖x_l‖² ≤ (1 + 3l/2) d (theory setting)",
            "theory": "within the bounds",
            "measured": f"l = 0..{len(pre_iv) - 1}: {vals} (x d; {n} seeds)",
            "holds": pre_ok,
        },
    ]


def predictions(res: dict) -> list[dict]:
    """Each prediction of the paper next to the measured value and whether it holds."""
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
