"""Batches by a token budget over length buckets (fairseq ``--max-tokens``) and MLM masking."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
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


class Batches:
    """Batches of example indices stored flat: batch k is ``order[bounds[k]:bounds[k + 1]]``, a
    slice of the examples sorted by length (``token_batches``). Two integer arrays, whatever the
    number of examples (a list of lists would hold one Python int per example)."""

    def __init__(self, order: np.ndarray, bounds: np.ndarray) -> None:
        self.order, self.bounds = order, bounds

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __getitem__(self, k: int) -> list[int]:
        if not -len(self) <= k < len(self):
            raise IndexError(k)
        k %= len(self)
        return self.order[self.bounds[k] : self.bounds[k + 1]].tolist()

    def __iter__(self):
        return (self[k] for k in range(len(self)))


def token_batches(sizes, max_tokens: int, multiple: int = 8) -> Batches:
    """Group example indices by fairseq's ``--max-tokens`` rule (v0.9, the paper's code).

    ``sizes[i]`` holds example i's length on each side (source and target, each with its </s>):
    a sequence of tuples or an (N, sides) integer array. fairseq counts an example as its longer
    side, and a batch of n examples as ``n * (the longest example in it)``, which must not exceed
    ``max_tokens``. When a batch is full, it is cut to a multiple of ``multiple`` examples
    (fairseq's ``--required-batch-size-multiple``, default 8) unless it holds fewer; the rest
    starts the next batch, and the example that did not fit joins it unchecked (fairseq's
    ``batch_by_size`` does the same; such a batch can exceed the budget by a little). Examples
    are sorted by length (source, then target), so each batch is a length bucket with little
    padding. Deterministic; shuffle the batch order per epoch.

    The rule is applied to runs of equal sizes at once (a batch fills to ``max_tokens // longest``
    examples), so the cost grows with the number of batches, not of examples.
    """
    if len(sizes) == 0:
        return Batches(np.zeros(0, np.int64), np.zeros(1, np.int64))
    sizes = np.asarray(sizes, dtype=np.int64).reshape(len(sizes), -1)  # (N, sides)
    key = sizes[:, 0]
    for col in sizes.T[1:]:  # one sort key: the sides compared in turn (each in [0, max])
        key = key * (int(sizes.max()) + 1) + col
    order = stable_order(key)  # by the first side, then the next; ties by index
    longest = (sizes[:, 0] if sizes.shape[1] == 1 else sizes.max(1))[order]  # (N,) in sorted order
    over = np.flatnonzero(longest > max_tokens)
    if len(over):
        i, n = int(order[over[0]]), int(longest[over[0]])
        raise ConfigError(f"example {i} ({n} tokens on its longer side) exceeds max_tokens={max_tokens}")
    ordered = key[order]
    change = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    runs = np.concatenate([[0], change, [len(sizes)]])
    bounds, start, count, top = [0], 0, 0, 0  # ``cur`` is sorted positions [start, start + count)
    for r0, r1 in zip(runs[:-1].tolist(), runs[1:].tolist()):
        n, pos = int(longest[r0]), r0
        while pos < r1:
            cap = max_tokens // max(top, n)  # a batch with this run's examples holds at most cap
            take = min(max(cap - count, 0), r1 - pos)
            count, pos, top = count + take, pos + take, max(top, n) if take else top
            if pos < r1:  # the next example does not fit: cut, keep a multiple, carry the rest
                keep = max(multiple * (count // multiple), count % multiple)
                bounds.append(start + keep)
                start, count = start + keep, count - keep
                rest = n if start >= r0 else int(longest[start : start + count].max()) if count else 0
                top = max(rest, n)
                count, pos = count + 1, pos + 1  # joins the rest unchecked, as in fairseq's batch_by_size
                cap = max_tokens // top
                period = max(multiple * (cap // multiple), cap % multiple)
                if top == n and count == cap - period + 1:  # steady: each cut emits ``period`` examples
                    cycles = (r1 - pos) // period
                    bounds.extend(range(start + period, start + cycles * period + 1, period))
                    start, pos = start + cycles * period, pos + cycles * period
    if count:
        bounds.append(start + count)
    return Batches(order.astype(np.int64, copy=False), np.asarray(bounds, np.int64))


def stable_order(key: np.ndarray) -> np.ndarray:
    """``np.argsort(key, kind="stable")`` for non-negative integer keys, by 16-bit digits: NumPy
    radix-sorts 16-bit integers in linear time (its general stable sort of 50M keys takes ~10 s)."""
    if len(key) == 0 or int(key.max()) >= 1 << 32:
        return np.argsort(key, kind="stable")
    order = np.argsort((key & 0xFFFF).astype(np.uint16), kind="stable")
    if int(key.max()) >= 1 << 16:  # then by the high digit, stably: ties keep the low digit's order
        order = order[np.argsort((key[order] >> 16).astype(np.uint16), kind="stable")]
    return order


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
