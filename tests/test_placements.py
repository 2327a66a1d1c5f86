"""Every placement of ``model.norm`` against a hand transcription of its paper's equations, in
float64: the stacks' outputs, DeepNorm's alpha and beta, Admin's profile on a fixed batch, the
shared initialization, the config errors, and a short training run of each on both tasks."""

import json
import math

import pytest
import torch
from torch import nn

from preln import config
from preln.config import ConfigError, ModelConfig
from preln.fit import train
from preln.model import (
    DecoderLayer,
    EncoderLayer,
    LayerNorm,
    RMSNorm,
    Seq2Seq,
    Stack,
    deepnorm_constants,
)
from preln.model_init import admin_init
from preln.tasks import build_model

from .conftest import ROOT, require_data

PLACEMENTS = ["post", "pre", "sandwich", "deepnorm", "admin", "rezero", "mix"]
D, EPS = 16, 1e-5
TOL = dict(rtol=0, atol=1e-10)


def cfg(norm: str, norm_type: str = "layernorm", **kw) -> ModelConfig:
    base = dict(d_model=D, n_heads=4, d_ffn=32, dropout=0.0, encoder_layers=4, decoder_layers=3, vocab_size=50)
    return ModelConfig(norm=norm, norm_type=norm_type, **{**base, **kw})


# ---------------------------------------------------------------- the papers' equations, by hand


def ln(x, w, b):  # LayerNorm (Ba et al. 2016): centre, scale to unit variance (biased), gain, shift
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + EPS) * w + b


def rms(x, w):  # RMSNorm (Zhang & Sennrich 2019): divide by the root mean square, gain
    return x / torch.sqrt((x**2).mean(-1, keepdim=True) + EPS) * w


def norm_fn(module):
    """The hand-written norm with the module's parameters (which of the two by its parameters)."""
    if getattr(module, "bias", None) is None:
        return lambda x: rms(x, module.weight)
    return lambda x: ln(x, module.weight, module.bias)


def ffn(layer, x):  # W2 relu(W1 x + b1) + b2
    f = layer.ffn
    return torch.relu(x @ f.w1.weight.T + f.w1.bias) @ f.w2.weight.T + f.w2.bias


def sublayers(layer):
    """(residual module, F) pairs of an encoder layer; attention is the layer's own module,
    tested against torch's in test_model_reference.py."""
    return [(layer.attn_res, lambda h: layer.self_attn(h)), (layer.ffn_res, lambda h: ffn(layer, h))]


def reference_encoder(stack, x, norm, mix_ratio=0.25, alpha=1.0):
    """x through the stack, each sub-layer by its placement's equation."""
    L = len(stack.layers)
    n_post = math.ceil(mix_ratio * L)
    for i, layer in enumerate(stack.layers):
        kind = norm if norm != "mix" else ("post" if i < n_post else "pre")
        for res, f in sublayers(layer):
            if kind == "post":  # Vaswani et al. 2017
                x = norm_fn(res.norm)(x + f(x))
            elif kind == "pre":  # Xiong et al. 2020
                x = x + f(norm_fn(res.norm)(x))
            elif kind == "sandwich":  # Ding et al. 2021 (CogView), Kim et al. 2025 (Peri-LN)
                x = x + norm_fn(res.post_norm)(f(norm_fn(res.norm)(x)))
            elif kind == "deepnorm":  # Wang et al. 2022: LN(alpha x + G(x))
                x = norm_fn(res.norm)(alpha * x + f(x))
            elif kind == "admin":  # Liu et al. 2020: LN(x * omega + F(x))
                x = norm_fn(res.norm)(x * res.omega + f(x))
            elif kind == "rezero":  # Bachlechner et al. 2020: x + alpha F(x), no norm
                x = x + res.gate * f(x)
    last = norm if norm != "mix" else ("post" if n_post == L else "pre")
    if last in ("pre", "sandwich"):
        x = norm_fn(stack.final_norm)(x)
    return x


def randomize(m: nn.Module) -> None:
    """Norm gains/shifts, omegas and ReZero gates away from their init, so that a misplaced one
    cannot hide."""
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith(("norm.weight", "omega")):
                p.uniform_(0.5, 1.5)
            elif name.endswith("norm.bias"):
                p.uniform_(-0.5, 0.5)
            elif name.endswith("gate"):
                p.uniform_(0.3, 1.0)


@pytest.mark.parametrize("norm_type", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("norm", PLACEMENTS)
def test_encoder_stack_is_its_papers_equation(norm, norm_type):
    if norm == "rezero" and norm_type == "rmsnorm":
        pytest.skip("rezero has no norm")
    torch.manual_seed(0)
    c = cfg(norm, norm_type)
    stack = Stack(EncoderLayer, c, 4, "encoder-only").double()
    randomize(stack)
    x = torch.randn(3, 5, D, dtype=torch.float64)
    alpha = (2 * 4) ** 0.25 if norm == "deepnorm" else 1.0  # DeepNet, encoder-only: (2N)^(1/4)
    torch.testing.assert_close(stack(x), reference_encoder(stack, x, norm, alpha=alpha), **TOL)
    n_norms = sum(isinstance(m, (LayerNorm, RMSNorm)) for m in stack.modules())
    per_layer = {"sandwich": 4, "rezero": 0}.get(norm, 2)
    assert n_norms == 4 * per_layer + (norm in ("pre", "sandwich", "mix"))


@pytest.mark.parametrize("ratio,n_post", [(0.0, 0), (0.25, 1), (0.3, 2), (0.5, 2), (1.0, 4)])
def test_mix_ln_puts_post_ln_in_the_first_ceil_r_l_layers(ratio, n_post):
    torch.manual_seed(1)
    stack = Stack(EncoderLayer, cfg("mix", mix_ratio=ratio), 4).double()
    randomize(stack)
    assert [layer.ffn_res.kind for layer in stack.layers] == ["post"] * n_post + ["pre"] * (4 - n_post)
    assert (stack.final_norm is None) == (n_post == 4)
    x = torch.randn(2, 3, D, dtype=torch.float64)
    torch.testing.assert_close(stack(x), reference_encoder(stack, x, "mix", mix_ratio=ratio), **TOL)


def test_deepnorm_constants_are_the_papers():
    # Wang et al. 2022, Table 1, with N = 6 encoder and M = 6 decoder layers (worked by hand)
    enc, dec, only = (deepnorm_constants(r, 6, 6) for r in ("encoder", "decoder", "encoder-only"))
    assert enc == pytest.approx((0.81 * 7776 ** (1 / 16), 0.87 * 7776 ** (-1 / 16)))  # N^4 M = 6^5
    assert enc == pytest.approx((1.4179, 0.4970), abs=1e-4)  # 7776^(1/16) = 1.7505
    assert dec == pytest.approx((18**0.25, 72**-0.25)) and dec == pytest.approx((2.0598, 0.3433), abs=1e-4)
    assert only == pytest.approx((12**0.25, 48**-0.25)) and only == pytest.approx((1.8612, 0.3799), abs=1e-4)


def test_deepnorm_uses_alpha_per_stack_and_scales_v_o_ffn_by_beta():
    c = cfg("deepnorm", encoder_layers=4, decoder_layers=3)
    torch.manual_seed(3)
    deep = Seq2Seq(c).double()
    torch.manual_seed(3)
    pre = Seq2Seq(cfg("pre", encoder_layers=4, decoder_layers=3)).double()
    (a_enc, b_enc), (a_dec, b_dec) = deepnorm_constants("encoder", 4, 3), deepnorm_constants("decoder", 4, 3)
    assert all(r.alpha == a_enc for r in deep.encoder.residuals())
    assert all(r.alpha == a_dec for r in deep.decoder.residuals())
    ours, theirs = dict(deep.named_parameters()), dict(pre.named_parameters())
    for name, p in ours.items():
        beta = b_enc if name.startswith("encoder.") else b_dec
        if name.endswith(("v_proj.weight",)):  # Xavier gain beta instead of fairseq's 1/sqrt(2)
            torch.testing.assert_close(p, theirs[name] * beta * 2**0.5, rtol=1e-6, atol=0)  # scaled in float32
        elif name.endswith(("out_proj.weight", "w1.weight", "w2.weight")):  # gain beta instead of 1
            torch.testing.assert_close(p, theirs[name] * beta, rtol=1e-6, atol=0)
        elif name in theirs and theirs[name].shape == p.shape:
            assert torch.equal(p, theirs[name]), name


@pytest.mark.parametrize("norm", PLACEMENTS)
def test_every_placement_shares_the_pre_ln_init_of_its_seed(norm):
    for task in ("translation", "mlm"):
        torch.manual_seed(5)
        pre = dict(build_model(cfg("pre", task=task)).named_parameters())
        torch.manual_seed(5)
        other = build_model(cfg(norm, task=task))
        shared = 0
        for name, p in other.named_parameters():
            if norm != "deepnorm" or not name.endswith(("v_proj.weight", "out_proj.weight", "w1.weight", "w2.weight")):
                if name in pre and pre[name].shape == p.shape:
                    assert torch.equal(p, pre[name]), (norm, task, name)
                    shared += 1
        assert shared > 10
        if norm == "rezero":
            assert all(float(r.gate.detach()) == 0.0 for r in other.encoder.residuals())


def test_admin_profile_on_a_fixed_batch_is_the_papers_definition():
    """omega_i = sqrt(Var[x_0] + sum_{j<i} Var[F_j(x_{j-1})]), the variances from one forward pass
    with omega = 1 (a Post-LN network)."""
    torch.manual_seed(7)
    model = build_model(cfg("admin", task="mlm", encoder_layers=3)).double().eval()
    ids = torch.randint(4, 50, (4, 9))
    profile = admin_init(model, lambda: model(ids))
    x = model.embed(ids)
    running, omegas, variances = float(x.detach().var()), [], []
    with torch.no_grad():
        for layer in model.encoder.layers:
            for res, f in [(layer.attn_res, layer.self_attn), (layer.ffn_res, lambda h, lay=layer: ffn(lay, h))]:
                y = f(x)
                omegas.append(math.sqrt(running))
                variances.append(float(y.var()))
                running += variances[-1]
                x = ln(x + y, res.norm.weight, res.norm.bias)  # profiling runs with omega = 1
    assert profile["encoder"]["omega"] == pytest.approx(omegas, rel=1e-12)
    assert profile["encoder"]["sublayer_var"] == pytest.approx(variances, rel=1e-12)
    got = [float(r.omega[0].detach()) for r in model.encoder.residuals()]
    assert got == pytest.approx(omegas, rel=1e-12)
    assert all(torch.all(r.omega == r.omega[0]) for r in model.encoder.residuals())


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model.norm='rezero'", "model.norm_type='rmsnorm'"], "norm_type does not apply to norm='rezero'"),
        (["model.mix_ratio=1.5"], "model.mix_ratio must be in [0, 1]"),
        (["model.norm='peri'"], "model.norm: 'peri' is not one of"),
        (["model.norm_type='batchnorm'"], "model.norm_type: 'batchnorm' is not one of"),
    ],
)
def test_bad_placement_settings_are_one_line_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config.load(ROOT / "configs" / "tiny-translation.toml", overrides)


@pytest.mark.parametrize("task", ["translation", "mlm"])
def test_every_placement_trains_on_both_tasks(tmp_path, task):
    require_data("multi30k" if task == "translation" else "english-mix")
    for norm in PLACEMENTS:
        sets = [f"model.norm='{norm}'", "train.progress=false", "train.max_updates=4", "train.valid_bleu=false"]
        sets += ["model.norm_type='rmsnorm'"] if norm in ("pre", "sandwich") else []
        res = train(config.load(ROOT / "configs" / f"tiny-{task}.toml", sets), tmp_path / norm)
        assert res["status"] == "completed" and math.isfinite(res["valid_loss"]), (norm, res)
    profile = json.loads((tmp_path / "admin" / "admin_profile.json").read_text())
    assert len(profile["encoder"]["omega"]) == 2 * 2  # tiny: 2 layers x 2 sub-layers


def test_a_resumed_admin_run_does_not_profile_again(tmp_path, capsys):
    require_data("multi30k")
    sets = ["model.norm='admin'", "train.progress=false", "train.valid_bleu=false", "train.save_every=3"]
    train(config.load(ROOT / "configs" / "tiny-translation.toml", [*sets, "train.max_updates=3"]), tmp_path / "r")
    first = (tmp_path / "r" / "admin_profile.json").read_text()
    assert "admin: initialized from a profiling pass" in capsys.readouterr().err
    more = config.load(ROOT / "configs" / "tiny-translation.toml", [*sets, "train.max_updates=3"])
    (tmp_path / "r" / "status.json").unlink()  # as if killed after its checkpoint
    assert train(more, tmp_path / "r")["status"] == "completed"
    err = capsys.readouterr().err
    assert "resumed from" in err and "admin: initialized" not in err
    assert (tmp_path / "r" / "admin_profile.json").read_text() == first


def test_decoder_layer_kinds_follow_the_switch():
    for norm in PLACEMENTS:
        stack = Stack(DecoderLayer, cfg(norm), 3, "decoder")
        kinds = {r.kind for r in stack.residuals()}
        assert kinds == ({"post", "pre"} if norm == "mix" else {norm}), norm
        assert len(stack.residuals()) == 9


def test_analyze_measures_every_placement_side_by_side(tmp_path, capsys):
    from preln.cli import main

    small = ["seeds=1", "batches=1", "depths=[2,3,4]", "depth_seeds=2", "d_model=32", "d_ffn=64", "layers=2"]
    small += ["max_tokens=300", "depth_max_tokens=300"]
    args = ["analyze", "--only", "placements", "--placements", ",".join(PLACEMENTS), "--out", str(tmp_path)]
    assert main([*args, *[x for s in small for x in ("--set", s)]]) == 0
    res = json.loads((tmp_path / "analysis.json").read_text())
    pl = res["placements"]
    assert pl["placements"] == PLACEMENTS and "fig3" not in res
    for norm in PLACEMENTS:
        assert len(pl[norm]["layers"]["decoder"]["W2"]["mean"]) == 2
        assert len(pl[norm]["stream"]["encoder"]) == 3  # entering layers 1, 2 and leaving the last
        fit = pl[norm]["depth"]["decoder"]["fit"]
        assert (fit is None) == (norm == "rezero")  # ReZero's gates are 0 at init: no gradient to F
    assert pl["post"]["stream"]["encoder"][-1] == pytest.approx(1.0, abs=1e-3)  # LN output, gain 1
    lines = (tmp_path / "summary.md").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| placement |"))
    rows = [ln for ln in lines[start:] if ln.startswith("| ") and not ln.startswith("| --- |")]
    assert len(rows) == 1 + len(PLACEMENTS)
    assert all(r.count("|") == rows[0].count("|") for r in rows)  # no cell split by a stray "|"
    assert (tmp_path / "placements.png").is_file()
    assert main(["analyze", "--only", "placements", "--out", str(tmp_path / "x")]) == 2
    assert "name them with --placements" in capsys.readouterr().err
    assert main(["analyze", "--placements", "post,peri", "--out", str(tmp_path / "y")]) == 2
    assert "'peri' is not one of" in capsys.readouterr().err
