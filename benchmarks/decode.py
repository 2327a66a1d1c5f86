"""Decoding speed: preln's greedy and beam search against Hugging Face ``generate`` on the same
weights (the run exported to ``FSMTForConditionalGeneration``) and against preln's beam search as
it was at an earlier commit (``--old COMMIT``, read from the git history), on the same batches.

    python benchmarks/decode.py --run RUN [--weak RUN] [--sentences 500] [--long 3] [--old 392e263]
                                [--limit 200] [--methods preln,old,hf] [--rounds 2] [--json OUT]
    python benchmarks/decode.py --tiny --json OUT        # a tiny Post-LN model trained here (CI)

Inputs: the run's test sources (Multi30k), and "long" inputs of ``--long`` test sentences joined
into one. Every method decodes the same token-budget batches (sorted by length, as ``preln
translate`` batches) with fairseq's length rule a = 0, b = ``--limit`` (at most that many tokens,
then </s>: ``max_new_tokens = limit + 1`` and ``forced_eos_token_id`` in Transformers), the same
banned tokens (<pad>, <s>, <mask>) and a minimum of one token. The methods take turns on every
batch, ``--rounds`` times, the order reversed from one batch to the next (the same decode ran
12-16 s minutes apart on a shared machine, so whole passes in turns left 20-30% between a
method's rounds); each method's fastest round counts. Reports sentences/s per method and the share of
outputs identical to preln's. FSMT computes Post-LN only: for another placement the
``hf`` rows are skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from preln import config
from preln.data.batching import pad, token_batches
from preln.data.datasets import read_pairs
from preln.data.tokenizer import EOS, PAD
from preln.decode import beam_search, greedy
from preln.inference import load_run

ROOT = Path(__file__).resolve().parents[1]


def old_decoder(commit: str):
    """preln's decode.py at ``commit``, as a module (None where the git history is not at hand)."""
    try:
        text = subprocess.run(
            ["git", "show", f"{commit}:src/preln/decode.py"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    spec = importlib.util.spec_from_loader("preln._decode_at_commit", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "preln"
    exec(compile(text, f"decode.py@{commit}", "exec"), module.__dict__)
    return module


def batches(model, tok, lines: list[str], beam: int, max_tokens: int = 4000) -> list[tuple[list[int], torch.Tensor]]:
    limit = model.config.max_positions - 1
    ids = [s[: limit - 1] + [EOS] for s in tok.encode(lines)]
    return [(b, pad([ids[i] for i in b], PAD)) for b in token_batches([(len(s),) for s in ids], max_tokens // beam)]


def hf_decode(hf, src: torch.Tensor, beam: int, limit: int) -> list[list[int]]:
    out = hf.generate(
        input_ids=src,
        attention_mask=(src != PAD).long(),
        num_beams=beam,
        do_sample=False,
        early_stopping=True,
        length_penalty=1.0,
        max_new_tokens=limit + 1,
        min_new_tokens=1,
        suppress_tokens=[0, 2, 4],
        forced_eos_token_id=EOS,
    )
    rows = []
    for row in out[:, 1:].tolist():
        rows.append(row[: row.index(EOS)] if EOS in row else [t for t in row if t != PAD])
    return rows


def timed_turns(impl: dict, work, rounds: int) -> tuple[dict[str, list[float]], dict[str, list]]:
    """Each method's seconds per round and its outputs. The methods take turns on every batch,
    their order reversed from one batch and round to the next, so a slow spell of the machine
    (the same decode measured 12-16 s minutes apart) falls on all of them alike; each first
    decodes the first batch untimed (allocation and thread start-up at new shapes)."""
    names = list(impl)
    times = {m: [0.0] * rounds for m in names}
    outs: dict[str, dict[int, list]] = {m: {} for m in names}
    with torch.no_grad():
        for name in names:
            impl[name](work[0][1])
        for r in range(rounds):
            for b, (idx, src) in enumerate(work):
                for name in names if (r + b) % 2 == 0 else names[::-1]:
                    t0 = time.perf_counter()
                    hyps = impl[name](src)
                    times[name][r] += time.perf_counter() - t0
                    outs[name].update(zip(idx, hyps))
    return times, {m: [o[i] for i in sorted(o)] for m, o in outs.items()}


def measure(
    label: str, model, tok, lines: list[str], limit: int, methods: list[str], old, hf, rounds: int
) -> list[dict]:
    rows = []
    for beam in (1, 5):
        work = batches(model, tok, lines, beam)
        impl = {
            "preln": lambda s, b=beam: (
                greedy(model, s, 0, limit) if b == 1 else beam_search(model, s, b, 1.0, 0, limit)
            ),
        }
        if old is not None and "old" in methods:
            impl["old"] = lambda s, b=beam: (
                old.greedy(model, s, 0, limit) if b == 1 else old.beam_search(model, s, b, 1.0, 0, limit)
            )
        if hf is not None and "hf" in methods:
            impl["hf"] = lambda s, b=beam: hf_decode(hf, s, b, limit)
        times, outs = timed_turns({m: f for m, f in impl.items() if m in methods}, work, rounds)
        ref = outs.get("preln")
        for name, out in outs.items():
            secs = min(times[name])
            same = None if ref is None else sum(a == b for a, b in zip(out, ref)) / len(out)
            row = {"inputs": label, "beam": beam, "method": name, "sentences": len(lines), "seconds": round(secs, 3)}
            row |= {"rounds_seconds": [round(t, 3) for t in times[name]]}
            row |= {"sentences_per_s": round(len(lines) / secs, 2), "identical_to_preln": same}
            row["mean_output_tokens"] = round(sum(map(len, out)) / len(out), 1)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def test_sources(cfg, n: int, long: int) -> tuple[list[str], list[str]]:
    src, _, _ = read_pairs(cfg, "test")
    joined = [" ".join(src[i : i + long]) for i in range(0, len(src) - long + 1, long)]
    return src[:n], joined[:n]


def tiny_run(folder: Path, updates: int) -> Path:
    from preln.fit import train

    sets = ["model.norm='post'", f"train.max_updates={updates}", "train.progress=false", "train.valid_bleu=false"]
    train(config.load(ROOT / "configs" / "tiny-translation.toml", sets), folder)
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help="a translation run folder (its last checkpoint)")
    p.add_argument("--weak", help="a barely trained run of the same kind: decodes to the length limit")
    p.add_argument("--tiny", action="store_true", help="train tiny Post-LN runs here instead (seconds)")
    p.add_argument("--sentences", type=int, default=500)
    p.add_argument("--long", type=int, default=3, help="test sentences joined into one long input")
    p.add_argument("--limit", type=int, default=200, help="fairseq's max-len-b (a = 0)")
    p.add_argument("--old", default="392e263", help="the commit whose decode.py is 'old'")
    p.add_argument("--methods", default="preln,old,hf")
    p.add_argument(
        "--rounds", type=int, default=2, help="passes over the batches (methods in turns per batch); the fastest counts"
    )
    p.add_argument("--json")
    args = p.parse_args()
    methods = args.methods.split(",")
    tmp = tempfile.TemporaryDirectory()
    runs = {}
    if args.tiny:
        runs["trained"] = tiny_run(Path(tmp.name) / "trained", 60)
        runs["weak"] = tiny_run(Path(tmp.name) / "weak", 2)
    else:
        runs = {k: Path(v) for k, v in (("trained", args.run), ("weak", args.weak)) if v}
    if not runs:
        p.error("give --run (and --weak), or --tiny")
    old = old_decoder(args.old) if "old" in methods else None
    rows = []
    for kind, run in runs.items():
        cfg, model, tok = load_run(run)
        model.eval()
        limit = min(args.limit, model.config.max_positions - 1)
        hf = None
        if "hf" in methods and cfg.model.norm == "post":
            from transformers.utils import logging as hf_logging

            from preln.export import to_hf

            hf_logging.set_verbosity_error()  # not a warning printed by every generate call
            hf = to_hf(model).eval()
        short, joined = test_sources(cfg, args.sentences, args.long)
        rows += measure(f"{kind}, test", model, tok, short, limit, methods, old, hf, args.rounds)
        rows += measure(f"{kind}, long x{args.long}", model, tok, joined, limit, methods, old, hf, args.rounds)
    res = {"threads": torch.get_num_threads(), "limit": args.limit, "old": args.old if old else None, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    sys.exit(main())
