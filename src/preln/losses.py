"""Losses: pure functions of logits and targets, summed (the trainer normalizes).

Label smoothing follows torch's ``cross_entropy(label_smoothing=eps)`` definition (Szegedy et
al.): the target distribution is ``(1 - eps) * one_hot + eps / V`` over all V classes, so
``loss = (1 - eps) * nll + eps * mean_v(-log p_v)``. fairseq spreads eps over V - 1 classes
instead; for V in the thousands the two differ by a factor (V-1)/V on the smoothing term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def label_smoothed_nll(
    logits: Tensor,  # (..., V)
    target: Tensor,  # (...) class ids
    eps: float,
    ignore_index: int = -100,
) -> tuple[Tensor, Tensor]:
    """Returns (smoothed loss sum, nll sum) over targets != ignore_index, in >= float32."""
    logits = logits.reshape(-1, logits.shape[-1])
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # the loss is always computed in at least float32
    target = target.reshape(-1)
    keep = (target != ignore_index).to(logits.dtype)  # (N,)
    logp = F.log_softmax(logits, dim=-1)  # (N, V)
    nll = -(logp.gather(1, target.clamp(min=0)[:, None]).squeeze(1) * keep).sum()
    if eps == 0.0:
        return nll, nll.detach()
    smooth = -(logp.mean(dim=-1) * keep).sum()
    return (1.0 - eps) * nll + eps * smooth, nll.detach()
