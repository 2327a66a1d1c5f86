"""Our layers and stacks vs torch.nn.Transformer*Layer(norm_first=...) in float64: outputs and
parameter gradients equal to 1e-9, with weights copied across."""

import pytest
import torch
from torch import nn

from preln.config import ModelConfig
from preln.model import DecoderLayer, EncoderLayer, Seq2Seq, Stack, padding_mask

D, H, FF = 16, 4, 32
TOL = dict(rtol=0, atol=1e-9)


def cfg(norm: str) -> ModelConfig:
    return ModelConfig(
        norm=norm, d_model=D, n_heads=H, d_ffn=FF, dropout=0.0, encoder_layers=2, decoder_layers=2, vocab_size=50
    )


def copy_attn(ours, ref: nn.MultiheadAttention) -> None:
    with torch.no_grad():
        w = torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight])
        b = torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias])
        ref.in_proj_weight.copy_(w)
        ref.in_proj_bias.copy_(b)
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)


def copy_common(ours, ref) -> None:
    with torch.no_grad():
        ref.linear1.weight.copy_(ours.ffn.w1.weight)
        ref.linear1.bias.copy_(ours.ffn.w1.bias)
        ref.linear2.weight.copy_(ours.ffn.w2.weight)
        ref.linear2.bias.copy_(ours.ffn.w2.bias)
    copy_attn(ours.self_attn, ref.self_attn)


def randomize_norms(m: nn.Module) -> None:
    """LayerNorm gains/shifts away from 1/0 so a misplaced norm cannot hide."""
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.LayerNorm):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)


def copy_norm(src: nn.LayerNorm, dst: nn.LayerNorm) -> None:
    with torch.no_grad():
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)


def make_encoder_pair(norm: str):
    ours = EncoderLayer(cfg(norm), norm).double()
    randomize_norms(ours)
    ref = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, batch_first=True, norm_first=norm == "pre").double()
    copy_common(ours, ref)
    copy_norm(ours.attn_res.norm, ref.norm1)
    copy_norm(ours.ffn_res.norm, ref.norm2)
    return ours, ref


def make_decoder_pair(norm: str):
    ours = DecoderLayer(cfg(norm), norm).double()
    randomize_norms(ours)
    ref = nn.TransformerDecoderLayer(D, H, FF, dropout=0.0, batch_first=True, norm_first=norm == "pre").double()
    copy_common(ours, ref)
    copy_attn(ours.cross_attn, ref.multihead_attn)
    copy_norm(ours.self_res.norm, ref.norm1)
    copy_norm(ours.cross_res.norm, ref.norm2)
    copy_norm(ours.ffn_res.norm, ref.norm3)
    return ours, ref


def grads(m: nn.Module) -> dict:
    return {n: p.grad.clone() for n, p in m.named_parameters()}


def assert_grads_match_encoder(ours, ref):
    go, gr = grads(ours), grads(ref)
    torch.testing.assert_close(go["ffn.w1.weight"], gr["linear1.weight"], **TOL)
    torch.testing.assert_close(go["ffn.w2.weight"], gr["linear2.weight"], **TOL)
    torch.testing.assert_close(go["attn_res.norm.weight"], gr["norm1.weight"], **TOL)
    torch.testing.assert_close(go["ffn_res.norm.bias"], gr["norm2.bias"], **TOL)
    qkv = torch.cat([go["self_attn.q_proj.weight"], go["self_attn.k_proj.weight"], go["self_attn.v_proj.weight"]])
    torch.testing.assert_close(qkv, gr["self_attn.in_proj_weight"], **TOL)
    torch.testing.assert_close(go["self_attn.out_proj.weight"], gr["self_attn.out_proj.weight"], **TOL)


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_encoder_layer_matches_torch(norm):
    torch.manual_seed(0)
    ours, ref = make_encoder_pair(norm)
    x = torch.randn(3, 7, D, dtype=torch.float64)
    ids = torch.ones(3, 7, dtype=torch.long)
    ids[1, 5:] = 0
    ids[2, 3:] = 0
    yo = ours(x, mask=padding_mask(ids, 0))
    yr = ref(x, src_key_padding_mask=ids == 0)
    keep = ids != 0  # torch's fast path may zero padded rows; compare real positions
    torch.testing.assert_close(yo[keep], yr[keep], **TOL)
    w = torch.randn_like(yo)
    (yo[keep] * w[keep]).sum().backward()
    (yr[keep] * w[keep]).sum().backward()
    assert_grads_match_encoder(ours, ref)


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_decoder_layer_matches_torch(norm):
    torch.manual_seed(1)
    ours, ref = make_decoder_pair(norm)
    x = torch.randn(2, 5, D, dtype=torch.float64)
    mem = torch.randn(2, 6, D, dtype=torch.float64)
    src = torch.ones(2, 6, dtype=torch.long)
    src[1, 4:] = 0
    yo = ours(x, mem, padding_mask(src, 0), is_causal=True)
    causal = nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.float64)
    yr = ref(x, mem, tgt_mask=causal, memory_key_padding_mask=src == 0, tgt_is_causal=True)
    torch.testing.assert_close(yo, yr, **TOL)
    w = torch.randn_like(yo)
    (yo * w).sum().backward()
    (yr * w).sum().backward()
    go, gr = grads(ours), grads(ref)
    torch.testing.assert_close(go["ffn.w2.weight"], gr["linear2.weight"], **TOL)
    torch.testing.assert_close(go["cross_attn.out_proj.weight"], gr["multihead_attn.out_proj.weight"], **TOL)
    kv = torch.cat([go["cross_attn.k_proj.weight"], go["cross_attn.v_proj.weight"]])
    torch.testing.assert_close(kv, gr["multihead_attn.in_proj_weight"][D:], **TOL)
    torch.testing.assert_close(go["cross_res.norm.weight"], gr["norm2.weight"], **TOL)
    torch.testing.assert_close(go["ffn_res.norm.weight"], gr["norm3.weight"], **TOL)


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_stacks_match_torch(norm):
    """Whole encoder and decoder stacks; the final LayerNorm exists iff Pre-LN (torch gets it
    passed as ``norm=`` only for Pre-LN, avoiding the double norm of pytorch#50086)."""
    torch.manual_seed(2)
    c = cfg(norm)
    enc = Stack(EncoderLayer, c, 3).double()
    dec = Stack(DecoderLayer, c, 3).double()
    assert (enc.final_norm is not None) == (norm == "pre")
    randomize_norms(enc)
    randomize_norms(dec)
    refs = []
    for ours_stack, ref_cls, maker in (
        (enc, nn.TransformerEncoder, make_encoder_pair),
        (dec, nn.TransformerDecoder, make_decoder_pair),
    ):
        final = nn.LayerNorm(D).double() if norm == "pre" else None
        layer = maker(norm)[1]
        ref = (
            ref_cls(layer, num_layers=3, norm=final, enable_nested_tensor=False)
            if ref_cls is nn.TransformerEncoder
            else ref_cls(layer, num_layers=3, norm=final)
        )
        for o, r in zip(ours_stack.layers, ref.layers):
            copy_common(o, r)
            if ref_cls is nn.TransformerEncoder:
                copy_norm(o.attn_res.norm, r.norm1)
                copy_norm(o.ffn_res.norm, r.norm2)
            else:
                copy_attn(o.cross_attn, r.multihead_attn)
                copy_norm(o.self_res.norm, r.norm1)
                copy_norm(o.cross_res.norm, r.norm2)
                copy_norm(o.ffn_res.norm, r.norm3)
        if final is not None:
            copy_norm(ours_stack.final_norm, final)
        refs.append(ref)
    ref_enc, ref_dec = refs
    src = torch.randn(2, 6, D, dtype=torch.float64)
    tgt = torch.randn(2, 4, D, dtype=torch.float64)
    mo = enc(src)
    mr = ref_enc(src)
    torch.testing.assert_close(mo, mr, **TOL)
    yo = dec(tgt, memory=mo, memory_mask=None, is_causal=True)
    causal = nn.Transformer.generate_square_subsequent_mask(4, dtype=torch.float64)
    yr = ref_dec(tgt, mr, tgt_mask=causal, tgt_is_causal=True)
    torch.testing.assert_close(yo, yr, **TOL)
    w = torch.randn_like(yo)
    (yo * w).sum().backward()
    (yr * w).sum().backward()
    for o, r in zip(enc.layers, ref_enc.layers):
        torch.testing.assert_close(o.ffn.w1.weight.grad, r.linear1.weight.grad, **TOL)
        torch.testing.assert_close(o.attn_res.norm.weight.grad, r.norm1.weight.grad, **TOL)
    for o, r in zip(dec.layers, ref_dec.layers):
        torch.testing.assert_close(o.ffn.w2.weight.grad, r.linear2.weight.grad, **TOL)
        torch.testing.assert_close(o.self_attn.q_proj.weight.grad, r.self_attn.in_proj_weight.grad[:D], **TOL)
    if norm == "pre":
        torch.testing.assert_close(enc.final_norm.weight.grad, ref_enc.norm.weight.grad, **TOL)
        torch.testing.assert_close(dec.final_norm.weight.grad, ref_dec.norm.weight.grad, **TOL)


def test_post_and_pre_differ_only_in_norm_placement():
    """Same seed -> same parameter names and values except the Pre-LN final norms."""
    torch.manual_seed(0)
    post = Seq2Seq(cfg("post"))
    torch.manual_seed(0)
    pre = Seq2Seq(cfg("pre"))
    names_post = dict(post.named_parameters())
    names_pre = dict(pre.named_parameters())
    extra = set(names_pre) - set(names_post)
    assert extra == {
        "encoder.final_norm.weight",
        "encoder.final_norm.bias",
        "decoder.final_norm.weight",
        "decoder.final_norm.bias",
    }
    assert set(names_post) <= set(names_pre)
    for n, p in names_post.items():  # identical initial values: only the placement differs
        assert torch.equal(p, names_pre[n]), n
    src = torch.randint(5, 50, (2, 5))
    tgt = torch.randint(5, 50, (2, 4))
    post.eval()
    pre.eval()
    assert not torch.allclose(post(src, tgt), pre(src, tgt))


def test_xavier_init_matches_fairseq_formula():
    """fairseq (the paper's code) initializes W^Q, W^K, W^V Xavier-uniform with gain 1/sqrt(2), i.e.
    U(-a, a) with a = sqrt(6 / (d + d)) / sqrt(2) = sqrt(3 / (2d)); W^O, W1, W2 Xavier-uniform with
    gain 1; embeddings N(0, d^-1/2). Check bounds and standard deviations (std of U(-a, a) = a/sqrt(3))."""
    d, ffn = 256, 512
    torch.manual_seed(0)
    m = Seq2Seq(ModelConfig(d_model=d, n_heads=4, d_ffn=ffn, encoder_layers=2, decoder_layers=2, vocab_size=3000))
    qkv_bound = (6 / (2 * d)) ** 0.5 / 2**0.5
    layer = m.decoder.layers[1]
    for attn in (m.encoder.layers[0].self_attn, layer.self_attn, layer.cross_attn):
        for p in (attn.q_proj, attn.k_proj, attn.v_proj):
            w = p.weight
            assert w.abs().max() <= qkv_bound
            assert abs(w.std().item() - qkv_bound / 3**0.5) < 0.02 * qkv_bound
            assert torch.all(p.bias == 0)
        out_bound = (6 / (2 * d)) ** 0.5
        assert attn.out_proj.weight.abs().max() <= out_bound
        assert abs(attn.out_proj.weight.std().item() - out_bound / 3**0.5) < 0.02 * out_bound
    w1_bound = (6 / (d + ffn)) ** 0.5
    assert abs(layer.ffn.w1.weight.std().item() - w1_bound / 3**0.5) < 0.02 * w1_bound
    emb = m.embed_tokens.weight[1:]
    assert abs(emb.std().item() - d**-0.5) < 0.02 * d**-0.5
    assert torch.all(m.embed_tokens.weight[0] == 0)  # padding row
