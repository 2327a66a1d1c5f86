"""The causal language model task: the decoder-only model against a hand-written one in float64,
its KV cache, every placement, training with exact resume and telemetry, and `preln generate`
from the CLI and the API."""

import json
import math
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import preln
from preln import config
from preln.config import ModelConfig
from preln.fit import train
from preln.inference import load_run
from preln.model import CausalLM

from .conftest import ROOT, require_data

PLACEMENTS = ["post", "pre", "sandwich", "deepnorm", "admin", "rezero", "mix"]


def tiny(norm: str, **kw) -> ModelConfig:
    base = dict(task="causal", norm=norm, d_model=16, n_heads=2, d_ffn=24, encoder_layers=3, vocab_size=23)
    base |= dict(dropout=0.0, positions="learned", max_positions=32, embed_scale=False)
    return ModelConfig(**(base | kw))


def layer_norm(x, norm):
    return F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps)


def causal_attention(x, a, n_heads):
    """softmax(Q K^T / sqrt(d_h) + causal mask) V, written out head by head."""
    T, d = x.shape[1], x.shape[2]
    q, k, v = (x @ p.weight.T + p.bias for p in (a.q_proj, a.k_proj, a.v_proj))
    dh = d // n_heads
    heads = []
    for h in range(n_heads):
        qh, kh, vh = (m[..., h * dh : (h + 1) * dh] for m in (q, k, v))
        scores = qh @ kh.transpose(1, 2) / math.sqrt(dh)
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), -math.inf)
        heads.append(torch.softmax(scores, -1) @ vh)
    return torch.cat(heads, -1) @ a.out_proj.weight.T + a.out_proj.bias


def ffn(x, f):
    return F.gelu(x @ f.w1.weight.T + f.w1.bias) @ f.w2.weight.T + f.w2.bias


def reference_logits(model: CausalLM, ids: torch.Tensor, norm: str) -> torch.Tensor:
    """Decoder-only Transformer by hand: Pre-LN x = x + F(LN(x)) with a final LN (GPT-2), or
    Post-LN x = LN(x + F(x)); tied output projection."""
    c = model.config
    x = model.embed_tokens.weight[ids] + model.embed.positions.weight[: ids.shape[1]]
    for layer in model.decoder.layers:
        a, f, n1, n2 = layer.self_attn, layer.ffn, layer.attn_res.norm, layer.ffn_res.norm
        if norm == "pre":
            x = x + causal_attention(layer_norm(x, n1), a, c.n_heads)
            x = x + ffn(layer_norm(x, n2), f)
        else:
            x = layer_norm(x + causal_attention(x, a, c.n_heads), n1)
            x = layer_norm(x + ffn(x, f), n2)
    if norm == "pre":
        x = layer_norm(x, model.decoder.final_norm)
    return x @ model.embed_tokens.weight.T


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_causal_lm_matches_a_hand_written_decoder_only_transformer(norm):
    torch.manual_seed(0)
    model = CausalLM(tiny(norm, activation="gelu")).double().eval()
    with torch.no_grad():  # norms away from (1, 0), so that a misplaced one shows
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    ids = torch.randint(5, 23, (3, 9))
    ours = model(ids)
    assert ours.shape == (3, 9, 23)
    torch.testing.assert_close(ours, reference_logits(model, ids, norm), rtol=1e-10, atol=1e-10)
    # causal: changing a later token changes no earlier position's logits
    later = ids.clone()
    later[:, 5] = 7
    torch.testing.assert_close(model(later)[:, :5], ours[:, :5], rtol=0, atol=0)


@pytest.mark.parametrize("norm", PLACEMENTS)
def test_every_placement_decodes_the_same_with_and_without_the_cache(norm):
    torch.manual_seed(1)
    model = CausalLM(tiny(norm)).double().eval()
    ids = torch.randint(5, 23, (2, 10))
    full = model(ids)
    assert torch.isfinite(full).all()
    cache = model.new_cache()
    parts = [model(ids[:, :4], cache)] + [model(ids[:, t : t + 1], cache) for t in range(4, 7)]
    parts.append(model(ids[:, 7:], cache))  # a chunk after a cached prefix
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-10, atol=1e-10)


def causal_cfg(*sets):
    return config.load(ROOT / "configs" / "tiny-causal.toml", ["train.progress=false", *sets])


def rows(run, kind="train"):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r.get("kind") == kind]


def test_causal_lm_learns_context_with_telemetry(tmp_path):
    require_data("english-mix")
    res = train(causal_cfg("train.max_updates=300", "train.telemetry_every=100"), tmp_path / "a")
    assert res["status"] == "completed"
    unigram = rows(tmp_path / "a", "baseline")[0]["unigram_nll"]
    assert res["valid_nll"] < unigram - 0.5, (res["valid_nll"], unigram)  # below the unigram model: context
    assert math.isclose(res["valid_ppl"], math.exp(res["valid_nll"]), rel_tol=1e-9)
    telemetry = [json.loads(x) for x in (tmp_path / "a" / "telemetry.jsonl").read_text().splitlines()]
    assert [t["update"] for t in telemetry] == [100, 200, 300]
    assert "decoder" in json.dumps(telemetry[0])


def test_causal_lm_resumes_exactly(tmp_path):
    """Killed after update 20: the resumed run repeats the uninterrupted run's losses bitwise."""
    require_data("english-mix")
    sets = ["train.max_updates=40", "model.dropout=0.1", "train.keep_last=5"]
    train(causal_cfg(*sets), tmp_path / "a")
    train(causal_cfg(*sets, "train.save_every=20"), tmp_path / "b")
    ckpts = sorted(p for p in (tmp_path / "b" / "checkpoints").iterdir() if p.name.startswith("update_"))
    assert [c.name for c in ckpts] == ["update_0000020", "update_0000040"]
    shutil.rmtree(ckpts[-1])
    (tmp_path / "b" / "status.json").unlink()
    train(causal_cfg(*sets, "train.save_every=20"), tmp_path / "b")
    la, lb = [r["loss"] for r in rows(tmp_path / "a")], [r["loss"] for r in rows(tmp_path / "b")]
    assert len(lb) == 40 and la == lb


@pytest.fixture(scope="module")
def causal_run(tmp_path_factory):
    require_data("english-mix")
    out = tmp_path_factory.mktemp("causal") / "run"
    cmd = [sys.executable, "-m", "preln", "train", str(ROOT / "configs" / "tiny-causal.toml"), "--out", str(out)]
    sets = ["train.max_updates=30", "model.norm=post", "train.progress=false"]
    done = subprocess.run(cmd + [x for s in sets for x in ("--set", s)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def generate_cli(run, stdin: str, *flags) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "preln", "generate", str(run), "--max-new-tokens", "8", *flags]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=300)


def test_generate_from_the_cli_and_the_api(causal_run):
    greedy = generate_cli(causal_run, "the house\nshe said\n\n")
    assert greedy.returncode == 0, greedy.stderr
    lines = greedy.stdout.splitlines()
    assert len(lines) == 3 and lines[0].startswith("the house") and lines[1].startswith("she said")
    _, model, tok = load_run(causal_run)
    assert preln.generate(model, tok, ["the house", "she said", ""], max_new_tokens=8) == lines
    # sampling: line n draws from seed + n, so a line's continuation does not depend on the others
    both = preln.generate(model, tok, ["the house", "she said"], max_new_tokens=8, top_k=20, seed=5)
    alone = preln.generate(model, tok, ["she said"], max_new_tokens=8, top_k=20, seed=6)
    assert both[1] == alone[0]
    sampled = generate_cli(causal_run, "the house\nshe said\n", "--top-k", "20", "--seed", "5")
    assert sampled.stdout.splitlines() == both
    other = preln.generate(model, tok, ["the house"] * 4, max_new_tokens=8, top_k=20, seed=0)
    assert len(set(other)) > 1  # sampled, not argmax


def test_generate_and_predict_name_the_command_a_run_needs(causal_run, tmp_path):
    wrong = generate_cli(causal_run, "x\n", "--top-k", "0")
    assert wrong.returncode == 2 and "--top-k" in wrong.stderr and wrong.stderr.count("\n") == 1
    other = subprocess.run(
        [sys.executable, "-m", "preln", "predict", str(causal_run)], input="a <mask>\n", capture_output=True, text=True
    )
    assert other.returncode == 2 and "use preln generate" in other.stderr
    translate = [sys.executable, "-m", "preln", "translate", str(causal_run)]
    other = subprocess.run(translate, input="ein hund\n", capture_output=True, text=True, timeout=300)
    assert other.returncode == 2 and "use preln generate" in other.stderr
