"""Fig. 3 for every placement of ``model.norm`` (``preln analyze --placements ...``): at
initialization, the per-layer expected-gradient norms of the FFN weights, the last layer's W^2
gradient against depth (log-log slope with a seed-bootstrap interval), and the growth of the
residual stream E||x_l||^2 / d through the layers. Same model, batches and seeds as the rest of
``preln analyze``; Admin's omegas come from its profiling pass on the first batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..data import Batch
from ..data.tokenizer import PAD
from ..model import Stack
from ..model_init import init_from_data
from ..tasks import compute_loss
from .measure import (
    AnalysisConfig,
    expected_gradient_norms,
    init_model,
    last_w2,
    layer_table,
    loglog_slope,
    mean_std,
    model_config,
)


def placement_model(a: AnalysisConfig, vocab: int, norm: str, seed: int, batch: Batch, **kw) -> nn.Module:
    """A model of placement ``norm`` at initialization (Admin: after its profiling pass)."""
    model = init_model(model_config(a, vocab, norm=norm, **kw), seed)
    model.eval()
    init_from_data(model, lambda: compute_loss(model, batch, 0.1))
    return model


def stream_norms(stack: Stack, x: torch.Tensor, keep: torch.Tensor, **kw) -> list[float]:
    """E||x_l||^2 / d of the residual stream entering each layer and leaving the last (before a
    final norm), l = 0..L, over real tokens."""
    seen: list[float] = []

    def grab(h: torch.Tensor) -> None:
        h = h.detach().double()
        seen.append(float((h * h).sum(-1)[keep].mean()) / h.shape[-1])

    handles = [m.register_forward_pre_hook(lambda mod, args: grab(args[0])) for m in stack.layers]
    handles.append(stack.layers[-1].register_forward_hook(lambda mod, args, out: grab(out)))
    try:
        with torch.no_grad():
            stack(x, **kw)
    finally:
        for h in handles:
            h.remove()
    return seen


def stream(model: nn.Module, batch: Batch) -> dict[str, list[float]]:
    t = batch.tensors
    with torch.no_grad():
        memory, mask = model.encode(t["src"])
        enc = stream_norms(model.encoder, model.src_embed(t["src"]), t["src"] != PAD, mask=mask)
        tgt = model.tgt_embed(t["tgt_in"])
        dec = stream_norms(model.decoder, tgt, t["tgt_in"] != PAD, memory=memory, memory_mask=mask, is_causal=True)
    return {"encoder": enc, "decoder": dec}


def _fit(xs: list[int], values: list[list[float]]) -> dict | None:
    """The log-log slope, or None where a gradient is 0 (ReZero's gates are 0 at init)."""
    if any(v <= 0 or not math.isfinite(v) for vals in values for v in vals):
        return None
    return loglog_slope(xs, values)


def measure(a: AnalysisConfig, batches: list[Batch], depth_batches: list[Batch], vocab: int, bar: tqdm) -> dict:
    """{"placements": [...], "depths": [...], <norm>: {"layers", "depth", "stream"}} for a.placements."""
    out: dict = {"placements": list(a.placements), "depths": list(a.depths)}
    for norm in a.placements:
        tables = []
        for s in range(a.seeds):
            model = placement_model(a, vocab, norm, s, batches[0])
            tables.append(layer_table(expected_gradient_norms(model, batches)))
            bar.update(1)
        depth = {"encoder": [], "decoder": []}
        for L in a.depths:
            per_seed = {"encoder": [], "decoder": []}
            for s in range(a.depth_seeds):
                model = placement_model(a, vocab, norm, s, depth_batches[0], encoder_layers=L, decoder_layers=L)
                norms = expected_gradient_norms(model, depth_batches)
                for stack in per_seed:
                    per_seed[stack].append(last_w2(norms, stack, L))
                bar.update(1)
            for stack in depth:
                depth[stack].append(per_seed[stack])
        out[norm] = {
            "layers": mean_std(tables),
            "depth": {
                k: {"values": v, "mean": [float(np.mean(x)) for x in v], "fit": _fit(a.depths, v)}
                for k, v in depth.items()
            },
            "stream": stream(placement_model(a, vocab, norm, 0, batches[0]).eval(), batches[0]),
        }
    return out


def work(a: AnalysisConfig) -> int:
    """Models this part builds (for the progress bar)."""
    return len(a.placements) * (a.seeds + len(a.depths) * a.depth_seeds)
