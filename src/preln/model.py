"""Transformer with the place of LayerNorm as one switch (``ModelConfig.norm``).

Post-LN (Vaswani et al. 2017):   x_{l+1} = LN(x_l + F(x_l))
Pre-LN  (Xiong et al. 2020):     x_{l+1} = x_l + F(LN(x_l)),  plus LN(x_L) after the last layer

The switch is read in exactly two places: :class:`Residual` (where each sub-layer's norm sits)
and :class:`Stack` (the final LayerNorm exists iff Pre-LN). Everything else is shared, so a
Post-LN and a Pre-LN model differ in nothing but these lines. The model knows nothing of
training: no losses, no optimizers.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .config import ModelConfig, Placement

Cache = dict[str, Tensor]
# Attention kernels on CUDA. cuDNN's is left out: with token-budget batches every batch has a new
# (B, T) shape, and cuDNN builds an execution plan per shape; measured on an H200 (torch 2.11,
# IWSLT-size model, bf16): 6.7k target tokens/s with it, 48.5k without.
_CUDA_SDPA = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


class LayerNorm(nn.LayerNorm):
    """LayerNorm whose statistics are always computed in float32, also under bf16/fp16 autocast
    (and whose output, the residual stream in Post-LN, stays float32)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                w, b = self.weight.float(), self.bias.float()
                return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps)
        return super().forward(x)


class Attention(nn.Module):
    """Multi-head attention with separate Q/K/V/O projections (the paper's W^Q, W^K, W^V, W^O).

    ``cache`` (a dict owned by the caller) makes decoding incremental: self-attention appends
    this step's keys/values; cross-attention computes the memory's keys/values once.
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

    def forward(
        self,
        x: Tensor,  # (B, T, d) queries (and keys/values for self-attention)
        memory: Tensor | None = None,  # (B, S, d) keys/values for cross-attention
        mask: Tensor | None = None,  # bool, True = may attend; broadcasts to (B, H, T, S)
        is_causal: bool = False,
        cache: Cache | None = None,
    ) -> Tensor:
        q = self._heads(self.q_proj(x))
        if memory is None:
            k, v = self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
            if cache is not None:
                if "k" in cache:
                    k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
                cache["k"], cache["v"] = k, v
        elif cache is not None and "k" in cache:
            k, v = cache["k"], cache["v"]
        else:
            k, v = self._heads(self.k_proj(memory)), self._heads(self.v_proj(memory))
            if cache is not None:
                cache["k"], cache["v"] = k, v
        p = self.dropout if self.training else 0.0
        # not cuDNN's kernel on CUDA: it plans anew for every new shape (measured 7x slower, H200)
        with sdpa_kernel(_CUDA_SDPA) if q.is_cuda else contextlib.nullcontext():
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal)
        B, H, T, dh = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(B, T, H * dh))


class FeedForward(nn.Module):
    """FFN(x) = W2 act(W1 x + b1) + b2."""

    def __init__(self, d_model: int, d_ffn: int, activation: str, dropout: float) -> None:
        super().__init__()
        self.w1, self.w2 = nn.Linear(d_model, d_ffn), nn.Linear(d_ffn, d_model)
        self.act = F.relu if activation == "relu" else F.gelu
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(self.dropout(self.act(self.w1(x))))


class Residual(nn.Module):
    """A residual connection around one sub-layer, with its LayerNorm where ``placement`` says."""

    def __init__(self, d_model: int, placement: Placement, dropout: float) -> None:
        super().__init__()
        self.placement = placement
        self.norm = LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, f) -> Tensor:
        if self.placement == "pre":
            return x + self.dropout(f(self.norm(x)))  # x + F(LN(x))
        return self.norm(x + self.dropout(f(x)))  # LN(x + F(x))


class EncoderLayer(nn.Module):
    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.self_attn = Attention(c.d_model, c.n_heads, c.attention_dropout)
        self.ffn = FeedForward(c.d_model, c.d_ffn, c.activation, c.activation_dropout)
        self.attn_res = Residual(c.d_model, c.norm, c.dropout)
        self.ffn_res = Residual(c.d_model, c.norm, c.dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.attn_res(x, lambda h: self.self_attn(h, mask=mask))
        return self.ffn_res(x, self.ffn)


class DecoderLayer(nn.Module):
    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.self_attn = Attention(c.d_model, c.n_heads, c.attention_dropout)
        self.cross_attn = Attention(c.d_model, c.n_heads, c.attention_dropout)
        self.ffn = FeedForward(c.d_model, c.d_ffn, c.activation, c.activation_dropout)
        self.self_res = Residual(c.d_model, c.norm, c.dropout)
        self.cross_res = Residual(c.d_model, c.norm, c.dropout)
        self.ffn_res = Residual(c.d_model, c.norm, c.dropout)

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


class Stack(nn.Module):
    """N layers, then the final LayerNorm iff Pre-LN (Post-LN output is already normalized)."""

    def __init__(self, layers: list[nn.Module], d_model: int, placement: Placement) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.final_norm = LayerNorm(d_model) if placement == "pre" else None

    def forward(self, x: Tensor, cache: list | None = None, **kw) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x, **kw) if cache is None else layer(x, cache=cache[i], **kw)
        return self.final_norm(x) if self.final_norm is not None else x


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
        self.dropout = nn.Dropout(c.dropout)
        self.max_positions = c.max_positions

    def forward(self, ids: Tensor, start: int = 0, segments: Tensor | None = None) -> Tensor:
        T = ids.shape[1]
        if start + T > self.max_positions:
            raise ValueError(f"sequence of {start + T} tokens exceeds model.max_positions={self.max_positions}")
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
    for m in model.modules():
        if isinstance(m, nn.Linear):
            if scheme == "xavier":
                nn.init.xavier_uniform_(m.weight, gain=2**-0.5 if id(m) in qkv else 1.0)
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


def padding_mask(ids: Tensor, pad_id: int) -> Tensor:
    """(B, S) token ids -> (B, 1, 1, S) bool, True where a key may be attended to."""
    return (ids != pad_id)[:, None, None, :]


def token_embedding(c: ModelConfig, pad_id: int) -> nn.Embedding:
    """The one token table a model shares between its inputs and its output projection."""
    if c.vocab_size <= 0:
        raise ValueError("model.vocab_size must be set (> 0) to build a model")
    return nn.Embedding(c.vocab_size, c.d_model, padding_idx=pad_id)


class Seq2Seq(nn.Module):
    """Encoder-decoder for translation: joint vocabulary, shared embeddings, tied output."""

    def __init__(self, c: ModelConfig, pad_id: int = 0) -> None:
        super().__init__()
        self.config, self.pad_id = c, pad_id
        self.embed_tokens = token_embedding(c, pad_id)
        self.src_embed = Embeddings(self.embed_tokens, c)
        self.tgt_embed = Embeddings(self.embed_tokens, c)
        self.encoder = Stack([EncoderLayer(c) for _ in range(c.encoder_layers)], c.d_model, c.norm)
        self.decoder = Stack([DecoderLayer(c) for _ in range(c.decoder_layers)], c.d_model, c.norm)
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

    @staticmethod
    def reorder_cache(cache: list[dict[str, Cache]], index: Tensor) -> None:
        """Select batch rows of the self-attention caches in place (beam search). The cross-attention
        caches are not reordered: beams only move within their sentence, whose rows are equal."""
        for layer in cache:
            part = layer["self"]
            for k in part:
                part[k] = part[k].index_select(0, index)


class MaskedLM(nn.Module):
    """Encoder-only BERT-style model: MLM head tied to the embeddings, pooled pair classifier."""

    def __init__(self, c: ModelConfig, pad_id: int = 0) -> None:
        super().__init__()
        self.config, self.pad_id = c, pad_id
        self.embed_tokens = token_embedding(c, pad_id)
        self.embed = Embeddings(self.embed_tokens, c, segments=True)
        self.encoder = Stack([EncoderLayer(c) for _ in range(c.encoder_layers)], c.d_model, c.norm)
        # MLM head (BERT): dense -> act -> LayerNorm -> tied decoder + bias.
        self.lm_dense = nn.Linear(c.d_model, c.d_model)
        self.lm_norm = LayerNorm(c.d_model)
        self.lm_bias = nn.Parameter(torch.zeros(c.vocab_size))
        self.act = F.relu if c.activation == "relu" else F.gelu
        # Sentence(-pair) classification from the first token (<cls>), BERT's pooler.
        self.pooler = nn.Linear(c.d_model, c.d_model)
        self.classifier = nn.Linear(c.d_model, c.num_classes)
        self.cls_dropout = nn.Dropout(c.dropout)
        init_weights(self, c.init, c.d_model, pad_id)

    def forward(self, ids: Tensor, segments: Tensor | None = None, mlm_positions: Tensor | None = None) -> Tensor:
        """(B, T) ids -> hidden states (B, T, d); with ``mlm_positions`` (B, T) bool, the MLM logits
        (N, V) at those positions instead (one forward call, as DDP/FSDP wrappers need)."""
        hidden = self.encoder(self.embed(ids, segments=segments), mask=padding_mask(ids, self.pad_id))
        return hidden if mlm_positions is None else self.mlm_logits(hidden, mlm_positions)

    def mlm_logits(self, hidden: Tensor, positions: Tensor) -> Tensor:
        """Logits (N, V) at the N positions where ``positions`` (B, T) is True only."""
        h = self.lm_norm(self.act(self.lm_dense(hidden[positions])))
        return F.linear(h, self.embed_tokens.weight, self.lm_bias)

    def classify(self, hidden: Tensor) -> Tensor:
        """(B, T, d) -> class logits (B, num_classes) from the first position."""
        pooled = torch.tanh(self.pooler(hidden[:, 0]))
        return self.classifier(self.cls_dropout(pooled))


def build_model(c: ModelConfig, pad_id: int = 0) -> Seq2Seq | MaskedLM:
    return Seq2Seq(c, pad_id) if c.task == "translation" else MaskedLM(c, pad_id)
