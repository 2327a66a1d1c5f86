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
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from .. import config
from ..config import ModelConfig, Placement, RunConfig
from ..data import Batch, CorpusError, load_data, resolve_path
from ..data.batching import pad
from ..data.corpus import display_path
from ..data.tokenizer import BOS, EOS, PAD
from ..fit import fit
from ..model import EncoderLayer, Stack, build_model
from ..trainer import Trainer, compute_loss
from .predictions import predictions

MATRIX = {"q_proj": "WQ", "k_proj": "WK", "v_proj": "WV", "out_proj": "WO", "w1": "W1", "w2": "W2"}
_NAME = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.(?:(self_attn|cross_attn)\.(\w+)|ffn\.(w1|w2))\.weight$")


@dataclass(frozen=True)
class AnalysisConfig:
    preset: str = "cpu"
    """``cpu`` (<= 5 minutes on 2 cores) or ``paper`` (the paper's sizes; a GPU)."""
    d_model: int = 256
    n_heads: int = 4
    d_ffn: int = 512
    layers: int = 6
    """Encoder = decoder depth for Fig. 3a/b and the width sweep."""
    seeds: int = 3
    """Initializations averaged for Fig. 3a/b and the width sweep."""
    batches: int = 4
    """M: mini-batches the expected gradient is averaged over."""
    max_tokens: int = 2000
    warmup_updates: int = 100
    """Post-LN "after warm-up": updates of linear warm-up (inverse-sqrt after) before measuring."""
    warmup_lr: float = 5e-4
    warmup_seeds: int = 1
    depths: tuple[int, ...] = (6, 8, 10, 12, 14)
    depth_seeds: int = 10
    depth_batches: int = 1
    depth_max_tokens: int = 1000
    widths: tuple[int, ...] = (128, 256, 512, 1024)
    width_seeds: int = 5
    """Seeds per width: a percentile-bootstrap interval over 2 seeds covers the true slope only
    ~74% of the time (simulated), over 5 ~89%, over 10 ~94%."""
    width_max_tokens: int = 500
    lemma_d: int = 512
    lemma_layers: int = 6
    lemma_seeds: int = 8
    lemma_tokens: int = 64
    """Positions per sequence in the theory setting (uniform attention averages over them)."""
    lemma_batch: int = 16
    placements: tuple[Placement, ...] = ()
    """``model.norm`` values measured side by side (per-layer gradients, depth slopes, residual
    stream; ``lab/placements.py``); empty = that part is off."""
    base: RunConfig = field(default_factory=RunConfig)
    """The run settings the measured models start from: corpus and tokenizer (``base.data``), and
    the trainer's for the warm-up runs; the model section is derived from the fields above."""


def preset(name: str) -> AnalysisConfig:
    if name == "cpu":
        return AnalysisConfig()
    if name == "paper":
        return AnalysisConfig(
            preset="paper",
            d_model=512,
            d_ffn=1024,
            seeds=10,
            batches=10,
            max_tokens=4096,
            warmup_updates=4000,
            warmup_seeds=3,
            depth_batches=4,
            depth_max_tokens=4096,
            width_seeds=10,
            width_max_tokens=4096,
            lemma_seeds=32,
        )
    raise ValueError(f"unknown analysis preset {name!r} (cpu or paper)")


def with_overrides(a: AnalysisConfig, items: list[str], data_path: str | None = None) -> AnalysisConfig:
    """``key=value`` overrides (TOML values) of AnalysisConfig fields (``base.data.path=...``
    for the run settings), type-checked; ``data_path`` sets the corpus."""
    try:
        a = config.override(a, [*items, *([f"base.data.path={config.toml_value(data_path)}"] if data_path else [])])
    except config.ConfigError as e:
        raise config.ConfigError(f"analyze --set {e}") from None
    check(a)
    return a


def check(a: AnalysisConfig) -> None:
    """Values the analysis cannot work with, as one-line errors naming the key."""
    counts = ("seeds", "batches", "max_tokens", "warmup_seeds", "depth_seeds", "depth_batches", "width_seeds")
    counts += ("depth_max_tokens", "width_max_tokens", "lemma_d", "lemma_layers", "lemma_seeds", "lemma_tokens")
    for name in (*counts, "d_model", "n_heads", "d_ffn", "layers", "lemma_batch"):
        if getattr(a, name) < 1:
            raise config.ConfigError(f"analyze --set {name}: must be >= 1, got {getattr(a, name)}")
    if a.d_model % a.n_heads:
        raise config.ConfigError(f"analyze: d_model={a.d_model} must divide by n_heads={a.n_heads}")
    for name in ("depths", "widths"):
        xs = getattr(a, name)
        if len(set(xs)) < 3 or min(xs) < 1:
            raise config.ConfigError(
                f"analyze --set {name}: a slope needs at least 3 distinct positive values, got {list(xs)}"
            )
    if any(w % a.n_heads for w in a.widths):
        raise config.ConfigError(f"analyze --set widths: each must divide by n_heads={a.n_heads}")
    if a.warmup_updates < 0 or not a.warmup_lr > 0:
        raise config.ConfigError("analyze: warmup_updates must be >= 0 and warmup_lr > 0")


# ------------------------------------------------------------------------- gradients


def matrix_key(param_name: str) -> tuple[str, int, str] | None:
    """``decoder.layers.5.cross_attn.q_proj.weight`` -> ("decoder", 5, "cross.WQ")."""
    m = _NAME.match(param_name)
    if not m:
        return None
    stack, layer, attn, proj, ffn = m.groups()
    if ffn:
        return stack, int(layer), MATRIX[ffn]
    prefix = "cross." if attn == "cross_attn" else ("self." if stack == "decoder" else "")
    return stack, int(layer), prefix + MATRIX[proj]


def expected_gradient_norms(model: nn.Module, batches: list[Batch], eps: float = 0.1) -> dict[str, float]:
    """Frobenius norm of the mean over ``batches`` of each parameter's gradient of the per-token
    mean loss. The root-sum-square over all parameters is the global norm of that mean."""
    model.train()
    model.zero_grad(set_to_none=True)
    device = next(model.parameters()).device  # the warm-up trainer may have put it on a GPU
    for b in batches:
        b = b.to(device)
        loss, _ = compute_loss(model, b, eps)
        (loss / (b.ntokens * len(batches))).backward()  # grads accumulate: their mean over batches
    norms = {n: float(p.grad.double().norm()) for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return norms


def layer_table(norms: dict[str, float]) -> dict[str, dict[str, list[float]]]:
    """{stack: {matrix: [norm of layer 0, 1, ...]}} for the named weight matrices."""
    out: dict[str, dict[str, list[float]]] = {}
    for name, v in norms.items():
        key = matrix_key(name)
        if key:
            stack, layer, mat = key
            col = out.setdefault(stack, {}).setdefault(mat, [])
            col.extend([math.nan] * (layer + 1 - len(col)))
            col[layer] = v
    return out


def mean_std(tables: list[dict[str, dict[str, list[float]]]]) -> dict:
    """Per stack/matrix/layer mean and std over seeds."""
    out: dict = {}
    for stack, mats in tables[0].items():
        for mat in mats:
            arr = np.array([t[stack][mat] for t in tables])  # (seeds, layers)
            out.setdefault(stack, {})[mat] = {
                "mean": arr.mean(0).tolist(),
                "std": arr.std(0).tolist(),
                "values": arr.tolist(),  # per seed, per layer: what the predictions' intervals use
            }
    return out


def model_config(a: AnalysisConfig, vocab: int, **kw) -> ModelConfig:
    base = dict(
        task="translation",
        d_model=a.d_model,
        n_heads=a.n_heads,
        d_ffn=a.d_ffn,
        encoder_layers=a.layers,
        decoder_layers=a.layers,
        dropout=0.0,
        vocab_size=vocab,
    )
    return ModelConfig(**{**base, **kw})


def init_model(c: ModelConfig, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(c, PAD)


def synthetic_batches(n: int, max_tokens: int, vocab: int, seed: int = 0) -> list[Batch]:
    """Random-token translation batches, for when no corpus is available (flagged as such)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        src_len, tgt_len = int(torch.randint(8, 24, (1,), generator=g)), int(torch.randint(8, 24, (1,), generator=g))
        bsz = max(1, max_tokens // (src_len + tgt_len + 2))
        src = [torch.randint(5, vocab, (src_len,), generator=g).tolist() + [EOS] for _ in range(bsz)]
        tgt = [torch.randint(5, vocab, (tgt_len,), generator=g).tolist() for _ in range(bsz)]
        tensors = {
            "src": pad(src, PAD),
            "tgt_in": pad([[BOS] + t for t in tgt], PAD),
            "tgt_out": pad([t + [EOS] for t in tgt], -100),
        }
        out.append(Batch(tensors, bsz * (tgt_len + 1)))
    return out


# ------------------------------------------------------------------------- hidden states


def residual_norms(stack: Stack, x: Tensor, keep: Tensor | None = None, **kw) -> list[float]:
    """E||x||^2 / d per layer, at the point Lemma 2 speaks of: Pre-LN, the residual stream x_l
    after l layers (l = 0..L); Post-LN, x^{post,5}_l = x^{post,3} + FFN(x^{post,3}), the sum that
    the last LayerNorm of layer l normalizes (l = 1..L). ``keep`` (B, T) selects real tokens."""
    seen: list[Tensor] = []

    def grab(module, args):
        h = args[0].detach().double()  # (B, T, d)
        sq = (h * h).sum(-1)
        seen.append(sq[keep].mean() if keep is not None else sq.mean())

    pre = stack.final_norm is not None
    targets = [*stack.layers, stack.final_norm] if pre else [layer.ffn_res.norm for layer in stack.layers]
    handles = [m.register_forward_pre_hook(grab) for m in targets]
    try:
        with torch.no_grad():
            stack(x, **kw)
    finally:
        for h in handles:
            h.remove()
    d = x.shape[-1]
    return [float(v) / d for v in seen]


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


def loglog_slope(xs: list[float], ys: list[list[float]], n_boot: int = 2000, seed: int = 0) -> dict:
    """Least-squares slope of mean log y against log x, with a 95% bootstrap interval that
    resamples the seeds (the inner lists) at each x."""
    lx = np.log(np.asarray(xs, dtype=float))
    logs = [np.log(np.asarray(y, dtype=float)) for y in ys]

    def slope(means: np.ndarray) -> float:
        return float(np.polyfit(lx, means, 1)[0])

    point = slope(np.array([v.mean() for v in logs]))
    rng = np.random.default_rng(seed)
    boot = [slope(np.array([rng.choice(v, len(v)).mean() for v in logs])) for _ in range(n_boot)]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"slope": point, "ci95": [float(lo), float(hi)]}


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


def last_w2(norms: dict[str, float], stack: str, layers: int) -> float:
    return norms[f"{stack}.layers.{layers - 1}.ffn.w2.weight"]


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
        from . import placements  # it builds on this module's measurements

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
