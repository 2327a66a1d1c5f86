"""Batched beam search and greedy decoding for ``Seq2Seq``, with the incremental KV cache;
``translate`` (text in, text out, under a ``Decoding`` setting); ``sample`` / ``generate`` for a
``CausalLM`` (greedy or top-k sampling).

Beam search follows fairseq-generate's semantics and defaults (the paper's decoding): at each
step the 2K best continuations of the K live beams are considered; one ending in </s> among the
top K is finished with score ``sum log p / len ** lenpen`` (len counts the </s>; lenpen 1); a
sentence is done when it has K finished hypotheses. A hypothesis has at least ``MIN_LEN`` (1)
tokens before its </s> (so never an empty output) and at most ``max_len = a * src_len + b``
(src_len without </s>; a = 0, b = 200), then </s> is forced; max_len is capped by the model's
positions.
"""

from __future__ import annotations

import contextlib
import sys

import torch
from torch import Tensor
from tqdm import tqdm

from .data.batching import pad, token_batches
from .data.tokenizer import BOS, EOS, MASK, PAD, Tokenizer
from .decoding import FAIRSEQ, LENPEN, MAX_LEN_A, MAX_LEN_B, MIN_LEN, Decoding
from .errors import UsageError
from .model import CausalLM, Seq2Seq

_BANNED = (PAD, BOS, MASK)  # never generated


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


@torch.inference_mode()  # no autograd bookkeeping (version counters, view tracking) on a step of many small ops
def greedy(
    model: Seq2Seq, src: Tensor, max_len_a: float = MAX_LEN_A, max_len_b: int = MAX_LEN_B, use_cache: bool = True
) -> list[list[int]]:
    """Argmax decoding; returns token ids without <s> and </s>. A sentence leaves the batch (with
    its cache rows) once it has ended."""
    model.eval()
    memory, mask = model.encode(src)
    limits = _max_lens(model, src, max_len_a, max_len_b)
    alive = list(range(src.shape[0]))  # the original index of each row still decoding
    tokens = torch.full((len(alive), 1), BOS, dtype=torch.long, device=src.device)
    cache = model.new_cache() if use_cache else None
    out: list[list[int]] = [[] for _ in alive]
    for t in range(max(limits) + 1):  # step t picks token t + 1; at t = limit only </s>
        logp = _step_logprobs(model, tokens, memory, mask, cache)
        _ban_eos_before_min_len(logp, t)
        nxt = logp.argmax(-1).tolist()
        ended = [k for k, b in enumerate(alive) if t >= limits[b] or nxt[k] == EOS]
        if ended:
            for k in ended:
                out[alive[k]] = tokens[k, 1:].tolist()
            keep = [k for k in range(len(alive)) if k not in set(ended)]
            if not keep:
                break
            index = torch.tensor(keep, device=src.device)
            alive = [alive[k] for k in keep]
            tokens, memory, mask = tokens[index], memory[index], mask[index]
            nxt = [nxt[k] for k in keep]
            if cache is not None:
                model.reorder_cache(cache, index, index)
        tokens = torch.cat([tokens, torch.tensor(nxt, device=src.device)[:, None]], 1)
    return out


def _best_possible(score: float, t: int, limit: int, lenpen: float) -> float:
    """The highest normalized score a live hypothesis with log-probability ``score`` after step
    ``t`` can still finish with: more tokens only lower the log-probability, so the best case is
    this log-probability over the length that divides it most favourably — the longest allowed
    (limit + 1, </s> included) for lenpen >= 0, the shortest (t + 2) for lenpen < 0."""
    length = limit + 1 if lenpen >= 0 else t + 2
    return score / length**lenpen


@torch.inference_mode()  # no autograd bookkeeping (version counters, view tracking) on a step of many small ops
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
    hypothesis's log-probability (with </s>) over its length (with </s>) ** lenpen, fairseq's.

    Candidates are selected on the tensor side; a sentence leaves the batch (with its rows of the
    caches) once it is done: K finished hypotheses, its length limit, or no live beam that could
    still beat its ``nbest``-th best finished one (``_best_possible``; the output is the same as
    decoding on)."""
    model.eval()
    B, K, dev = src.shape[0], beam, src.device
    keep_best = max(nbest, 1)
    memory, mask = model.encode(src)  # (B, S, d): each sentence's K beams attend to its one row
    limits = _max_lens(model, src, max_len_a, max_len_b)
    alive = list(range(B))  # the original index of each sentence still decoding
    tokens = torch.full((B * K, 1), BOS, dtype=torch.long, device=dev)
    scores = torch.full((B, K), -torch.inf, device=dev)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first
    cache = model.new_cache() if use_cache else None
    slot = torch.arange(K, device=dev).repeat(B, 1)  # (B, K): each beam's cache row within its sentence's K
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    rank = torch.arange(2 * K, device=dev)
    for t in range(max(limits) + 1):  # step t picks token t + 1; at t = limit only </s>
        n = len(alive)
        logp = _beam_logprobs(model, tokens, memory, mask, cache, slot)  # (n*K, V)
        _ban_eos_before_min_len(logp, t)
        V = logp.shape[1]
        if t >= min(limits[b] for b in alive):  # decided on the host: no sync with the device
            at_limit = torch.tensor([limits[b] <= t for b in alive], device=dev).repeat_interleave(K)
            eos = logp[:, EOS].clone()
            logp[at_limit] = -torch.inf
            logp[:, EOS] = eos
        cand = (scores.view(-1, 1) + logp).view(n, K * V)
        top_s, top_i = cand.topk(2 * K, dim=1)  # (n, 2K)
        src_beam, tok = top_i // V, top_i % V
        finite = top_s > -torch.inf
        is_eos = (tok == EOS) & finite
        _finish(is_eos & (rank < K), top_s, src_beam, tokens, alive, finished, K, t, lenpen)
        # the K best candidates that do not end, in rank order; too few: dead beams (-inf, PAD)
        order = torch.where(finite & ~is_eos, rank, rank + 2 * K).argsort(1)[:, :K]  # (n, K)
        valid = (finite & ~is_eos).gather(1, order)
        scores = torch.where(valid, top_s.gather(1, order), -torch.inf)
        parent = torch.where(valid, src_beam.gather(1, order), 0)  # (n, K): each new beam's, in its sentence
        rows = torch.arange(n, device=dev)[:, None] * K + parent
        new_tok = torch.where(valid, tok.gather(1, order), PAD)
        done = _done(scores, alive, finished, limits, K, keep_best, t, lenpen)
        keep = [k for k in range(n) if not done[k]]
        if not keep:
            break
        sel = None
        if len(keep) < n:  # finished sentences leave the batch, with their cache rows
            sel = torch.tensor(keep, device=dev)
            rows, new_tok, scores = rows[sel], new_tok[sel], scores[sel]
            alive = [alive[k] for k in keep]
            memory, mask = memory[sel], mask[sel]
        if cache is not None:
            slot = _move_cache(model, cache, slot, parent, sel, tokens)
        tokens = torch.cat([tokens[rows.view(-1)], new_tok.view(-1, 1)], 1)
    if nbest:
        return [sorted(f, key=lambda h: -h[0])[:nbest] for f in finished]
    return [max(f, key=lambda h: h[0])[1] if f else [] for f in finished]


def _beam_logprobs(model: Seq2Seq, tokens: Tensor, memory: Tensor, mask: Tensor, cache, slot: Tensor) -> Tensor:
    """log p(next | prefix) of each beam (n*K, V), in beam order; with the cache, beam j of
    sentence i runs in the cache's row i*K + slot[i, j]."""
    if cache is None:
        return _step_logprobs(model, tokens, memory, mask, None)
    n, K = slot.shape
    row = (torch.arange(n, device=slot.device)[:, None] * K + slot).view(-1)
    last = torch.empty_like(tokens[:, -1:])
    last[row] = tokens[:, -1:]
    return _step_logprobs(model, last, memory, mask, cache)[row]


def _move_cache(model: Seq2Seq, cache, slot: Tensor, parent: Tensor, sel: Tensor | None, tokens: Tensor) -> Tensor:
    """The new beams' cache rows, given the old beams' (``slot``, (n, K), within their sentence)
    and each new beam's parent (``parent``, (n, K)); returns their slots, of the sentences ``sel``
    keeps. A beam keeps its parent's row when it is the parent's first child; another child takes a
    row no new beam descends from and gets a copy of its parent's history after the prefix that the
    row's old beam shares with the parent (the old beams' ``tokens``): in a beam-5 step some 20-30%
    of rows, where reordering the cache into beam order copied all of them. When sentences leave,
    one selection moves both."""
    n, K = slot.shape
    new_slot, source = _slots(slot.gather(1, parent))
    base = torch.arange(n, device=slot.device)[:, None] * K
    if sel is not None:
        model.reorder_cache(cache, (base + source)[sel].view(-1), sel)
        return new_slot[sel]
    own = torch.arange(K, device=slot.device)
    moved = source != own
    if bool(moved.any()):
        dst, src = (base + own)[moved], (base + source)[moved]
        model.copy_cache_rows(cache, dst, src, _copy_start(tokens, slot, dst, src))
    return new_slot


def _copy_start(tokens: Tensor, slot: Tensor, dst: Tensor, src: Tensor) -> int:
    """How many leading positions the copies of cache rows ``src`` onto ``dst`` may skip: the
    shortest common prefix of the old beams in each pair of rows (``tokens`` (n*K, T), beam order;
    ``slot`` (n, K), each old beam's row). Two beams of a sentence that agree on a prefix descend
    from one beam there (distinct beams have distinct histories), and their rows hold copies of
    that beam's keys and values at those positions: each copy keeps this true for its row. Not at
    the first move: every row computed <s> itself; from then on rows hold beam 0's copy."""
    if tokens.shape[1] == 1:
        return 0
    n, K = slot.shape
    beams = torch.arange(K, device=slot.device).expand(n, K)
    first = torch.arange(n, device=slot.device)[:, None] * K  # (n, 1): each sentence's first beam
    beam_in_row = (first + torch.empty_like(slot).scatter_(1, slot, beams)).view(-1)  # the inverse of slot
    a, b = tokens[beam_in_row[dst]], tokens[beam_in_row[src]]  # (m, T) each
    return int((a == b).int().cumprod(1).sum(1).min())  # one read from the device


def _slots(parent: Tensor) -> tuple[Tensor, Tensor]:
    """Rows for new beams whose parents sit in rows ``parent`` (n, K) of their sentence: a parent's
    first child (in beam order) stays in its row, the others take the rows left free (no child's
    parent), in order. Returns (each beam's row, each row's source row: itself where none moves)."""
    n, K = parent.shape
    j = torch.arange(K, device=parent.device)
    first = ~((parent[:, :, None] == parent[:, None, :]) & (j[None, :] < j[:, None])).any(-1)  # (n, K)
    taken = torch.zeros(n, K, dtype=torch.bool, device=parent.device).scatter_(1, parent, True)
    free = torch.argsort(taken.to(torch.int8), dim=1, stable=True)  # free rows first, in row order
    slot = torch.where(first, parent, free.gather(1, ((~first).cumsum(1) - 1).clamp(min=0)))
    return slot, j.repeat(n, 1).scatter_(1, slot, parent)


def _finish(eos_top: Tensor, top_s: Tensor, src_beam: Tensor, tokens: Tensor, alive, finished, K, t, lenpen):
    """Record the </s> candidates ranked in a sentence's top K (rank order, up to K finished)."""
    hits = eos_top.nonzero().tolist()  # (sentence row, rank), in rank order within each row
    if not hits:
        return
    s = top_s[eos_top].tolist()
    rows = (torch.tensor([k for k, _ in hits], device=tokens.device) * K + src_beam[eos_top]).tolist()
    hyps = tokens[rows, 1:].tolist()
    for (k, _), score, hyp in zip(hits, s, hyps):
        f = finished[alive[k]]
        if len(f) < K:
            f.append((score / (t + 1) ** lenpen, hyp))


def _done(scores: Tensor, alive, finished, limits, K, keep_best, t, lenpen) -> list[bool]:
    """Per sentence still decoding: K finished, at its limit, or beyond improvement (its best live
    beam cannot beat its ``keep_best``-th best finished hypothesis)."""
    best_live = scores.max(1).values.tolist()
    out = []
    for k, b in enumerate(alive):
        f = finished[b]
        if len(f) >= K or t >= limits[b]:
            out.append(True)
        elif len(f) >= keep_best:
            kth = sorted((h[0] for h in f), reverse=True)[keep_best - 1]
            out.append(_best_possible(best_live[k], t, limits[b], lenpen) < kth)
        else:
            out.append(False)
    return out


def translate(
    model: Seq2Seq, tok: Tokenizer, lines: list[str], decoding: Decoding = FAIRSEQ, progress: bool = False
) -> list[str]:
    """Detokenized translations of ``lines``, in order (the best hypothesis of each; beam 1 is
    greedy search). Defaults are fairseq-generate's (``Decoding``). On a GPU the model runs under
    bf16 autocast unless ``decoding.precision`` is ``fp32`` (scores and log-softmax stay float32)."""
    d = decoding
    if d.beam == 1:
        decode = lambda src: greedy(model, src, max_len_a=d.max_len_a, max_len_b=d.max_len_b)
    else:
        decode = lambda src: beam_search(model, src, d.beam, d.lenpen, max_len_a=d.max_len_a, max_len_b=d.max_len_b)
    return tok.decode(_batched(model, tok, lines, d, progress, decode))


def translate_nbest(
    model: Seq2Seq, tok: Tokenizer, lines: list[str], decoding: Decoding = FAIRSEQ
) -> list[list[tuple[str, float]]]:
    """For each line, its ``decoding.nbest`` best translations as (text, score), best first; the
    score is fairseq's: log-probability over length ** lenpen. nbest 1 gives ``translate``'s text."""
    d = decoding
    limits = {"max_len_a": d.max_len_a, "max_len_b": d.max_len_b, "nbest": d.nbest}
    hyps = _batched(model, tok, lines, d, False, lambda src: beam_search(model, src, d.beam, d.lenpen, **limits))
    return [[(text, score) for text, (score, _) in zip(tok.decode([ids for _, ids in h]), h)] for h in hyps]


def _batched(model: Seq2Seq, tok: Tokenizer, lines: list[str], d: Decoding, progress: bool, decode):
    """``decode`` over token-budget batches of the encoded ``lines`` (sorted by length, so little
    padding); results in input order. bf16 autocast on a GPU unless ``d.precision`` is fp32."""
    limit = model.config.max_positions - 1
    encoded = tok.encode(lines)
    long = sum(len(s) > limit - 1 for s in encoded)
    if long:
        print(
            f"[preln] warning: {long} input line(s) longer than {limit - 1} tokens (model.max_positions) "
            "are cut to that length",
            file=sys.stderr,
        )
    ids = [s[: limit - 1] + [EOS] for s in encoded]
    batches = token_batches([(len(s),) for s in ids], max(d.max_tokens // d.beam, limit))  # beams multiply it
    device = next(model.parameters()).device
    bf16 = device.type == "cuda" and d.precision != "fp32"
    out: list = [[] for _ in lines]
    for batch in tqdm(batches, desc="translate", unit="batch", disable=not progress):
        src = pad([ids[i] for i in batch], PAD).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            hyps = decode(src)
        for i, h in zip(batch, hyps):
            out[i] = h
    return out


@torch.inference_mode()  # no autograd bookkeeping (version counters, view tracking) on a step of many small ops
def sample(
    model: CausalLM,
    prompts: list[list[int]],
    max_new_tokens: int = 50,
    top_k: int = 1,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Continue each prompt (ids from ``<s>`` on) by at most ``max_new_tokens`` tokens, up to and
    without its ``</s>``: greedy when ``top_k`` is 1, else sampled from the ``top_k`` most likely
    next tokens at ``temperature``. Prompts of one length decode together, with the KV cache;
    the model's positions bound the length."""
    model.eval()
    device = next(model.parameters()).device
    out: list[list[int]] = [[] for _ in prompts]
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(len(p), []).append(i)
    for length, rows in sorted(by_length.items()):
        steps = min(max_new_tokens, model.config.max_positions - length)
        tokens = torch.tensor([prompts[i] for i in rows], device=device)  # (B, L)
        cache = model.new_cache()
        logits = model(tokens, cache)[:, -1]  # (B, V)
        done = torch.zeros(len(rows), dtype=torch.bool, device=device)
        new = []
        for _ in range(steps):
            nxt = _next_token(logits, top_k, temperature, generator)  # (B,)
            new.append(nxt)
            done |= nxt == EOS
            if bool(done.all()):
                break
            logits = model(nxt[:, None], cache)[:, -1]
        ids = torch.stack(new, 1).tolist() if new else [[] for _ in rows]
        for i, seq in zip(rows, ids):
            out[i] = seq[: seq.index(EOS)] if EOS in seq else seq
    return out


def _next_token(logits: Tensor, top_k: int, temperature: float, generator: torch.Generator | None) -> Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, V)
    logp[:, list(_BANNED)] = -torch.inf
    if top_k == 1:
        return logp.argmax(-1)
    best, index = logp.topk(min(top_k, logp.shape[-1]), dim=-1)  # (B, K)
    probs = torch.softmax(best / temperature, dim=-1)
    choice = torch.multinomial(probs.cpu(), 1, generator=generator).to(logp.device)  # (B, 1)
    return index.gather(1, choice).squeeze(1)


def generate(
    model: CausalLM,
    tok: Tokenizer,
    prompts: list[str],
    max_new_tokens: int = 50,
    top_k: int = 1,
    temperature: float = 1.0,
    seed: int = 0,
) -> list[str]:
    """Each prompt continued (``sample``), detokenized: the prompt's text and its continuation.
    Prompt i's sample is drawn from seed ``seed + i``: the same seed, the same continuations."""
    if max_new_tokens < 1 or top_k < 1 or not temperature > 0:
        raise UsageError(
            f"--max-new-tokens and --top-k must be >= 1 and --temperature > 0, got {max_new_tokens}, {top_k}, "
            f"{temperature}"
        )
    limit = model.config.max_positions - 1
    ids = [([BOS] + p)[:limit] for p in tok.encode(prompts)]
    if top_k == 1:  # greedy: no draw, prompts of one length decode together
        new = sample(model, ids, max_new_tokens)
    else:  # prompt i from its own seed (seed + i): its continuation does not depend on its batch
        g = [torch.Generator().manual_seed(seed + i) for i in range(len(ids))]
        new = [sample(model, [p], max_new_tokens, top_k, temperature, g[i])[0] for i, p in enumerate(ids)]
    return tok.decode([p[1:] + n for p, n in zip(ids, new)])
