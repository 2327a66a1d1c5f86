"""The optimizers ``build_optimizer`` makes on the CPU (multi-tensor paths) give bitwise the
numbers of torch's per-tensor loop, the CPU default the reference runs were made with (RAdam's
multi-tensor path does not: it keeps the loop)."""

import pytest
import torch
from torch import nn

from preln.config import OptimConfig
from preln.optim import build_optimizer, param_groups


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_cpu_optimizers_match_the_per_tensor_loop_bit_for_bit(name):
    c = OptimConfig(name=name, lr=3e-3, weight_decay=0.01, momentum=0.9, eps=1e-6)

    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 4))

    ours, ref = model(), model()
    opt = build_optimizer(ours, c)
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(name)
    groups = param_groups(ref, c.weight_decay)
    if kind is None:
        ref_opt = torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, foreach=False)
    else:
        ref_opt = kind(groups, lr=c.lr, betas=c.betas, eps=c.eps, foreach=False)
    assert opt.defaults["foreach"] is True  # not the path the reference takes
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        grads = [torch.randn(p.shape, generator=g) for p in ours.parameters()]
        for m, o in ((ours, opt), (ref, ref_opt)):
            for p, gr in zip(m.parameters(), grads):
                p.grad = gr.clone()
            o.step()
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), ref.parameters()))
