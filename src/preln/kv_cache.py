"""The decoders' key/value cache for incremental decoding: a list with one entry per decoder layer.
Self-attention's keys and values live in buffers written in place (``append_to_cache``), beside
its stacked projection weights (``qkv_w``, ``qkv_b``); cross-attention's are the memory's, computed
once, with the memory's mask as a float to add (``bias``). Beam search moves rows of the cache
(``reorder``, ``copy_rows``); the model's ``reorder_cache`` and ``copy_cache_rows`` are these.
"""

from __future__ import annotations

from torch import Tensor

Cache = dict[str, Tensor]


def append_to_cache(cache: Cache, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Self-attention's keys and values (B, H, T, dh) of this step written after the cached ones;
    returns all so far. They live in buffers that double when full (``k_buf``, ``v_buf``; ``k`` and
    ``v`` are views of the filled prefix), so a step copies its own T positions: growing the cache
    with ``torch.cat`` copied every cached position at every step (27% of greedy decoding's time
    for 200-token outputs)."""
    n, t = (cache["k"].shape[2] if "k" in cache else 0), k.shape[2]
    if "k_buf" not in cache or cache["k_buf"].shape[2] < n + t:
        for name, new in (("k", k), ("v", v)):
            grown = new.new_empty(*new.shape[:2], max(2 * (n + t), 16), new.shape[3])
            if n:
                grown[:, :, :n] = cache[name]
            cache[f"{name}_buf"] = grown
    for name, new in (("k", k), ("v", v)):
        buf = cache[f"{name}_buf"]
        buf[:, :, n : n + t] = new
        cache[name] = buf[:, :, : n + t]
    return cache["k"], cache["v"]


def reorder(cache: list[dict[str, Cache]], index: Tensor, memory_index: Tensor | None = None) -> None:
    """Select batch rows of the self-attention caches in place (``index``: beam search moves
    beams, sentences leave the batch), and rows of the cross-attention caches with
    ``memory_index`` (the memory's rows: sentences that stay, when some left)."""
    for layer in cache:
        for part, rows in ((layer["self"], index), (layer["cross"], memory_index)):
            if rows is None or "k" not in part:
                continue
            n = part["k"].shape[2] if "k_buf" in part else None  # buffers: select them, view again
            for k in [k for k in part if n is None or k.endswith("_buf")]:
                part[k] = part[k].index_select(0, rows)
            if n is not None:
                part["k"], part["v"] = part["k_buf"][:, :, :n], part["v_buf"][:, :, :n]


def copy_rows(cache: list[dict[str, Cache]], dst: Tensor, src: Tensor, start: int = 0) -> None:
    """Self-attention cache rows ``src`` copied onto rows ``dst``, in place, the filled positions
    from ``start`` on (beam search: a beam whose parent's row is taken by a sibling). Positions that
    both rows' beams share (their common prefix) hold the same values, copies of one computation,
    so beam search starts after them: a weak model's beams share more than half of their history."""
    for layer in cache:
        part, n = layer["self"], layer["self"]["k"].shape[2]
        for name in ("k_buf", "v_buf"):
            filled = part[name][:, :, start:n]
            filled.index_copy_(0, dst, filled.index_select(0, src))
