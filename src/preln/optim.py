"""Optimizers from torch.optim, with weight decay kept off LayerNorm parameters and biases."""

from __future__ import annotations

import torch
from torch import nn

from .config import OptimConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices (decayed) and vectors — biases, LayerNorm gains/shifts — (not)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, c: OptimConfig) -> torch.optim.Optimizer:
    """Adam and AdamW use the fused CUDA kernel when the weights are on a GPU (one launch for all
    parameters). On the CPU, Adam, AdamW and SGD take their multi-tensor paths: bitwise the numbers
    of the per-tensor loop torch picks there by default, with a quarter less time in Adam's step
    (the fused CPU kernel is faster still but changes the last bits, as RAdam's multi-tensor path
    does: RAdam keeps the loop)."""
    groups = param_groups(model, c.weight_decay)
    if next(model.parameters()).is_cuda:
        kw = {"fused": True} if c.name in ("adam", "adamw") else {}
    else:
        kw = {"foreach": True}  # not for RAdam (below)
    if c.name == "adam":
        return torch.optim.Adam(groups, lr=c.lr, betas=c.betas, eps=c.eps, **kw)
    if c.name == "adamw":
        return torch.optim.AdamW(groups, lr=c.lr, betas=c.betas, eps=c.eps, **kw)
    if c.name == "radam":
        return torch.optim.RAdam(groups, lr=c.lr, betas=c.betas, eps=c.eps)
    return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, **kw)
