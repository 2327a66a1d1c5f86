"""Training throughput: preln's Seq2Seq vs torch.nn.Transformer, same configuration and batches.

    python benchmarks/throughput.py [--config configs/cpu-multi30k-pre.toml] [--updates 20] [--set k=v ...]
                                    [--device cuda] [--precision fp32|bf16] [--compile] [--json OUT]

Both models get the same token-budget batches of the config's corpus, the same shared embedding,
sinusoidal positions and tied output projection around the stacks, Adam, label-smoothed loss.
Prints target tokens/s for each and the ratio preln / torch (measured after 3 warm-up updates,
the models taking turns on every batch; on CUDA each update between two synchronizes), and the
achieved GFLOP/s: the timed updates' forward
and backward FLOPs (counted by torch's ``FlopCounterMode``: matmuls and attention) over their
time, with its share of this machine's matmul peak (measured in the same run, as
``bert_mlm.py`` does: fp32 1024^3 on a CPU, bf16 8192^3 on CUDA). ``--compile`` adds
torch.compile'd rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from collections.abc import Callable

import torch
from bert_mlm import matmul_peak  # the same peak as the BERT benchmark's
from torch import nn
from torch.nn.attention import sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from preln import config
from preln.losses import label_smoothed_nll
from preln.model import CUDA_SDPA_BACKENDS, Seq2Seq, sinusoidal_table
from preln.tasks import load_data


class TorchSeq2Seq(nn.Module):
    """torch.nn.Transformer with the same embedding/output wiring as preln's model."""

    def __init__(self, c: config.ModelConfig) -> None:
        super().__init__()
        pre = c.norm == "pre"
        self.embed = nn.Embedding(c.vocab_size, c.d_model, padding_idx=0)
        self.register_buffer("pos", sinusoidal_table(c.max_positions, c.d_model), persistent=False)
        norm = (lambda: nn.LayerNorm(c.d_model)) if pre else (lambda: None)
        enc_layer = nn.TransformerEncoderLayer(
            c.d_model, c.n_heads, c.d_ffn, c.dropout, batch_first=True, norm_first=pre
        )
        dec_layer = nn.TransformerDecoderLayer(
            c.d_model, c.n_heads, c.d_ffn, c.dropout, batch_first=True, norm_first=pre
        )
        self.encoder = nn.TransformerEncoder(enc_layer, c.encoder_layers, norm=norm(), enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(dec_layer, c.decoder_layers, norm=norm())
        self.scale = math.sqrt(c.d_model)

    def forward(self, src, tgt):
        def emb(x):
            return self.embed(x) * self.scale + self.pos[: x.shape[1]]

        causal = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1], device=tgt.device)
        memory = self.encoder(emb(src), src_key_padding_mask=src == 0)
        h = self.decoder(emb(tgt), memory, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=src == 0)
        return h @ self.embed.weight.T


def trainer(
    model: nn.Module, eps: float, device: torch.device, precision: str, kernels: str = "same"
) -> Callable[[object], float]:
    """One Adam update of ``model`` on a batch, as a function that returns its seconds (on CUDA
    between two synchronizes). ``kernels="same"``: on CUDA the attention kernels preln's model
    asks for (``CUDA_SDPA_BACKENDS``), so the two models are compared, not their kernel choice; torch
    on its own picks cuDNN's under bf16, which plans anew for every batch shape (~7x slower with
    token-budget batches on an H200)."""
    fused = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), **fused)
    model.train()

    def update(b) -> float:
        amp = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        same = kernels == "same" and device.type == "cuda"
        attention = sdpa_kernel(CUDA_SDPA_BACKENDS) if same else contextlib.nullcontext()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        t = b.to(device).tensors
        with amp, attention:  # the forward picks the kernels; its backward follows them
            loss, _ = label_smoothed_nll(model(t["src"], t["tgt_in"]), t["tgt_out"], eps)
        opt.zero_grad(set_to_none=True)
        (loss / b.ntokens).backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return update


def measure(updates: dict[str, Callable[[object], float]], batches, warmup: int = 3) -> dict[str, float]:
    """Target tokens/s of each model over ``batches[warmup:]``. The models take turns on every
    batch (in a rotating order), so a change in the machine's speed during the run (another
    process, frequency scaling) falls on all of them alike: timed one after the other, the same
    ratio measured 1.42, 2.46 and 1.92 within ten minutes on a shared 2-core machine."""
    for b in batches[:warmup]:
        for update in updates.values():
            update(b)
    seconds = dict.fromkeys(updates, 0.0)
    names = list(updates)
    for k, b in enumerate(batches[warmup:]):
        for name in names[k % len(names) :] + names[: k % len(names)]:
            seconds[name] += updates[name](b)
    tokens = sum(b.ntokens for b in batches[warmup:])
    return {name: tokens / s for name, s in seconds.items()}


def step_flops(model: nn.Module, batches, eps: float, device: torch.device) -> int:
    """Forward + backward FLOPs of one update on each of ``batches`` (the optimizer's are not
    counted: elementwise, a few per parameter)."""
    model.train()
    counter = FlopCounterMode(display=False)
    with counter:
        for b in batches:
            t = b.to(device).tensors
            loss, _ = label_smoothed_nll(model(t["src"], t["tgt_in"]), t["tgt_out"], eps)
            (loss / b.ntokens).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/cpu-multi30k-pre.toml")
    ap.add_argument("--updates", type=int, default=20, help="timed updates per model (default 20)")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast (CUDA)")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile'd models")
    ap.add_argument(
        "--kernels",
        choices=["same", "own"],
        default="same",
        help="CUDA attention kernels: preln's choice for both models (default) or each model's own",
    )
    ap.add_argument("--json", metavar="OUT", help="write the results as JSON")
    args = ap.parse_args()
    cfg = config.load(args.config, args.set)
    data, tok = load_data(cfg)
    c = config.with_vocab(cfg, len(tok)).model
    device = torch.device(args.device)
    batches = [data.batch("train", 1, k) for k in range(args.updates + 3)]
    peak = matmul_peak(device)
    print(f"{'matmul peak':>31}: {peak / 1e9:9.1f} GFLOP/s ({device}, {torch.get_num_threads()} threads)", flush=True)
    updates, flops = {}, {}
    for name, build in (("preln", lambda: Seq2Seq(c)), ("torch.nn.Transformer", lambda: TorchSeq2Seq(c))):
        for compiled in (False, True) if args.compile else (False,):
            torch.manual_seed(0)
            model = build().to(device)
            key = name + (" compiled" if compiled else "")
            flops[key] = step_flops(model, batches[3:], cfg.train.label_smoothing, device)
            model = torch.compile(model, dynamic=True) if compiled else model
            updates[key] = trainer(model, cfg.train.label_smoothing, device, args.precision, args.kernels)
    results = measure(updates, batches)
    tokens = sum(b.ntokens for b in batches[3:])
    gflops = {key: flops[key] / (tokens / results[key]) / 1e9 for key in results}  # FLOPs over the timed seconds
    for key in results:
        share = gflops[key] * 1e9 / peak
        print(f"{key:>31}: {results[key]:9.0f} target tokens/s, {gflops[key]:6.1f} GFLOP/s, {share:.1%} of peak")
    print(
        f"{'ratio preln / torch':>31}: {results['preln'] / results['torch.nn.Transformer']:.3f} "
        f"(norm={c.norm}, d={c.d_model}, {c.encoder_layers}+{c.decoder_layers} layers, {args.precision} on "
        f"{device}, {torch.get_num_threads()} threads, {args.updates} updates, "
        f"{sum(b.ntokens for b in batches[3:])} tokens)"
    )
    if args.json:
        meta = {"config": args.config, "set": args.set, "device": str(device), "precision": args.precision}
        meta["kernels"] = args.kernels
        with open(args.json, "w") as f:
            rows = {"tokens_per_s": results, "gflop_per_s": gflops, "peak_gflop_per_s": peak / 1e9}
            json.dump(meta | {"norm": c.norm, "d_model": c.d_model} | rows, f, indent=1)


if __name__ == "__main__":
    main()
