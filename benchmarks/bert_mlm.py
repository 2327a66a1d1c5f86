"""BERT-base masked-LM training step: preln Post/Pre-LN vs Hugging Face ``BertForMaskedLM``, eager
and ``torch.compile``, in one run, with tokens/s and MFU against a matmul peak measured here.

    python benchmarks/bert_mlm.py [--batch 256] [--seq 128] [--steps 20] [--json OUT.json]
                                  [--models preln-post,preln-pre,hf] [--no-compile] [--tiny]

Random token ids (uniform over the vocabulary; throughput does not depend on the text), 15% of
positions masked as the MLM targets, bf16 autocast on CUDA (fp32 on CPU), AdamW (fused on CUDA).
MFU counts 6 x (parameters outside the embeddings and the output layer) x tokens, plus the
attention matmuls 12 x layers x seq x d per token (forward and backward), over the measured peak
of a bf16 8192^3 matmul (CPU: fp32 2048^3). preln computes MLM logits only at the masked
positions; HF computes them at every position (its design); both are counted with the same FLOPs.
``--tiny`` shrinks everything to seconds on a CPU (the test of this script).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from preln.config import ModelConfig
from preln.losses import label_smoothed_nll
from preln.model import MaskedLM


def matmul_peak(device: torch.device) -> float:
    """FLOP/s of a large square matmul (bf16 on CUDA, fp32 on CPU): the best of 5 rounds of 10
    after 3 warm-ups (one round's mean moved between 106 and 179 GFLOP/s within an hour on a
    shared 2-core machine; the machine's capability is its best round)."""
    n, dt = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dt), torch.randn(n, n, device=device, dtype=dt)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(5):
        sync(device)
        t = time.perf_counter()
        for _ in range(10):
            a @ b
        sync(device)
        best = max(best, 10 * 2 * n**3 / (time.perf_counter() - t))
    return best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def preln_model(c: ModelConfig):
    m = MaskedLM(c)

    def loss(ids, mask, targets):
        logits = m(ids, mlm_positions=mask)  # (N, V) at the masked positions only
        return label_smoothed_nll(logits, targets[mask], 0.0)[0] / mask.sum()

    return m, loss


def hf_model(c: ModelConfig):
    from transformers import BertConfig, BertForMaskedLM

    hc = BertConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.d_model,
        num_hidden_layers=c.encoder_layers,
        num_attention_heads=c.n_heads,
        intermediate_size=c.d_ffn,
        max_position_embeddings=c.max_positions,
        hidden_dropout_prob=c.dropout,
        attention_probs_dropout_prob=c.attention_dropout,
        attn_implementation="sdpa",
    )
    m = BertForMaskedLM(hc)

    def loss(ids, mask, targets):
        labels = torch.where(mask, targets, torch.full_like(targets, -100))
        return m(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss

    return m, loss


def flops_per_token(c: ModelConfig, model: nn.Module, seq: int) -> float:
    skip = ("embed", "embeddings", "lm_", "cls.predictions", "pooler", "classifier", "decoder")
    n = sum(p.numel() for name, p in model.named_parameters() if not any(s in name for s in skip))
    return 6 * n + 12 * c.encoder_layers * seq * c.d_model


def measure(name, build, c, args, device, compiled: bool) -> dict:
    torch.manual_seed(0)
    model, loss_fn = build(c)
    model.to(device).train()
    fused = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **fused)
    step_loss = torch.compile(loss_fn) if compiled else loss_fn
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, c.vocab_size, (args.batch, args.seq), generator=g)
    mask = torch.rand(args.batch, args.seq, generator=g) < 0.15
    ids, mask = ids.to(device), mask.to(device)
    targets = ids.clone()
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )
    times = []
    for i in range(args.warmup + args.steps):
        sync(device)
        t = time.perf_counter()
        with amp:
            loss = step_loss(ids, mask, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    tok_s = args.batch * args.seq * len(times) / sum(times)
    fpt = flops_per_token(c, model, args.seq)
    return {
        "model": name,
        "compiled": compiled,
        "tokens_per_s": tok_s,
        "flops_per_token": fpt,
        "loss": float(loss.detach()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--models", default="preln-pre,hf,preln-post")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="a seconds-long run on the CPU (tests)")
    ap.add_argument("--device", help="cuda or cpu (default: cuda where there is one; cpu with --tiny)")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu"))
    size = dict(d_model=768, n_heads=12, d_ffn=3072, encoder_layers=12, vocab_size=30522)
    if args.tiny:
        size = dict(d_model=32, n_heads=2, d_ffn=64, encoder_layers=2, vocab_size=500)
        args.batch, args.seq, args.steps, args.warmup = 4, 16, 2, 1
    base = dict(task="mlm", dropout=0.1, attention_dropout=0.1, activation="gelu", positions="learned")
    base |= dict(max_positions=512, embed_layernorm=True, embed_scale=False, init="bert")
    peak = matmul_peak(device)
    print(f"device {device}, measured matmul peak {peak / 1e12:.1f} TFLOP/s", flush=True)
    rows = []
    builders = {
        "preln-post": (lambda c: preln_model(c), "post"),
        "preln-pre": (lambda c: preln_model(c), "pre"),
        "hf": (lambda c: hf_model(c), "post"),
    }
    for name in args.models.split(","):
        build, norm = builders[name]
        c = ModelConfig(norm=norm, **base, **size)
        for compiled in (False,) if args.no_compile else (False, True):
            try:
                r = measure(name, build, c, args, device, compiled)
            except Exception as e:  # a model that fails to build or compile is reported, not fatal
                r = {"model": name, "compiled": compiled, "error": f"{type(e).__name__}: {e}"[:300]}
            if "tokens_per_s" in r:
                r["mfu"] = r["tokens_per_s"] * r["flops_per_token"] / peak
                print(
                    f"{name:>11} {'compiled' if compiled else 'eager':>8}: {r['tokens_per_s']:10.0f} tokens/s, "
                    f"MFU {r['mfu']:.1%}",
                    flush=True,
                )
            else:
                print(f"{name:>11} {'compiled' if compiled else 'eager':>8}: {r['error']}", flush=True)
            rows.append(r)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            out = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "peak_flops": peak}
            out |= {"batch": args.batch, "seq": args.seq, "steps": args.steps, "torch": torch.__version__}
            if args.json:  # after every row: a benchmark cut short by a time limit keeps what it measured
                with open(args.json, "w") as f:
                    json.dump(out | {"rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
