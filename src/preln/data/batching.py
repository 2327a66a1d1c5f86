"""Batches by a token budget over length buckets (fairseq ``--max-tokens``) and MLM masking."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ConfigError
from .tokenizer import BOS, EOS


@dataclass
class Batch:
    """Padded tensors of one batch plus the number of target tokens its loss counts."""

    tensors: dict[str, Tensor]
    ntokens: int

    def to(self, device: torch.device) -> Batch:
        """On ``device``; to a GPU from pinned memory without blocking (the copy overlaps compute)."""
        if device.type != "cuda":
            return Batch({k: v.to(device) for k, v in self.tensors.items()}, self.ntokens)
        return Batch({k: v.to(device, non_blocking=True) for k, v in self.pinned().tensors.items()}, self.ntokens)

    def pinned(self) -> Batch:
        """In page-locked host memory (a GPU copies from it asynchronously); pinned tensors stay."""
        return Batch({k: v if v.is_pinned() else v.pin_memory() for k, v in self.tensors.items()}, self.ntokens)


class Prefetch:
    """The next update's batches built in a background thread while the current update runs.
    ``build(key)`` must be a pure function of its key (preln's batches are: of epoch and position),
    so a prefetched value is exactly what building it on the spot would give; a key other than the
    announced one is built on the spot."""

    def __init__(self, build: Callable[[Hashable], list[Batch]]) -> None:
        self.build = build
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="preln-prefetch")
        self.next: tuple[Hashable, Future] | None = None

    def get(self, key: Hashable, following: Hashable | None) -> list[Batch]:
        """The batches of ``key``; starts building those of ``following`` (None: nothing)."""
        ready = self.next
        batches = ready[1].result() if ready is not None and ready[0] == key else self.build(key)
        self.next = (following, self.pool.submit(self.build, following)) if following is not None else None
        return batches

    def close(self) -> None:
        self.next = None
        self.pool.shutdown(wait=True, cancel_futures=True)


def token_batches(sizes: list[tuple[int, ...]], max_tokens: int, multiple: int = 8) -> list[list[int]]:
    """Group example indices by fairseq's ``--max-tokens`` rule (v0.9, the paper's code).

    ``sizes[i]`` holds example i's length on each side (source and target, each with its </s>);
    fairseq counts an example as its longer side, and a batch of n examples as
    ``n * (the longest example in it)``, which must not exceed ``max_tokens``. When a batch is full,
    it is cut to a multiple of ``multiple`` examples (fairseq's ``--required-batch-size-multiple``,
    default 8) unless it holds fewer; the rest starts the next batch. Examples are sorted by length
    (source, then target), so each batch is a length bucket with little padding. Deterministic;
    shuffle the batch order per epoch.
    """
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    lens: list[int] = []  # the examples' token counts in ``cur``, in order
    for i in order:
        n = max(sizes[i])
        if n > max_tokens:
            raise ConfigError(f"example {i} ({n} tokens on its longer side) exceeds max_tokens={max_tokens}")
        if cur and (len(cur) + 1) * max(max(lens), n) > max_tokens:
            keep = max(multiple * (len(cur) // multiple), len(cur) % multiple)
            batches.append(cur[:keep])
            cur, lens = cur[keep:], lens[keep:]
        cur.append(i)
        lens.append(n)
    if cur:
        batches.append(cur)
    return batches


def pad(seqs: list[list[int]], pad_id: int, multiple: int = 1) -> Tensor:
    """(B, T) long tensor, right-padded; T = the longest sequence rounded up to ``multiple`` (with
    ``train.compile``, few distinct shapes mean few recompilations)."""
    longest = max(map(len, seqs))
    out = torch.full((len(seqs), -(-longest // multiple) * multiple), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def mask_tokens(
    ids: Tensor,  # (B, T)
    prob: float,
    special: Tensor,  # (B, T) bool: never chosen (pad, <cls>, <sep>)
    mask_id: int,
    vocab_size: int,
    first_normal: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """BERT masking: choose ``prob`` of the non-special tokens (at least one per batch); of
    those 80% -> <mask>, 10% -> a random normal token, 10% unchanged. Returns (inputs, targets)
    with targets = -100 where not chosen."""
    chosen = (torch.rand(ids.shape, generator=generator) < prob) & ~special
    if not chosen.any():  # a loss over zero tokens is undefined: take one candidate
        candidates = (~special).nonzero()
        pick = candidates[torch.randint(len(candidates), (1,), generator=generator)][0]
        chosen[pick[0], pick[1]] = True
    targets = torch.where(chosen, ids, torch.full_like(ids, -100))
    r = torch.rand(ids.shape, generator=generator)
    inputs = ids.clone()
    inputs[chosen & (r < 0.8)] = mask_id
    rand_pos = chosen & (r >= 0.8) & (r < 0.9)
    random_ids = torch.randint(first_normal, vocab_size, ids.shape, generator=generator)
    inputs[rand_pos] = random_ids[rand_pos]
    return inputs, targets


def encode_pair(a: list[int], b: list[int], max_len: int) -> tuple[list[int], int]:
    """``<cls> a <sep> b <sep>``, the longer side cut first until it fits ``max_len`` (BERT's
    longest-first truncation); (ids, length of segment A)."""
    a, b = list(a), list(b)
    while len(a) + len(b) + 3 > max_len:
        (a if len(a) >= len(b) else b).pop()
    return [BOS, *a, EOS, *b, EOS], len(a) + 2
