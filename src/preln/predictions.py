"""The paper's predictions about gradients and hidden states (Theorem 1, Lemma 2, Fig. 3) beside
the values ``analysis.run_analysis`` measured: a pure function of its results dict."""

from __future__ import annotations

import numpy as np


def _ratio(col: dict) -> float:
    """Top layer's mean over bottom layer's mean."""
    return col["mean"][-1] / col["mean"][0]


def predictions(res: dict) -> list[dict]:
    """Each prediction of the paper next to the measured value and whether it holds."""
    out = []
    f = res.get("fig3", {})
    for stack in ("encoder", "decoder") if f else ():
        r_post, r_pre = _ratio(f["post"][stack]["W2"]), _ratio(f["pre"][stack]["W2"])
        out.append(
            {
                "claim": f"Post-LN W2 gradient norm rises toward the top layer ({stack}, init)",
                "theory": "top/bottom > 1",
                "measured": f"top/bottom = {r_post:.2f}",
                "holds": r_post > 1,
            }
        )
        out.append(
            {
                "claim": f"Pre-LN W2 gradient norm is flat across layers ({stack}, init)",
                "theory": "top/bottom ~ 1 (within 2/3..3/2)",
                "measured": f"top/bottom = {r_pre:.2f}",
                "holds": 2 / 3 < r_pre < 3 / 2,
            }
        )
    if "after_warmup" in res:
        w, i = res["after_warmup"]["decoder"]["W2"]["mean"], f["post"]["decoder"]["W2"]["mean"]
        ratio = float(np.mean(w) / np.mean(i))
        out.append(
            {
                "claim": "Post-LN gradients shrink after warm-up (decoder W2, mean over layers)",
                "theory": "after / init < 1",
                "measured": f"after / init = {ratio:.2f}",
                "holds": ratio < 1,
            }
        )
    if "depth" in res:
        for norm, target in (("post", 0.0), ("pre", -0.5)):
            fit = res["depth"][norm]["decoder"]["fit"]
            lo, hi = fit["ci95"]
            out.append(
                {
                    "claim": f"{norm.capitalize()}-LN last-layer W2 gradient norm vs depth L (log-log slope)",
                    "theory": f"{target:+.1f}",
                    "measured": f"{fit['slope']:+.3f} [{lo:+.3f}, {hi:+.3f}]",
                    "holds": lo <= target <= hi,
                }
            )
        sp, sq = res["depth"]["post"]["decoder"]["fit"]["slope"], res["depth"]["pre"]["decoder"]["fit"]["slope"]
        out.append(
            {
                "claim": "Depth slopes land on the predicted sides (Pre-LN decays with L, faster than Post-LN)",
                "theory": "pre < 0 and pre < post",
                "measured": f"post {sp:+.3f}, pre {sq:+.3f}",
                "holds": sq < 0 and sq < sp,
            }
        )
    if "width" in res:
        t = res["width"]["theory_slope"]
        fit = res["width"]["post"]["fit"]
        lo, hi = fit["ci95"]
        out.append(
            {
                "claim": "Theorem 1 bound: Post-LN last-layer W2 gradient grows with width d no faster than "
                "d sqrt(ln d) (log-log slope)",
                "theory": f"<= {t:+.3f}",
                "measured": f"{fit['slope']:+.3f} [{lo:+.3f}, {hi:+.3f}]",
                "holds": hi <= t,
            }
        )
        out.append(
            {
                "claim": "... and the bound is tight: the slope equals that of d sqrt(ln d)",
                "theory": f"{t:+.3f}",
                "measured": f"{fit['slope']:+.3f} [{lo:+.3f}, {hi:+.3f}]",
                "holds": lo <= t <= hi,
            }
        )
    if "lemma2_theory" in res:
        lt = res["lemma2_theory"]
        post = lt["post"]["mean"]
        worst = max(abs(v / 1.5 - 1) for v in post)
        out.append(
            {
                "claim": "Lemma 2, Post-LN: E||x^{post,5}_l||^2 = 1.5 d at every layer (theory setting)",
                "theory": "1.5 d",
                "measured": f"{min(post):.3f} d .. {max(post):.3f} d (worst {worst:.1%} off)",
                "holds": worst <= 0.05,
            }
        )
        pre = lt["pre"]
        inside = all(lo * 0.95 <= v <= hi * 1.05 for v, lo, hi in zip(pre["mean"], pre["lower"], pre["upper"]))
        vals = ", ".join(f"{v:.2f}" for v in pre["mean"])
        out.append(
            {
                "claim": "Lemma 2, Pre-LN: (1 + l/2) d <= E||x_l||^2 <= (1 + 3l/2) d (theory setting)",
                "theory": "within the bounds",
                "measured": f"l = 0..{len(pre['mean']) - 1}: {vals} (x d)",
                "holds": inside,
            }
        )
    return out
