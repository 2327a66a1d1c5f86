"""Transformer with the place of normalization as one switch (``ModelConfig.norm``).

For each sub-layer F (attention or FFN) of a layer, with LN the norm (``model.norm_type``):

post      (Vaswani et al. 2017)            x <- LN(x + F(x))
pre       (Xiong et al. 2020)              x <- x + F(LN(x)),        final LN
sandwich  (Ding et al. 2021; Peri-LN)      x <- x + LN(F(LN(x))),    final LN
deepnorm  (Wang et al. 2022, DeepNet)      x <- LN(alpha x + F(x)),  V/O/FFN weights x beta at init
admin     (Liu et al. 2020)                x <- LN(omega * x + F(x)), omega from a profiling pass
rezero    (Bachlechner et al. 2020)        x <- x + a F(x),          a = 0 at init, no norm
mix       (Li et al. 2024, Mix-LN)         post in the first ceil(r L) layers, pre after, final LN

The switch is read in exactly two places: :class:`Residual` (the equation of one sub-layer) and
:class:`Stack` (each layer's placement, DeepNorm's alpha and beta, and the final norm, which
exists iff the last layer leaves the residual stream unnormalized). Everything else is shared, so
models of two placements differ in nothing but these lines, and built from one seed they share
every weight (DeepNorm's beta rescales some). The model knows nothing of training.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .config import ModelConfig, NormType, Placement
from .dropout import Dropout
from .errors import ConfigError, UsageError
from .kv_cache import Cache, append_to_cache, copy_rows, reorder

# Attention kernels on CUDA. cuDNN's is left out: with token-budget batches every batch has a new
# (B, T) shape, and cuDNN builds an execution plan per shape; measured on an H200 (torch 2.11,
# IWSLT-size model, bf16): 6.7k target tokens/s with it, 48.5k without.
CUDA_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


class LayerNorm(nn.LayerNorm):
    """LayerNorm whose statistics are always computed in float32, also under bf16/fp16 autocast
    (and whose output, the residual stream in Post-LN, stays float32)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                w, b = self.weight.float(), self.bias.float()
                return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps)
        return super().forward(x)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * g (Zhang & Sennrich 2019): no centring, no bias; statistics in
    float32 under autocast, like :class:`LayerNorm`."""

    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(d)), eps

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps)
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def make_norm(kind: NormType, d: int) -> nn.Module:
    return LayerNorm(d) if kind == "layernorm" else RMSNorm(d)


def step_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """softmax(q k^T / sqrt(dh)) v as two batched matrix products: a few queries (B, H, Tq, dh)
    against keys and values (B, H, S, dh); ``mask`` bool (True = may attend) or float (added to the
    scores). For decoding steps on the CPU: torch's fused kernel works per (row, head) block and
    ran beam search's cross-attention (a sentence's 5 beams against its memory row, a padding mask)
    2-3.4x slower, and one query against 100-200 cached positions up to 1.2x slower (4 heads of
    16; within 10% either way for shorter caches). A weak model's beam search: 0.94x the time."""
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5)  # (B, H, Tq, S)
    if mask is not None and mask.dtype == torch.bool:
        scores.masked_fill_(~mask, -torch.inf)
    elif mask is not None:  # a float mask is added, as torch's kernel does
        scores.add_(mask)
    return torch.matmul(scores.softmax(-1), v)


class Attention(nn.Module):
    """Multi-head attention with separate Q/K/V/O projections (the paper's W^Q, W^K, W^V, W^O).

    ``cache`` (a dict owned by the caller) makes decoding incremental: self-attention appends
    this step's keys/values (its three projections as one product, ``_qkv``); cross-attention
    computes the memory's keys/values, and its mask as a float to add, once.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _heads(self, x: Tensor) -> Tensor:  # (B, T, d) -> (B, H, T, d/H)
        B, T, d = x.shape
        return x.view(B, T, self.n_heads, d // self.n_heads).transpose(1, 2)

    def _qkv(self, cache: Cache) -> tuple[Tensor, Tensor]:
        """W^Q, W^K, W^V stacked (and their biases), made once per cache: a decoding step's three
        projections as one matrix product (the weights do not change while a cache lives)."""
        if "qkv_w" not in cache:
            projs = (self.q_proj, self.k_proj, self.v_proj)
            cache["qkv_w"], cache["qkv_b"] = (torch.cat([getattr(m, n) for m in projs]) for n in ("weight", "bias"))
        return cache["qkv_w"], cache["qkv_b"]

    def forward(
        self,
        x: Tensor,  # (B, T, d) queries (and keys/values for self-attention)
        memory: Tensor | None = None,  # (B/G, S, d) keys/values for cross-attention, each row for G query rows
        mask: Tensor | None = None,  # bool, True = may attend; broadcasts to (B, H, T, S)
        is_causal: bool = False,
        cache: Cache | None = None,
    ) -> Tensor:
        if memory is None and cache is None:
            q, k, v = (self._heads(m(x)) for m in (self.q_proj, self.k_proj, self.v_proj))
        elif memory is None:  # a decoding step: q, k and v from one product
            q, k, v = map(self._heads, F.linear(x, *self._qkv(cache)).chunk(3, -1))
            k, v = append_to_cache(cache, k, v)
        else:
            q = self._heads(self.q_proj(x))
            if cache is not None and "k" in cache:
                k, v, mask = cache["k"], cache["v"], cache.get("bias", mask)
            else:
                k, v = self._heads(self.k_proj(memory)), self._heads(self.v_proj(memory))
                if cache is not None:  # contiguous once: every step's products would copy the views
                    cache["k"], cache["v"] = k, v = k.contiguous(), v.contiguous()
                    if mask is not None:  # a float to add, once: a bool mask costs two ops a step
                        bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device)
                        cache["bias"] = bias.masked_fill_(~mask, -torch.inf)
        B, H, T, dh = q.shape
        if memory is not None and B % k.shape[0]:
            raise UsageError(f"{B} query rows cannot share {k.shape[0]} memory rows evenly")
        G = B // k.shape[0] if memory is not None else 1  # query rows per memory row: a sentence's beams
        if G > 1:  # (B, H, T, dh) -> (B/G, H, G*T, dh): one memory row's queries attend together
            q = q.view(-1, G, H, T, dh).transpose(1, 2).reshape(-1, H, G * T, dh)
        p = self.dropout if self.training else 0.0
        decoding_step = G > 1 or (memory is None and cache is not None and T == 1)
        if decoding_step and p == 0.0 and q.device.type == "cpu":
            out = step_attention(q, k, v, mask)
        else:  # not cuDNN's kernel on CUDA: it plans anew for every new shape (measured 7x slower, H200)
            with sdpa_kernel(CUDA_SDPA_BACKENDS) if q.is_cuda else contextlib.nullcontext():
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal)
        if G > 1:
            out = out.view(-1, H, G, T, dh).transpose(1, 2).reshape(B, H, T, dh)
        return self.out_proj(out.transpose(1, 2).reshape(B, T, H * dh))


class FeedForward(nn.Module):
    """FFN(x) = W2 act(W1 x + b1) + b2."""

    def __init__(self, d_model: int, d_ffn: int, activation: str, dropout: float) -> None:
        super().__init__()
        self.w1, self.w2 = nn.Linear(d_model, d_ffn), nn.Linear(d_ffn, d_model)
        self.act = F.relu if activation == "relu" else F.gelu
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(self.dropout(self.act(self.w1(x))))


LayerKind = Literal["post", "pre", "sandwich", "deepnorm", "admin", "rezero"]
Role = Literal["encoder", "decoder", "encoder-only"]


class Residual(nn.Module):
    """A residual connection around one sub-layer F, normalized as its layer's ``kind`` says."""

    def __init__(self, d_model: int, kind: LayerKind, dropout: float, norm_type: NormType, alpha: float = 1.0):
        super().__init__()
        self.kind, self.alpha = kind, alpha
        self.norm = make_norm(norm_type, d_model) if kind != "rezero" else None
        self.post_norm = make_norm(norm_type, d_model) if kind == "sandwich" else None
        self.omega = nn.Parameter(torch.ones(d_model)) if kind == "admin" else None
        self.gate = nn.Parameter(torch.zeros(())) if kind == "rezero" else None
        self.dropout = Dropout(dropout)
        self.profile: list[float] | None = None  # admin: Var[F(x)] recorded while profiling

    def forward(self, x: Tensor, f: Callable[[Tensor], Tensor]) -> Tensor:
        k = self.kind
        if k == "pre":
            return x + self.dropout(f(self.norm(x)))  # x + F(LN(x))
        if k == "sandwich":
            return x + self.dropout(self.post_norm(f(self.norm(x))))  # x + LN(F(LN(x)))
        if k == "rezero":
            return x + self.gate * self.dropout(f(x))  # x + a F(x)
        y = f(x)
        if k == "deepnorm":
            return self.norm(self.alpha * x + self.dropout(y))  # LN(alpha x + F(x))
        if k == "admin":
            if self.profile is not None:
                self.profile.append(float(y.detach().double().var()))
            return self.norm(self.omega * x + self.dropout(y))  # LN(omega * x + F(x))
        return self.norm(x + self.dropout(y))  # post: LN(x + F(x))


class EncoderLayer(nn.Module):
    def __init__(self, c: ModelConfig, kind: LayerKind, alpha: float = 1.0) -> None:
        super().__init__()
        self.self_attn = Attention(c.d_model, c.n_heads, c.attention_dropout)
        self.ffn = FeedForward(c.d_model, c.d_ffn, c.activation, c.activation_dropout)
        self.attn_res = Residual(c.d_model, kind, c.dropout, c.norm_type, alpha)
        self.ffn_res = Residual(c.d_model, kind, c.dropout, c.norm_type, alpha)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, is_causal: bool = False, cache: Cache | None = None
    ) -> Tensor:
        x = self.attn_res(x, lambda h: self.self_attn(h, mask=mask, is_causal=is_causal, cache=cache))
        return self.ffn_res(x, self.ffn)


class DecoderLayer(nn.Module):
    def __init__(self, c: ModelConfig, kind: LayerKind, alpha: float = 1.0) -> None:
        super().__init__()
        self.self_attn = Attention(c.d_model, c.n_heads, c.attention_dropout)
        self.cross_attn = Attention(c.d_model, c.n_heads, c.attention_dropout)
        self.ffn = FeedForward(c.d_model, c.d_ffn, c.activation, c.activation_dropout)
        self.self_res = Residual(c.d_model, kind, c.dropout, c.norm_type, alpha)
        self.cross_res = Residual(c.d_model, kind, c.dropout, c.norm_type, alpha)
        self.ffn_res = Residual(c.d_model, kind, c.dropout, c.norm_type, alpha)

    def forward(
        self,
        x: Tensor,  # (B, T, d)
        memory: Tensor,  # (B, S, d)
        memory_mask: Tensor | None,  # (B, 1, 1, S) bool
        self_mask: Tensor | None = None,
        is_causal: bool = False,
        cache: dict[str, Cache] | None = None,
    ) -> Tensor:
        sc, cc = (cache["self"], cache["cross"]) if cache is not None else (None, None)
        x = self.self_res(x, lambda h: self.self_attn(h, mask=self_mask, is_causal=is_causal, cache=sc))
        x = self.cross_res(x, lambda h: self.cross_attn(h, memory, mask=memory_mask, cache=cc))
        return self.ffn_res(x, self.ffn)


def deepnorm_constants(role: Role, n_enc: int, n_dec: int) -> tuple[float, float]:
    """DeepNet's (alpha, beta) (Wang et al. 2022, Table 1): N encoder and M decoder layers."""
    N, M = n_enc, n_dec
    if role == "encoder":
        return 0.81 * (N**4 * M) ** (1 / 16), 0.87 * (N**4 * M) ** (-1 / 16)
    if role == "decoder":
        return (3 * M) ** (1 / 4), (12 * M) ** (-1 / 4)
    return (2 * N) ** (1 / 4), (8 * N) ** (-1 / 4)


def layer_kinds(norm: Placement, n: int, mix_ratio: float) -> list[LayerKind]:
    """Each layer's placement: ``mix`` is Post-LN in the first ceil(mix_ratio * n), Pre-LN after."""
    if norm == "mix":
        n_post = math.ceil(mix_ratio * n)
        return ["post"] * n_post + ["pre"] * (n - n_post)
    return [norm] * n


class Stack(nn.Module):
    """n layers of ``layer`` (EncoderLayer or DecoderLayer) placed as ``c.norm`` says, then a
    final norm iff the last layer leaves the residual stream unnormalized (pre, sandwich, mix)."""

    def __init__(self, layer: type, c: ModelConfig, n: int, role: Role = "encoder-only") -> None:
        super().__init__()
        kinds = layer_kinds(c.norm, n, c.mix_ratio)
        deep = c.norm == "deepnorm"
        alpha, self.beta = deepnorm_constants(role, c.encoder_layers, c.decoder_layers) if deep else (1.0, None)
        self.layers = nn.ModuleList(layer(c, kind, alpha) for kind in kinds)
        self.final_norm = make_norm(c.norm_type, c.d_model) if kinds and kinds[-1] in ("pre", "sandwich") else None

    def forward(self, x: Tensor, cache: list | None = None, **kw) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x, **kw) if cache is None else layer(x, cache=cache[i], **kw)
        return self.final_norm(x) if self.final_norm is not None else x

    def rescale_init(self, gains: dict[int, float]) -> None:
        """DeepNorm: the value, output and FFN weights as if drawn with gain beta instead of the
        gain they were drawn with (``gains``: id(weight) -> gain; absent = 1)."""
        if self.beta is None:
            return
        with torch.no_grad():
            for layer in self.layers:
                attns = [m for m in (getattr(layer, "self_attn", None), getattr(layer, "cross_attn", None)) if m]
                for w in [p for a in attns for p in (a.v_proj.weight, a.out_proj.weight)]:
                    w.mul_(self.beta / gains.get(id(w), 1.0))
                for w in (layer.ffn.w1.weight, layer.ffn.w2.weight):
                    w.mul_(self.beta / gains.get(id(w), 1.0))

    def residuals(self) -> list[Residual]:
        """The sub-layers' residual connections in the order the forward pass runs them."""
        return [m for layer in self.layers for m in layer.children() if isinstance(m, Residual)]


def sinusoidal_table(n: int, d: int) -> Tensor:
    """(n, d) table: sin on the first half of the channels, cos on the second (fairseq)."""
    half = d // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float64) * -(math.log(10000.0) / max(half - 1, 1)))
    angles = torch.arange(n, dtype=torch.float64)[:, None] * freq[None]
    table = torch.cat([angles.sin(), angles.cos()], 1)
    return torch.cat([table, torch.zeros(n, d - 2 * half, dtype=torch.float64)], 1).float()


class Embeddings(nn.Module):
    """Token (shared, passed in) + position (+ segment) embeddings, optional LN, dropout."""

    def __init__(self, tokens: nn.Embedding, c: ModelConfig, segments: bool = False) -> None:
        super().__init__()
        self.tokens = tokens
        self.scale = math.sqrt(c.d_model) if c.embed_scale else 1.0
        if c.positions == "learned":
            self.positions = nn.Embedding(c.max_positions, c.d_model)
        else:
            self.positions = None
            self.register_buffer("table", sinusoidal_table(c.max_positions, c.d_model), persistent=False)
        self.segments = nn.Embedding(c.type_vocab_size, c.d_model) if segments and c.type_vocab_size else None
        self.norm = LayerNorm(c.d_model) if c.embed_layernorm else None
        self.dropout = Dropout(c.dropout)
        self.max_positions = c.max_positions

    def forward(self, ids: Tensor, start: int = 0, segments: Tensor | None = None) -> Tensor:
        T = ids.shape[1]
        if start + T > self.max_positions:
            raise UsageError(f"sequence of {start + T} tokens exceeds model.max_positions={self.max_positions}")
        pos = torch.arange(start, start + T, device=ids.device)
        x = self.scale * self.tokens(ids)  # (B, T, d)
        x = x + (self.positions(pos) if self.positions is not None else self.table[pos].to(x.dtype))
        if self.segments is not None and segments is not None:
            x = x + self.segments(segments)
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x)


def init_weights(model: nn.Module, scheme: str, d_model: int, pad_id: int) -> None:
    """``xavier``: fairseq's initialization (the paper's code): Xavier-uniform Linear weights, the
    attention's W^Q, W^K, W^V with gain 1/sqrt(2) (Xavier over the fused (3d, d) matrix that the
    three form), zero biases, N(0, d^-1/2) embeddings. ``bert``: N(0, 0.02) for weights and
    embeddings. LayerNorms: weight 1, bias 0."""
    qkv = {id(p) for m in model.modules() if isinstance(m, Attention) for p in (m.q_proj, m.k_proj, m.v_proj)}
    gains = {}
    for m in model.modules():
        if isinstance(m, nn.Linear):
            if scheme == "xavier":
                gains[id(m.weight)] = 2**-0.5 if id(m) in qkv else 1.0
                nn.init.xavier_uniform_(m.weight, gain=gains[id(m.weight)])
            else:
                nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=d_model**-0.5 if scheme == "xavier" else 0.02)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    tokens = getattr(model, "embed_tokens", None)
    if tokens is not None:
        with torch.no_grad():
            tokens.weight[pad_id].zero_()
    for stack in [m for m in model.modules() if isinstance(m, Stack)]:
        stack.rescale_init(gains)  # DeepNorm's beta (bert init: N(0, 0.02) x beta, as torchscale)


def padding_mask(ids: Tensor, pad_id: int) -> Tensor:
    """(B, S) token ids -> (B, 1, 1, S) bool, True where a key may be attended to."""
    return (ids != pad_id)[:, None, None, :]


def token_embedding(c: ModelConfig, pad_id: int) -> nn.Embedding:
    """The one token table a model shares between its inputs and its output projection."""
    if c.vocab_size <= 0:
        raise ConfigError("model.vocab_size must be set (> 0) to build a model")
    return nn.Embedding(c.vocab_size, c.d_model, padding_idx=pad_id)


class Seq2Seq(nn.Module):
    """Encoder-decoder for translation: joint vocabulary, shared embeddings, tied output."""

    def __init__(self, c: ModelConfig, pad_id: int = 0) -> None:
        super().__init__()
        self.config, self.pad_id = c, pad_id
        self.embed_tokens = token_embedding(c, pad_id)
        self.src_embed = Embeddings(self.embed_tokens, c)
        self.tgt_embed = Embeddings(self.embed_tokens, c)
        self.encoder = Stack(EncoderLayer, c, c.encoder_layers, "encoder")
        self.decoder = Stack(DecoderLayer, c, c.decoder_layers, "decoder")
        init_weights(self, c.init, c.d_model, pad_id)

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """(B, S) ids -> memory (B, S, d) and its key mask (B, 1, 1, S)."""
        mask = padding_mask(src, self.pad_id)
        return self.encoder(self.src_embed(src), mask=mask), mask

    def decode(
        self,
        tgt: Tensor,  # (B, T) ids: the whole prefix, or only new tokens when cache is used
        memory: Tensor,
        memory_mask: Tensor,
        cache: list[dict[str, Cache]] | None = None,
    ) -> Tensor:
        """Logits (B, T, V). With ``cache`` (from :meth:`new_cache`) feed only new tokens."""
        past = cache[0]["self"]["k"].shape[2] if cache and "k" in cache[0]["self"] else 0
        T = tgt.shape[1]
        self_mask, causal = None, T > 1
        if past and T > 1:  # new chunk after a cached prefix: causal with an offset
            S = past + T
            self_mask = torch.ones(T, S, dtype=torch.bool, device=tgt.device).tril(past)
            causal = False
        x = self.tgt_embed(tgt, start=past)
        h = self.decoder(x, memory=memory, memory_mask=memory_mask, self_mask=self_mask, is_causal=causal, cache=cache)
        return F.linear(h, self.embed_tokens.weight)  # tied output projection

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        memory, mask = self.encode(src)
        return self.decode(tgt_in, memory, mask)

    def new_cache(self) -> list[dict[str, Cache]]:
        return [{"self": {}, "cross": {}} for _ in self.decoder.layers]

    reorder_cache = staticmethod(reorder)
    copy_cache_rows = staticmethod(copy_rows)


class MaskedLM(nn.Module):
    """Encoder-only BERT-style model: MLM head tied to the embeddings, pooled pair classifier."""

    def __init__(self, c: ModelConfig, pad_id: int = 0) -> None:
        super().__init__()
        self.config, self.pad_id = c, pad_id
        self.embed_tokens = token_embedding(c, pad_id)
        self.embed = Embeddings(self.embed_tokens, c, segments=True)
        self.encoder = Stack(EncoderLayer, c, c.encoder_layers, "encoder-only")
        # MLM head (BERT): dense -> act -> LayerNorm -> tied decoder + bias.
        self.lm_dense = nn.Linear(c.d_model, c.d_model)
        self.lm_norm = LayerNorm(c.d_model)
        self.lm_bias = nn.Parameter(torch.zeros(c.vocab_size))
        self.act = F.relu if c.activation == "relu" else F.gelu
        # Sentence(-pair) classification from the first token (<cls>), BERT's pooler.
        self.pooler = nn.Linear(c.d_model, c.d_model)
        self.classifier = nn.Linear(c.d_model, c.num_classes)
        self.cls_dropout = Dropout(c.dropout)
        init_weights(self, c.init, c.d_model, pad_id)

    def forward(
        self, ids: Tensor, segments: Tensor | None = None, mlm_positions: Tensor | None = None, classify: bool = False
    ) -> Tensor:
        """(B, T) ids -> hidden states (B, T, d); with ``mlm_positions`` (B, T) bool, the MLM logits
        (N, V) at those positions instead; with ``classify``, the class logits (B, C). One forward
        call either way, as DDP/FSDP wrappers need."""
        hidden = self.encoder(self.embed(ids, segments=segments), mask=padding_mask(ids, self.pad_id))
        if classify:
            return self.classify(hidden)
        return hidden if mlm_positions is None else self.mlm_logits(hidden, mlm_positions)

    def mlm_logits(self, hidden: Tensor, positions: Tensor) -> Tensor:
        """Logits (N, V) at the N positions where ``positions`` (B, T) is True only."""
        h = self.lm_norm(self.act(self.lm_dense(hidden[positions])))
        return F.linear(h, self.embed_tokens.weight, self.lm_bias)

    def classify(self, hidden: Tensor) -> Tensor:
        """(B, T, d) -> class logits (B, num_classes) from the first position."""
        pooled = torch.tanh(self.pooler(hidden[:, 0]))
        return self.classifier(self.cls_dropout(pooled))


class CausalLM(nn.Module):
    """Decoder-only language model (GPT's shape): token + position embeddings, a stack of
    self-attention layers under a causal mask, placed as ``model.norm`` says (``encoder_layers``
    of them), and the output projection tied to the embeddings."""

    def __init__(self, c: ModelConfig, pad_id: int = 0) -> None:
        super().__init__()
        self.config, self.pad_id = c, pad_id
        self.embed_tokens = token_embedding(c, pad_id)
        self.embed = Embeddings(self.embed_tokens, c)
        self.decoder = Stack(EncoderLayer, c, c.encoder_layers, "encoder-only")
        init_weights(self, c.init, c.d_model, pad_id)

    def forward(self, ids: Tensor, cache: list[Cache] | None = None) -> Tensor:
        """(B, T) ids -> next-token logits (B, T, V). With ``cache`` (from :meth:`new_cache`) feed
        only the tokens after those already cached. Padding goes at the end (right): under the
        causal mask no real token attends to it."""
        past = cache[0]["k"].shape[2] if cache and "k" in cache[0] else 0
        T = ids.shape[1]
        mask, causal = None, T > 1
        if past and T > 1:  # a chunk after a cached prefix: causal with an offset
            mask = torch.ones(T, past + T, dtype=torch.bool, device=ids.device).tril(past)
            causal = False
        h = self.decoder(self.embed(ids, start=past), cache=cache, mask=mask, is_causal=causal)
        return F.linear(h, self.embed_tokens.weight)  # tied output projection

    def new_cache(self) -> list[Cache]:
        return [{} for _ in self.decoder.layers]
