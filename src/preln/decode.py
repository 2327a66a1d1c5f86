"""Batched beam search and greedy decoding for ``Seq2Seq``, with the incremental KV cache.

Beam search follows fairseq-generate's semantics and defaults (the paper's decoding): at each
step the 2K best continuations of the K live beams are considered; one ending in </s> among the
top K is finished with score ``sum log p / len ** lenpen`` (len counts the </s>; lenpen 1); a
sentence is done when it has K finished hypotheses. A hypothesis has at least ``MIN_LEN`` (1)
tokens before its </s> (so never an empty output) and at most ``max_len = a * src_len + b``
(src_len without </s>; a = 0, b = 200), then </s> is forced; max_len is capped by the model's
positions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .data.tokenizer import BOS, EOS, MASK, PAD
from .model import Seq2Seq

_BANNED = (PAD, BOS, MASK)  # never generated
MIN_LEN = 1  # fairseq-generate --min-len: </s> is banned before this many tokens
MAX_LEN_A, MAX_LEN_B = 0.0, 200  # fairseq-generate --max-len-a / --max-len-b
LENPEN = 1.0  # fairseq-generate --lenpen


def _step_logprobs(model: Seq2Seq, tokens: Tensor, memory: Tensor, mask: Tensor, cache) -> Tensor:
    """log p(next | prefix) for each row: (N, V), float32."""
    if cache is not None:
        logits = model.decode(tokens[:, -1:], memory, mask, cache)[:, -1]
    else:
        logits = model.decode(tokens, memory, mask)[:, -1]
    logp = torch.log_softmax(logits.float(), dim=-1)
    logp[:, list(_BANNED)] = -torch.inf
    return logp


def _max_lens(model: Seq2Seq, src: Tensor, a: float, b: int) -> list[int]:
    """Per sentence, the most tokens a hypothesis may have before its </s> (fairseq: a * src_len + b,
    src_len without </s>, capped so that the </s> still has a position)."""
    src_len = ((src != PAD) & (src != EOS)).sum(1)
    return (a * src_len + b).long().clamp(min=MIN_LEN, max=model.config.max_positions - 1).tolist()


def _ban_eos_before_min_len(logp: Tensor, t: int) -> None:
    if t < MIN_LEN:
        logp[:, EOS] = -torch.inf


@torch.no_grad()
def greedy(
    model: Seq2Seq, src: Tensor, max_len_a: float = MAX_LEN_A, max_len_b: int = MAX_LEN_B, use_cache: bool = True
) -> list[list[int]]:
    """Argmax decoding; returns token ids without <s> and </s>."""
    model.eval()
    memory, mask = model.encode(src)
    B = src.shape[0]
    limits = _max_lens(model, src, max_len_a, max_len_b)
    tokens = torch.full((B, 1), BOS, dtype=torch.long, device=src.device)
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    cache = model.new_cache() if use_cache else None
    for t in range(max(limits) + 1):  # step t picks token t + 1; at t = limit only </s>
        logp = _step_logprobs(model, tokens, memory, mask, cache)
        _ban_eos_before_min_len(logp, t)
        at_limit = torch.tensor([t >= n for n in limits], device=src.device)
        nxt = torch.where(at_limit, torch.full_like(done, EOS, dtype=torch.long), logp.argmax(-1))
        nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
        tokens = torch.cat([tokens, nxt[:, None]], 1)
        done |= nxt == EOS
        if done.all():
            break
    return [_strip(row) for row in tokens.tolist()]


def _strip(row: list[int]) -> list[int]:
    out = []
    for tok in row[1:]:
        if tok in (EOS, PAD):
            break
        out.append(tok)
    return out


@torch.no_grad()
def beam_search(
    model: Seq2Seq,
    src: Tensor,  # (B, S)
    beam: int = 5,
    lenpen: float = LENPEN,
    max_len_a: float = MAX_LEN_A,
    max_len_b: int = MAX_LEN_B,
    use_cache: bool = True,
    nbest: int = 0,
) -> list:
    """The best finished hypothesis of each sentence (token ids without <s> and </s>); with
    ``nbest`` > 0, each sentence's ``nbest`` best as (score, ids), best first: the score is the
    hypothesis's log-probability (with </s>) over its length (with </s>) ** lenpen, fairseq's."""
    model.eval()
    B, K, dev = src.shape[0], beam, src.device
    memory, mask = model.encode(src)
    memory, mask = memory.repeat_interleave(K, 0), mask.repeat_interleave(K, 0)  # (B*K, S, d)
    limits = _max_lens(model, src, max_len_a, max_len_b)
    limit_t = torch.tensor(limits, device=dev)
    tokens = torch.full((B * K, 1), BOS, dtype=torch.long, device=dev)
    scores = torch.full((B, K), -torch.inf, device=dev)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first
    cache = model.new_cache() if use_cache else None
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    for t in range(max(limits) + 1):  # step t picks token t + 1; at t = limit only </s>
        logp = _step_logprobs(model, tokens, memory, mask, cache)  # (B*K, V)
        _ban_eos_before_min_len(logp, t)
        V = logp.shape[1]
        if t >= min(limits):  # decided on the host: no sync with the device
            at_limit = (limit_t <= t).repeat_interleave(K)  # (B*K,): only </s> may follow
            eos = logp[:, EOS].clone()
            logp[at_limit] = -torch.inf
            logp[:, EOS] = eos
        cand = (scores.view(-1, 1) + logp).view(B, K * V)
        top_scores, top_idx = cand.topk(2 * K, dim=1)  # (B, 2K)
        new_src, new_tok, new_scores = _select(
            top_scores.tolist(), top_idx.tolist(), V, K, t, tokens, finished, lenpen, limits
        )
        index = torch.tensor(new_src, device=dev)
        tokens = torch.cat([tokens[index], torch.tensor(new_tok, device=dev)[:, None]], 1)
        scores = torch.tensor(new_scores, device=dev).view(B, K)
        if cache is not None:  # beams move only within their sentence: the memory's K/V stay put
            model.reorder_cache(cache, index)
        if all(len(f) >= K for f in finished):
            break
    if nbest:
        return [sorted(f, key=lambda h: -h[0])[:nbest] for f in finished]
    return [max(f, key=lambda h: h[0])[1] if f else [] for f in finished]


def _select(top_scores, top_idx, V, K, t, tokens, finished, lenpen, limits):
    """Per sentence: finish </s> candidates ranked in the top K, keep the K best others."""
    new_src, new_tok, new_scores = [], [], []
    for b, (row_s, row_i) in enumerate(zip(top_scores, top_idx)):
        live = []
        for rank, (s, i) in enumerate(zip(row_s, row_i)):
            beam, tok = divmod(i, V)
            if s == -float("inf"):
                continue
            if tok == EOS:
                if rank < K and len(finished[b]) < K:
                    hyp = tokens[b * K + beam, 1:].tolist()
                    finished[b].append((s / (t + 1) ** lenpen, hyp))
            elif len(live) < K:
                live.append((b * K + beam, tok, s))
        if len(finished[b]) >= K or t >= limits[b]:
            live = []  # sentence done: its beams idle (score -inf) until the batch ends
        while len(live) < K:
            live.append((b * K, PAD, -float("inf")))
        for src_row, tok, s in live:
            new_src.append(src_row)
            new_tok.append(tok)
            new_scores.append(s)
    return new_src, new_tok, new_scores
