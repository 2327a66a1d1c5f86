"""How fast a study's conditions converge, from their validation curves: the mean curve over
seeds, the updates each needs to reach a target validation NLL (the minimum of the baseline's mean
curve), and the ratio of two conditions' updates with a 95% interval that resamples seeds
(with replacement) within each condition."""

from __future__ import annotations

import math
import random

from .document import mean

INF = math.inf


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
