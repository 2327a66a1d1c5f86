"""Initializations that measure the data: the placements' hook run once on fresh weights before
training (Admin's profile of its sub-layers' output variances). The model itself knows nothing of
training; the trainer (and the placements analysis) call this with a training batch's forward."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .model import Stack


def init_from_data(model: nn.Module, run_forward: Callable[[], object]) -> dict[str, dict]:
    """The placements' hook on fresh weights, run once before training: those whose
    initialization depends on the data measure it with ``run_forward`` (a training batch's
    forward, in eval mode). Returns {placement: what it measured} (empty when none needs it):
    Admin's profile (``admin_init``)."""
    if any(r.kind == "admin" for m in model.modules() if isinstance(m, Stack) for r in m.residuals()):
        return {"admin": admin_init(model, run_forward)}
    return {}


@torch.no_grad()
def admin_init(model: nn.Module, run_forward: Callable[[], object]) -> dict:
    """Admin's initialization (Liu et al. 2020, Sec. 4.2): with omega = 1, one forward pass
    (``run_forward``, e.g. a training batch; call it in eval mode) records the output variance
    Var[F_j(x_{j-1})] of every sub-layer of each stack; then omega_i = sqrt(sum_{j < i} Var[F_j]),
    where the sum starts with the variance of the stack's input x_0 (the embeddings), as
    Transformer-Clinic's profiling starts its running sum (so omega_1 > 0). Sets every omega in
    place; returns the profile {stack: {"input_var", "sublayer_var", "omega"}} to keep with the run."""
    stacks = {n: m for n, m in model.named_modules() if isinstance(m, Stack) and m.residuals()}
    stacks = {n: m for n, m in stacks.items() if all(r.kind == "admin" for r in m.residuals())}
    inputs: dict[str, float] = {}

    def record_input(name: str):
        def hook(module, args) -> None:  # a pre-hook that returns None leaves the input as it is
            inputs.setdefault(name, float(args[0].double().var()))

        return hook

    hooks = [m.register_forward_pre_hook(record_input(n)) for n, m in stacks.items()]
    for m in stacks.values():
        for r in m.residuals():
            r.omega.fill_(1.0)
            r.profile = []
    try:
        run_forward()
    finally:
        for h in hooks:
            h.remove()
    profile = {}
    for n, m in stacks.items():
        variances, running, omegas = [r.profile[0] for r in m.residuals()], inputs[n], []
        for r, v in zip(m.residuals(), variances):
            omegas.append(math.sqrt(running))
            r.omega.fill_(omegas[-1])
            r.profile, running = None, running + v
        profile[n] = {"input_var": inputs[n], "sublayer_var": variances, "omega": omegas}
    return profile
