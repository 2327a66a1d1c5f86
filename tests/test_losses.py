import math

import torch
import torch.nn.functional as F

from preln.losses import label_smoothed_nll


def test_eps_zero_is_plain_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11, dtype=torch.float64)
    target = torch.randint(0, 11, (3, 5))
    target[0, 3:] = -100
    loss, nll = label_smoothed_nll(logits, target, 0.0)
    ref = F.cross_entropy(logits.reshape(-1, 11), target.reshape(-1), ignore_index=-100, reduction="sum")
    torch.testing.assert_close(loss, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(nll, ref, rtol=0, atol=1e-12)


def test_smoothing_matches_torch_definition_and_hand_computation():
    torch.manual_seed(1)
    logits = torch.randn(4, 7, dtype=torch.float64)
    target = torch.tensor([0, 3, -100, 6])
    eps = 0.1
    loss, nll = label_smoothed_nll(logits, target, eps)
    ref = F.cross_entropy(logits, target, ignore_index=-100, reduction="sum", label_smoothing=eps)
    torch.testing.assert_close(loss, ref, rtol=0, atol=1e-12)
    logp = torch.log_softmax(logits, -1)
    hand = sum((1 - eps) * -logp[i, t] + eps * -logp[i].mean() for i, t in enumerate(target.tolist()) if t >= 0)
    assert math.isclose(float(loss), float(hand), rel_tol=1e-12)


def test_low_precision_logits_are_upcast():
    logits = torch.randn(2, 3, 9).to(torch.bfloat16)
    loss, _ = label_smoothed_nll(logits, torch.randint(0, 9, (2, 3)), 0.1)
    assert loss.dtype == torch.float32
