"""Per-layer telemetry while training (``train.telemetry_every = N``): the quantities the theory is
about, measured on the updates the loop policy picks.

For every weight matrix of every layer (attention W^Q/W^K/W^V/W^O, FFN W^1/W^2): the gradient's
Frobenius norm (Fig. 3's quantity, after the fp16 unscale, before clipping) and the update-to-weight
ratio ||w_after - w_before|| / ||w_before||; for every stack, the residual stream's RMS
sqrt(E[x^2]) entering each layer and leaving the last (Lemma 2's quantity, live; over all positions
of the update's batches). One JSON line per measured update in ``telemetry.jsonl``.

The ``Trainer`` calls ``before_step`` / ``after_step`` around its optimizer step when given a
probe; ``arm`` / ``disarm`` add and remove the forward hooks, so the other updates cost nothing.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .model import Stack


def layer_matrices(module: nn.Module) -> dict[str, nn.Parameter]:
    """The 2-D weights of the stacks' layers, by parameter name (``decoder.layers.5.ffn.w2.weight``)."""
    return {
        n: p
        for n, p in module.named_parameters()
        if p.dim() == 2 and ".layers." in n and n.startswith(("encoder.", "decoder."))
    }


class Telemetry:
    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.weights = layer_matrices(module)
        self.stacks = {n: m for n, m in module.named_children() if isinstance(m, Stack)}
        self._hooks: list = []
        self._sums: dict[str, list[list[float]]] = {}
        self._before: dict[str, Tensor] = {}
        self.record: dict = {}

    def arm(self) -> None:
        """Record the residual stream of the next update's forward passes."""
        self._sums = {n: [[0.0, 0] for _ in range(len(s.layers) + 1)] for n, s in self.stacks.items()}
        for name, stack in self.stacks.items():
            for i, layer in enumerate(stack.layers):
                self._hooks.append(layer.register_forward_pre_hook(self._grab(name, i, lambda args, out: args[0])))
            last = len(stack.layers)
            self._hooks.append(stack.layers[-1].register_forward_hook(self._grab(name, last, lambda args, out: out)))

    def _grab(self, stack: str, i: int, pick):
        def hook(module, args, out=None) -> None:
            x = pick(args, out).detach()
            acc = self._sums[stack][i]
            acc[0] += float(x.float().pow(2).sum())
            acc[1] += x.numel()

        return hook

    def disarm(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    @torch.no_grad()
    def before_step(self) -> None:
        """Gradients are final (accumulated, unscaled): their norms, and the weights' copies."""
        self.record = {
            "grad_norm": {n: float(p.grad.float().norm()) for n, p in self.weights.items() if p.grad is not None}
        }
        self._before = {n: p.detach().clone() for n, p in self.weights.items()}

    @torch.no_grad()
    def after_step(self) -> None:
        ratio = {}
        for n, p in self.weights.items():
            w0 = self._before[n].float()
            ratio[n] = float((p.detach().float() - w0).norm() / w0.norm().clamp_min(1e-30))
        self.record["update_ratio"] = ratio
        self.record["stream_rms"] = {
            stack: [(s / max(c, 1)) ** 0.5 for s, c in sums] for stack, sums in self._sums.items()
        }
        self._before = {}

    def take(self) -> dict:
        """The record of the measured update (grad_norm, update_ratio, stream_rms)."""
        self.disarm()
        rec, self.record = self.record, {}
        return rec
