"""The measurement primitives of ``preln analyze`` (``analysis.py``) and of its placements part
(``placements.py``): the analysis's settings, expected-gradient norms per weight matrix, the
residual stream's scale per layer, models at initialization, and the log-log slope of a sweep.
Both experiment modules build on these; neither imports the other's internals."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from .. import config
from ..config import ModelConfig, Placement, RunConfig
from ..data import Batch
from ..data.batching import pad
from ..data.tokenizer import BOS, EOS, PAD
from ..errors import ConfigError
from ..model import Stack
from ..tasks import build_model, compute_loss
from .stats import slope_interval

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
    raise ConfigError(f"unknown analysis preset {name!r} (cpu or paper)")


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


# ------------------------------------------------------------------------- fits


def loglog_slope(xs: list[float], ys: list[list[float]]) -> dict:
    """Least-squares slope of mean log y against log x, with its 95% t interval (the slope is a
    linear combination of the per-x means over independent seeds: ``stats.slope_interval``)."""
    iv = slope_interval(np.log(np.asarray(xs, dtype=float)), [np.log(np.asarray(y, dtype=float)) for y in ys])
    return {"slope": iv.estimate, "ci95": [iv.lo, iv.hi]}


def last_w2(norms: dict[str, float], stack: str, layers: int) -> float:
    return norms[f"{stack}.layers.{layers - 1}.ffn.w2.weight"]
