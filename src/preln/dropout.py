"""Dropout (Srivastava et al. 2014) whose masks are cheap to draw on the CPU.

In training each element is zeroed with probability p and the others are scaled so the expected
output equals the input. On CUDA (and any device but the CPU), and inside ``torch.compile``, this
is torch's own dropout. On the CPU, torch draws each mask element from its Mersenne Twister one at
a time: measured at the quick preset's sizes (one thread, ~110k elements) 1.3-1.5 ms a call, ~12%
of a training step. Here the bits come from numpy's PCG64 in bulk (64 bits a draw, 16 bits an
element) and the mask is made with four float operations: ~0.25 ms. The generator is seeded for
each call by one draw from torch's CPU generator, so ``torch.manual_seed`` and a checkpoint's saved
RNG state still fix every mask (bitwise resume holds). The drop probability is p rounded to a
multiple of 2^-16 (0.1 becomes 0.1000061; at most 1 - 2^-16) and the kept elements are scaled by
1/(1 - that), so the mask's mean is exactly 1.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LEVELS = 1 << 16  # an element's 16 random bits: int16 values in [-2^15, 2^15), uniform


def cpu_mask(shape: torch.Size, p: float, dtype: torch.dtype) -> Tensor:
    """A dropout mask of ``shape``: 0 with probability round(p 2^16) / 2^16, else 1 / (1 - that)."""
    n = shape.numel()
    seed = int(torch.randint(0, 1 << 62, ()).item())  # from torch's generator, so seeds fix masks
    words = np.random.PCG64(seed).random_raw(-(-n // 4))  # uint64, four elements' bits each
    bits = torch.from_numpy(words.view(np.int16)[:n]).view(shape)
    dropped = min(round(p * _LEVELS), _LEVELS - 1)  # p within 2^-17 of 1 keeps one level
    keep_from = dropped - _LEVELS // 2  # kept iff bits >= keep_from: P = 1 - dropped / 2^16
    scale = _LEVELS / (_LEVELS - dropped)
    # In float32 (float64 for float64 inputs) int16 values are exact, so (bits - keep_from + 1) is
    # an integer: >= 1 where kept, <= 0 where dropped; times scale, clamped to [0, scale], it is the
    # mask, without the slow bool tensors.
    work = torch.float64 if dtype == torch.float64 else torch.float32
    mask = bits.to(work).sub_(keep_from - 1).mul_(scale).clamp_(0.0, scale)
    return mask.to(dtype)


class Dropout(nn.Module):
    """``nn.Dropout``'s behaviour, with :func:`cpu_mask` on the CPU."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu" or torch.compiler.is_compiling():  # compiled: one graph, no numpy
            return F.dropout(x, self.p, training=True)
        return x * cpu_mask(x.shape, self.p, x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"
