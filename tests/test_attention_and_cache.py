import math

import pytest
import torch

import preln.model as model_module
from preln.config import ModelConfig
from preln.errors import UsageError
from preln.model import Attention, MaskedLM, Seq2Seq, padding_mask, step_attention


def reference_attention(attn: Attention, x, mem, allowed):
    """Plain softmax(QK^T / sqrt(d_h)) V with -inf where not allowed; (B, T, d)."""
    B, T, d = x.shape
    H = attn.n_heads
    src = x if mem is None else mem

    def heads(t):
        return t.view(B, -1, H, d // H).transpose(1, 2)

    q, k, v = heads(attn.q_proj(x)), heads(attn.k_proj(src)), heads(attn.v_proj(src))
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // H)
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = torch.softmax(scores, -1) @ v
    return attn.out_proj(out.transpose(1, 2).reshape(B, T, d))


def test_attention_padding_and_causal_against_plain_softmax():
    torch.manual_seed(0)
    attn = Attention(12, 3).double()
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    ids = torch.tensor([[7, 7, 7, 7, 7], [7, 7, 7, 0, 0]])
    m = padding_mask(ids, 0)
    torch.testing.assert_close(attn(x, mask=m), reference_attention(attn, x, None, m), rtol=0, atol=1e-12)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    torch.testing.assert_close(attn(x, is_causal=True), reference_attention(attn, x, None, causal), rtol=0, atol=1e-12)
    mem = torch.randn(2, 4, 12, dtype=torch.float64)
    mm = padding_mask(torch.tensor([[5, 5, 5, 5], [5, 5, 0, 0]]), 0)
    torch.testing.assert_close(attn(x, mem, mask=mm), reference_attention(attn, x, mem, mm), rtol=0, atol=1e-12)


def test_step_attention_against_plain_softmax():
    """The decoding step's attention (grouped queries, a padding mask, keys that are views of
    larger buffers) equals the plain softmax in float64 and torch's fused kernel."""
    torch.manual_seed(0)
    q = torch.randn(3, 2, 5, 8, dtype=torch.float64)  # 3 memory rows, 5 queries each (a sentence's beams)
    buf = torch.randn(2, 3, 2, 16, 8, dtype=torch.float64)
    k, v = buf[0, :, :, :11], buf[1, :, :, :11]  # the filled prefix of a cache buffer
    allowed = torch.ones(3, 1, 1, 11, dtype=torch.bool)
    allowed[1, ..., 7:] = False
    scores = (q @ k.transpose(-1, -2) / math.sqrt(8)).masked_fill(~allowed, float("-inf"))
    expected = torch.softmax(scores, -1) @ v
    torch.testing.assert_close(step_attention(q, k, v, allowed), expected, rtol=0, atol=1e-12)
    unmasked = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), -1) @ v
    torch.testing.assert_close(step_attention(q, k, v, None), unmasked, rtol=0, atol=1e-12)
    fused = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    torch.testing.assert_close(step_attention(q, k, v, allowed), fused, rtol=0, atol=1e-12)


def test_decoding_steps_use_step_attention(monkeypatch):
    """A decoding step takes the step path on the CPU: self-attention's one new position against
    the cache, and cross-attention with a sentence's beams grouped against its memory row; training,
    a full sequence, a chunk of several tokens and greedy's one query row per memory row in
    cross-attention keep torch's kernel. The cross cache's keys and values are contiguous."""
    calls = []
    monkeypatch.setattr(model_module, "step_attention", lambda *a: calls.append(1) or step_attention(*a))
    torch.manual_seed(0)
    model = Seq2Seq(tiny("pre")).eval()
    L = model.config.decoder_layers
    src, tgt = torch.randint(5, 40, (2, 6)), torch.randint(5, 40, (6, 3))
    with torch.no_grad():
        memory, mask = model.encode(src)
        model(src, tgt[:2])
        cache = model.new_cache()
        model.decode(tgt[:2, :2], memory, mask, cache)
        assert calls == []
        model.decode(tgt[:2, 2:3], memory, mask, cache)  # greedy: self-attention only
        assert len(calls) == L
        cache = model.new_cache()
        model.decode(tgt[:, :1], memory, mask, cache)  # 3 beams per sentence
        model.decode(tgt[:, 1:2], memory, mask, cache)
    assert len(calls) == L + 4 * L
    # the memory's keys and values are laid out once for the products, not copied at every step
    assert all(layer["cross"][n].is_contiguous() for layer in cache for n in ("k", "v"))
    model.train()
    model(src, tgt[:2])
    assert len(calls) == 5 * L


def tiny(norm, **kw):
    return ModelConfig(
        norm=norm, d_model=16, n_heads=4, d_ffn=32, encoder_layers=2, decoder_layers=2, dropout=0.0, vocab_size=40, **kw
    )


@pytest.mark.parametrize("norm", ["post", "pre"])
@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_incremental_decoding_equals_full(norm, positions):
    torch.manual_seed(0)
    model = Seq2Seq(tiny(norm, positions=positions)).double().eval()
    src = torch.randint(5, 40, (3, 6))
    src[1, 4:] = 0
    tgt = torch.randint(5, 40, (3, 7))
    with torch.no_grad():
        full = model(src, tgt)  # (B, T, V)
        memory, mask = model.encode(src)
        cache = model.new_cache()
        steps = [model.decode(tgt[:, t : t + 1], memory, mask, cache) for t in range(7)]
        torch.testing.assert_close(torch.cat(steps, 1), full, rtol=0, atol=1e-10)
        # a cached prefix followed by a chunk of several tokens
        cache = model.new_cache()
        a = model.decode(tgt[:, :3], memory, mask, cache)
        b = model.decode(tgt[:, 3:], memory, mask, cache)
        torch.testing.assert_close(torch.cat([a, b], 1), full, rtol=0, atol=1e-10)


def test_reorder_cache_selects_rows():
    """As beam search uses it: K beams per sentence share the sentence's memory row; beams
    reordered within their sentence move the self-attention caches and leave the cross caches;
    a sentence that leaves takes its beams' rows and its memory row with it."""
    torch.manual_seed(0)
    model = Seq2Seq(tiny("pre")).double().eval()
    src = torch.randint(5, 40, (2, 4))  # 2 sentences, each with 2 beams
    tgt = torch.randint(5, 40, (4, 4))
    with torch.no_grad():
        memory, mask = model.encode(src)
        cache = model.new_cache()
        model.decode(tgt[:, :2], memory, mask, cache)
        cross = [{k: v.clone() for k, v in layer["cross"].items()} for layer in cache]
        idx = torch.tensor([1, 1, 3, 2])
        model.reorder_cache(cache, idx)
        step = model.decode(tgt[idx, 2:3], memory, mask, cache)
        full = model(src.repeat_interleave(2, 0), tgt[idx])
        torch.testing.assert_close(step[:, 0], full[:, 2], rtol=0, atol=1e-10)
        for before, layer in zip(cross, cache):
            assert all(torch.equal(before[k], layer["cross"][k]) for k in before)
        # sentence 0 is done: its beams' rows (0, 1) and its memory row leave
        left = torch.tensor([1])
        model.reorder_cache(cache, torch.tensor([2, 3]), left)
        step = model.decode(tgt[idx][2:, 3:], memory[left], mask[left], cache)
        torch.testing.assert_close(step[:, 0], full[2:, 3], rtol=0, atol=1e-10)


def test_a_sentences_beams_attend_to_its_one_memory_row():
    """Memory with one row per sentence and G query rows per sentence gives what the memory
    repeated G times gives: in one pass, with the cache, and a row count that does not divide is
    a one-line error."""
    torch.manual_seed(1)
    model = Seq2Seq(tiny("post")).double().eval()
    src = torch.randint(5, 40, (2, 6))
    src[1, 4:] = 0  # padding: the memory mask goes with its row
    tgt = torch.randint(5, 40, (6, 5))  # 3 beams each
    with torch.no_grad():
        memory, mask = model.encode(src)
        repeated = model.decode(tgt, memory.repeat_interleave(3, 0), mask.repeat_interleave(3, 0))
        torch.testing.assert_close(model.decode(tgt, memory, mask), repeated, rtol=0, atol=1e-10)
        cache = model.new_cache()
        steps = [model.decode(tgt[:, t : t + 1], memory, mask, cache) for t in range(5)]
        torch.testing.assert_close(torch.cat(steps, 1), repeated, rtol=0, atol=1e-10)
        with pytest.raises(UsageError, match="cannot share 4 memory rows"):
            model.decode(tgt, torch.cat([memory, memory]), torch.cat([mask, mask]))


def test_tied_embeddings_and_pad_row():
    model = Seq2Seq(tiny("post"))
    assert model.src_embed.tokens.weight is model.tgt_embed.tokens.weight is model.embed_tokens.weight
    assert torch.all(model.embed_tokens.weight[0] == 0)


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_masked_lm_heads_shapes_and_padding_invariance(norm):
    torch.manual_seed(0)
    c = tiny(norm, embed_layernorm=True, positions="learned", init="bert", num_classes=3)
    model = MaskedLM(c).double().eval()
    assert (model.encoder.final_norm is not None) == (norm == "pre")
    ids = torch.randint(5, 40, (2, 6))
    h = model(ids)
    pos = torch.zeros(2, 6, dtype=torch.bool)
    pos[0, 1] = pos[1, 3] = True
    assert model.mlm_logits(h, pos).shape == (2, 40)
    assert model.classify(h).shape == (2, 3)
    padded = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], 1)
    torch.testing.assert_close(model(padded)[:, :6], h, rtol=0, atol=1e-10)  # padding changes nothing


def test_max_positions_error():
    model = Seq2Seq(tiny("pre", max_positions=8))
    with pytest.raises(ValueError, match="max_positions"):
        model(torch.ones(1, 9, dtype=torch.long), torch.ones(1, 2, dtype=torch.long))
