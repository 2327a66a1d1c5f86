"""Gradients and hidden-state scales at initialization: Xiong et al. 2020, Sec. 3 and Fig. 3.

Reads models, returns numbers (plain dicts, JSON-ready); plotting and the markdown summary are in
``analysis_report.py``. What is measured:

* Fig. 3a/b: for every weight matrix (attention W^Q/W^K/W^V/W^O, FFN W^1/W^2) of every layer,
  the Frobenius norm of the *expected* gradient: the gradient of the per-token mean loss is
  averaged element-wise over M mini-batches, then its norm is taken. Post-LN vs Pre-LN at
  initialization, and Post-LN after its warm-up updates; mean and std over seeds.
* Fig. 3c/d and Theorem 1: the last layer's W^2 gradient norm against depth L (log-log slope,
  predicted ~0 for Post-LN and -1/2 for Pre-LN) and against width d (predicted d sqrt(ln d)).
* Lemma 2: E||x||^2 per layer in the theory's own setting (one head, W^Q = W^K = 0, Xavier
  Gaussian weights, Gaussian inputs) and on the real model.

Dropout is 0 throughout: the statements are about the deterministic network at initialization.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .. import config
from ..config import ModelConfig
from ..data import Batch, CorpusError, resolve_path
from ..data.corpus import display_path
from ..data.tokenizer import PAD
from ..fit import fit
from ..model import EncoderLayer, Stack
from ..tasks import load_data
from ..trainer import Trainer
from . import placements
from .measure import (
    AnalysisConfig,
    check,
    expected_gradient_norms,
    init_model,
    last_w2,
    layer_table,
    loglog_slope,
    mean_std,
    model_config,
    preset,
    residual_norms,
    synthetic_batches,
    with_overrides,
)
from .predictions import predictions

__all__ = ["AnalysisConfig", "PARTS", "preset", "run_analysis", "with_overrides"]

# ------------------------------------------------------------------------- hidden states


def theory_stack(norm: str, d: int, layers: int, seed: int) -> Stack:
    """Lemma 2's setting: one head, W^Q = W^K = 0 (uniform attention), Xavier *Gaussian* weights
    N(0, 2 / (fan_in + fan_out)), zero biases, FFN width d, LayerNorm without learned scale."""
    c = ModelConfig(norm=norm, d_model=d, n_heads=1, d_ffn=d, dropout=0.0, vocab_size=1)
    torch.manual_seed(seed)
    stack = Stack(EncoderLayer, c, layers)
    for m in stack.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)
    for layer in stack.layers:
        nn.init.zeros_(layer.self_attn.q_proj.weight)
        nn.init.zeros_(layer.self_attn.k_proj.weight)
    return stack.double()


def lemma2_theory(a: AnalysisConfig, bar: tqdm | None = None) -> dict:
    """E||x_l||^2 / d in the theory setting, averaged over weight seeds and Gaussian inputs."""
    out = {}
    for norm in ("post", "pre"):
        runs = []
        for s in range(a.lemma_seeds):
            g = torch.Generator().manual_seed(10_000 + s)
            x = torch.randn(a.lemma_batch, a.lemma_tokens, a.lemma_d, generator=g, dtype=torch.float64)
            runs.append(residual_norms(theory_stack(norm, a.lemma_d, a.lemma_layers, s), x))
            if bar:
                bar.update(1)
        arr = np.array(runs)
        out[norm] = {"mean": arr.mean(0).tolist(), "std": arr.std(0).tolist(), "values": arr.tolist()}
    L = a.lemma_layers
    out["post"]["layers"] = list(range(1, L + 1))
    out["post"]["theory"] = [1.5] * L
    out["pre"]["layers"] = list(range(0, L + 1))
    out["pre"]["lower"] = [1 + layer / 2 for layer in range(L + 1)]
    out["pre"]["upper"] = [1 + 3 * layer / 2 for layer in range(L + 1)]
    out["d"], out["seeds"], out["tokens"] = a.lemma_d, a.lemma_seeds, a.lemma_batch * a.lemma_tokens
    return out


def lemma2_real(model: nn.Module, batch: Batch) -> dict[str, list[float]]:
    """The same statistic on a real encoder-decoder and a real batch (real tokens only)."""
    t = batch.tensors
    with torch.no_grad():
        src_x = model.src_embed(t["src"])
        memory, mask = model.encode(t["src"])
        tgt_x = model.tgt_embed(t["tgt_in"])
    enc = residual_norms(model.encoder, src_x, t["src"] != PAD, mask=mask)
    dec = residual_norms(model.decoder, tgt_x, t["tgt_in"] != PAD, memory=memory, memory_mask=mask, is_causal=True)
    return {"encoder": enc, "decoder": dec}


# ------------------------------------------------------------------------- fits


# ------------------------------------------------------------------------- experiments


def load_batches(a: AnalysisConfig) -> tuple[object | None, int, str]:
    """The corpus as batches-to-be (or None with a synthetic vocabulary) and a description."""
    try:
        data, tok = load_data(replace(a.base, train=replace(a.base.train, seed=1)))
        return data, len(tok), f"{a.base.data.corpus} corpus at {display_path(resolve_path(a.base.data.path))}"
    except (CorpusError, FileNotFoundError) as e:
        return None, a.base.data.vocab_size, f"SYNTHETIC random tokens (no corpus: {e})"


def take_batches(data, vocab: int, n: int, max_tokens: int) -> list[Batch]:
    """The first ``n`` batches of epoch 1's order under a ``max_tokens`` budget."""
    if data is None:
        return synthetic_batches(n, max_tokens, vocab)
    rebatched = type(data)(data.examples, max_tokens, data.seed)
    return [rebatched.batch("train", 1, k) for k in range(min(n, rebatched.num_batches()))]


def fig3(a: AnalysisConfig, batches: list[Batch], vocab: int, bar: tqdm) -> dict:
    """Per-layer expected-gradient norms at initialization, both placements, over seeds."""
    out = {}
    for norm in ("post", "pre"):
        tables = []
        for s in range(a.seeds):
            tables.append(
                layer_table(expected_gradient_norms(init_model(model_config(a, vocab, norm=norm), s), batches))
            )
            bar.update(1)
        out[norm] = mean_std(tables)
    return out


def after_warmup(a: AnalysisConfig, batches: list[Batch], vocab: int, folder: Path, bar: tqdm) -> dict:
    """Post-LN trained for its warm-up updates (real corpus), then measured like ``fig3``."""
    tables = []
    for s in range(a.warmup_seeds):
        cfg = replace(
            a.base,
            model=model_config(a, 0, norm="post"),
            optim=replace(a.base.optim, name="adam", lr=a.warmup_lr, betas=(0.9, 0.98)),
            schedule=replace(a.base.schedule, kind="inverse_sqrt", warmup=a.warmup_updates, timescale=0),
            train=replace(
                a.base.train,
                seed=s,
                max_updates=a.warmup_updates,
                log_every=10,
                valid_every=0,
                save_every=0,
                progress=True,
                valid_bleu=False,
                label_smoothing=0.1,
            ),
        )
        with Trainer(cfg, folder / f"warmup-post-seed{s}") as trainer:
            fit(trainer)
        tables.append(layer_table(expected_gradient_norms(trainer.model, batches)))
        bar.update(1)
    return mean_std(tables)


def depth_sweep(a: AnalysisConfig, batches: list[Batch], vocab: int, bar: tqdm) -> dict:
    """Last-layer W^2 gradient norm for encoder = decoder depth L in ``a.depths``."""
    out: dict = {"depths": list(a.depths)}
    for norm in ("post", "pre"):
        res = {"encoder": [], "decoder": []}
        for L in a.depths:
            per_seed = {"encoder": [], "decoder": []}
            for s in range(a.depth_seeds):
                c = model_config(a, vocab, norm=norm, encoder_layers=L, decoder_layers=L)
                norms = expected_gradient_norms(init_model(c, s), batches)
                for stack in per_seed:
                    per_seed[stack].append(last_w2(norms, stack, L))
                bar.update(1)
            for stack in res:
                res[stack].append(per_seed[stack])
        out[norm] = {
            stack: {
                "values": v,
                "mean": [float(np.mean(x)) for x in v],
                "std": [float(np.std(x)) for x in v],
                "fit": loglog_slope(a.depths, v),
            }
            for stack, v in res.items()
        }
    return out


def width_sweep(a: AnalysisConfig, data, vocab: int, bar: tqdm) -> dict:
    """Last decoder layer's W^2 gradient norm for d in ``a.widths`` (FFN 2d, ``a.n_heads`` heads),
    against d sqrt(ln d)."""
    batches = take_batches(data, vocab, 1, a.width_max_tokens)
    out: dict = {"widths": list(a.widths)}
    for norm in ("post", "pre"):
        values = []
        for d in a.widths:
            per_seed = []
            for s in range(a.width_seeds):
                c = model_config(a, vocab, norm=norm, d_model=d, d_ffn=2 * d)
                per_seed.append(last_w2(expected_gradient_norms(init_model(c, s), batches), "decoder", a.layers))
                bar.update(1)
            values.append(per_seed)
        out[norm] = {
            "values": values,
            "mean": [float(np.mean(v)) for v in values],
            "fit": loglog_slope(a.widths, values),
        }
    ref = [d * math.sqrt(math.log(d)) for d in a.widths]
    out["theory_slope"] = float(np.polyfit(np.log(a.widths), np.log(ref), 1)[0])
    return out


PARTS = ("fig3", "warmup", "depth", "width", "lemma2")


def run_analysis(a: AnalysisConfig, out: Path, parts: tuple[str, ...] = PARTS) -> dict:
    """Run the selected parts; returns the ``analysis.json`` dict (see the README for its schema)."""
    check(a)
    out.mkdir(parents=True, exist_ok=True)
    data, vocab, source = load_batches(a)
    batches = take_batches(data, vocab, a.batches, a.max_tokens)
    depth_batches = take_batches(data, vocab, a.depth_batches, a.depth_max_tokens)
    n = (
        2 * a.seeds * ("fig3" in parts)
        + a.warmup_seeds * ("warmup" in parts)
        + 2 * len(a.depths) * a.depth_seeds * ("depth" in parts)
        + 2 * len(a.widths) * a.width_seeds * ("width" in parts)
        + 2 * a.lemma_seeds * ("lemma2" in parts)
    )
    res: dict = {
        "schema": 1,
        "preset": a.preset,
        "data": source,
        "synthetic": data is None,
        "settings": {k: v for k, v in config.to_dict(a).items() if k != "base"} | {"data": config.to_dict(a.base.data)},
        "vocab": vocab,
        "tokens_per_batch": [b.ntokens for b in batches],
    }
    if a.placements:
        n += placements.work(a)
    bar = tqdm(total=n, desc="analyze", unit="model", dynamic_ncols=True)
    if "fig3" in parts or "warmup" in parts:
        res["fig3"] = fig3(a, batches, vocab, bar)
    if "warmup" in parts and data is not None:
        res["after_warmup"] = after_warmup(a, batches, vocab, out, bar)
        res["warmup_updates"] = a.warmup_updates
    if "depth" in parts:
        res["depth"] = depth_sweep(a, depth_batches, vocab, bar)
    if "width" in parts:
        res["width"] = width_sweep(a, data, vocab, bar)
    if "lemma2" in parts:
        res["lemma2_theory"] = lemma2_theory(a, bar)
        res["lemma2_real"] = {
            norm: lemma2_real(init_model(model_config(a, vocab, norm=norm), 0).eval(), batches[0])
            for norm in ("post", "pre")
        }
    if a.placements:
        res["placements"] = placements.measure(a, batches, depth_batches, vocab, bar)
    bar.close()
    res["predictions"] = predictions(res)
    return res
