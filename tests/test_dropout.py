"""preln's CPU dropout: its masks' law against simulation, seeding, gradients, dtypes."""

import math

import pytest
import torch
import torch.nn.functional as F

from preln.dropout import Dropout, cpu_mask


def test_mask_takes_two_values_and_drops_at_rate_p_within_binomial_noise():
    torch.manual_seed(0)
    p, n = 0.1, 2_000_000
    m = cpu_mask(torch.Size([n]), p, torch.float32)
    p_eff = round(p * 65536) / 65536
    scale = torch.tensor(1 / (1 - p_eff), dtype=torch.float32)
    assert set(m.unique().tolist()) == {0.0, scale.item()}
    dropped = (m == 0).double().mean().item()
    assert abs(dropped - p_eff) < 5 * math.sqrt(p_eff * (1 - p_eff) / n)  # a false alarm ~6e-7


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9])
def test_masks_mean_is_one_so_dropout_keeps_the_expected_activation(p):
    # over 200 masks of 5,000 elements, the per-mask means' average is 1 within 5 standard errors
    torch.manual_seed(1)
    means = torch.stack([cpu_mask(torch.Size([50, 100]), p, torch.float64).mean() for _ in range(200)])
    se = means.std() / math.sqrt(len(means))
    assert abs(means.mean().item() - 1) < 5 * se.item()


def test_neighbouring_elements_are_independent():
    # the four elements that share one 64-bit draw: every pair's joint drop rate is p^2
    torch.manual_seed(2)
    p, n = 0.3, 400_000
    d = (cpu_mask(torch.Size([n, 4]), p, torch.float32) == 0).double()
    p_eff = round(p * 65536) / 65536
    sd = math.sqrt(p_eff**2 * (1 - p_eff**2) / n)
    for i in range(4):
        for j in range(i + 1, 4):
            assert abs((d[:, i] * d[:, j]).mean().item() - p_eff**2) < 5 * sd, (i, j)


def test_torch_seed_fixes_the_masks_and_successive_calls_differ():
    torch.manual_seed(3)
    a, b = cpu_mask(torch.Size([1000]), 0.5, torch.float32), cpu_mask(torch.Size([1000]), 0.5, torch.float32)
    torch.manual_seed(3)
    assert torch.equal(a, cpu_mask(torch.Size([1000]), 0.5, torch.float32))
    assert not torch.equal(a, b)
    state = torch.get_rng_state()  # a checkpoint's RNG state restores the next mask
    c = cpu_mask(torch.Size([1000]), 0.5, torch.float32)
    torch.set_rng_state(state)
    assert torch.equal(c, cpu_mask(torch.Size([1000]), 0.5, torch.float32))


def test_module_scales_kept_elements_and_its_gradient_is_the_mask():
    torch.manual_seed(4)
    x = torch.randn(30, 7, 16, dtype=torch.float64, requires_grad=True)
    drop = Dropout(0.25)
    y = drop(x)
    kept = y != 0
    p_eff = round(0.25 * 65536) / 65536
    assert torch.allclose(y[kept], x[kept] / (1 - p_eff), rtol=0, atol=1e-15)
    (g,) = torch.autograd.grad((y * 3).sum(), x)
    assert torch.equal(g, 3 * kept.double() / (1 - p_eff))


def test_eval_mode_and_zero_p_are_the_identity_and_bad_p_is_refused():
    x = torch.randn(4, 5)
    assert Dropout(0.0)(x) is x
    assert Dropout(0.5).eval()(x) is x
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Dropout(1.0)


def test_half_precision_inputs_keep_their_dtype_and_torch_s_scale_rounding():
    torch.manual_seed(5)
    x = torch.randn(64, 64).bfloat16()
    y = Dropout(0.1)(x)
    assert y.dtype == torch.bfloat16
    m = y[y != 0] / x[y != 0]
    # the mask value is 1/(1-p) rounded once to bfloat16, as torch's dropout rounds its own
    assert torch.equal(m.unique(), torch.tensor([1 / (1 - round(0.1 * 65536) / 65536)]).bfloat16())


def test_matches_torch_dropout_in_law():
    # the same mean and second moment of the output as torch's dropout, by simulation
    torch.manual_seed(6)
    x = torch.ones(200_000, dtype=torch.float64)
    ours, theirs = Dropout(0.2)(x), F.dropout(x, 0.2, training=True)
    for k in (1, 2):
        a, b = (ours**k).mean().item(), (theirs**k).mean().item()
        assert abs(a - b) < 6 * math.sqrt(((ours**k).var() + (theirs**k).var()).item() / x.numel())


def test_compiled_models_keep_one_graph_with_torch_s_dropout():
    # under torch.compile the numpy draw would split the graph at every dropout: torch's is used
    drop = Dropout(0.5)
    f = torch.compile(lambda x: drop(x) * 2, backend="eager", fullgraph=True)
    torch.manual_seed(7)
    y = f(torch.ones(1000))
    assert set(y.unique().tolist()) == {0.0, 4.0}


def test_p_next_to_one_keeps_one_level_in_2_to_the_16():
    torch.manual_seed(8)
    m = cpu_mask(torch.Size([100_000]), 1 - 1e-7, torch.float64)
    assert set(m.unique().tolist()) <= {0.0, 65536.0} and (m == 0).double().mean() > 0.99
