"""Data at the paper's scale: tokenization, the token-id cache's build, and a run's start.

Generates corpora of the paper's sizes on local disk from the shipped data (sentence pairs of the
De-En corpus sampled with replacement, half of them joined in twos: ``--pairs`` translation
pairs, WMT14 En-De has 4.5M; English lines sampled and cut into segments of 4-40 words:
``--segments`` masked-LM segments), then measures for each:

- SentencePiece's own encode throughput on a sample with 1..N threads (the limit: lines/s per core);
- the cache build (``preln train`` reads, learns the vocabulary, encodes and caches): wall
  time, lines/s per core, peak RSS;
- a run's start from the built cache: time to the first update (process start to the end of
  update 1) and peak RSS, against an *empty run* (the same model on a 1,000-line corpus);
- the same start under ``torchrun --nproc_per_node 2``: each rank's peak RSS.

    python benchmarks/data_scale.py --out /tmp/scale --pairs 4500000 --segments 50000000 --json scale.json
    python benchmarks/data_scale.py --out /tmp/scale --pairs 20000 --segments 40000   # minutes

Targets on 2 cores: first update from the cache <= 10 s; RSS growth over the empty run <= 500 MB.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from preln.data.corpus import data_root  # noqa: E402

MODEL = ["model.d_model=32", "model.n_heads=2", "model.d_ffn=64", "model.dropout=0.0"]
RUN = ["train.max_updates=1", "train.log_every=1", "train.valid_every=0", "train.save_every=0", "train.progress=false"]
RUN += ["train.valid_bleu=false"]
# host-side costs (reading, caching, RSS) on the CPU on any machine: a GPU would add its context to
# every RSS, and two torchrun ranks need two GPUs
RUN += ["train.device='cpu'"]


def generate_pairs(out: Path, n: int, seed: int = 0) -> Path:
    """``n`` training pairs (and 3,000 valid) as ``train.de/.en``, ``valid.de/.en``."""
    rows = [ln.split("\t") for ln in gzip.open(data_root() / "debdocs-de-en" / "train.tsv.gz", "rt")]
    pairs = [(r[-2].strip(), r[-1].strip()) for r in rows if len(r) >= 2 and r[-2].strip() and r[-1].strip()]
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n), ("valid", 3000)):
        with open(out / f"{split}.de", "w") as de, open(out / f"{split}.en", "w") as en:
            for _ in range(count):
                picked = [rng.choice(pairs) for _ in range(rng.choice((1, 2)))]
                de.write(" ".join(p[0] for p in picked) + "\n")
                en.write(" ".join(p[1] for p in picked) + "\n")
    return out


def generate_segments(out: Path, n: int, seed: int = 0) -> Path:
    """``n`` English segments of 4-40 words, cut from lines sampled with replacement."""
    words = [ln.split() for ln in gzip.open(data_root() / "english-mix" / "mlm_mix.txt.gz", "rt")]
    words = [w for w in words if len(w) >= 4]
    rng = random.Random(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        for _ in range(n):
            line = rng.choice(words)
            k = rng.randint(4, min(40, len(line)))
            start = rng.randint(0, len(line) - k)
            f.write(" ".join(line[start : start + k]) + "\n")
    return out


def head(path: Path, lines: int, out: Path) -> Path:
    with open(path) as src, open(out, "w") as dst:
        for _, line in zip(range(lines), src):
            dst.write(line)
    return out


def spm_rate(model: Path, lines: list[str], threads: int) -> float:
    """SentencePiece's encode throughput (lines/s) over ``lines`` with ``threads`` threads."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model))
    start = time.perf_counter()
    for i in range(0, len(lines), 20_000):
        sp.encode(lines[i : i + 20_000], num_threads=threads)
    return len(lines) / (time.perf_counter() - start)


def watch(cmd: list[str], env: dict) -> dict:
    """Run ``cmd``; wall time and the peak RSS (VmHWM, MB) of every process in its tree."""
    start, launched = time.perf_counter(), time.time()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks: dict[int, float] = {}
    stop = threading.Event()

    def sample():
        while not stop.wait(0.1):
            for pid in tree(proc.pid):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                hwm = [ln for ln in status.splitlines() if ln.startswith("VmHWM:")]
                if hwm and "python" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    peaks[pid] = max(peaks.get(pid, 0.0), int(hwm[0].split()[1]) / 1024)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    output = proc.communicate()[0]
    stop.set()
    thread.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed:\n{output[-3000:]}")
    return {"wall_s": time.perf_counter() - start, "launched": launched, "peak_rss_mb": peaks, "output": output}


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            pass
    return out


def train(config: str, sets: list[str], folder: Path, env: dict, nproc: int = 1) -> dict:
    """One ``preln train`` of one update: wall time (launch to exit), time from launch to the end of
    update 1 (its ``time`` in metrics.jsonl), peak RSS per process."""
    args = ["train", config, "--out", str(folder), *[x for s in [*MODEL, *RUN, *sets] for x in ("--set", s)]]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    got = watch([*(launcher if nproc > 1 else [sys.executable]), "-m", "preln", *args], env)
    first = json.loads((folder / "metrics.jsonl").read_text().splitlines()[0])
    return got | {"first_update_s": first["time"] - got["launched"]}


def measure(name: str, config: str, data: list[str], small: list[str], out: Path, args) -> dict:
    """Build the cache, then start from it, against an empty run; ``data``/``small`` set the corpus."""
    env = {**os.environ, "PRELN_CACHE": str(out / "cache"), "OMP_NUM_THREADS": "1"}
    runs = out / "runs"
    build = train(config, data, runs / f"{name}-build", env)
    lines = args.pairs * 2 if name == "translation" else args.segments
    row = {"lines": lines, "build_s": build["wall_s"], "build_peak_rss_mb": max(build["peak_rss_mb"].values())}
    row["build_lines_per_s_per_core"] = lines / build["wall_s"] / os.cpu_count()
    train(config, small, runs / f"{name}-empty-warm", env)  # the small corpus's cache, built once
    empty = train(config, small, runs / f"{name}-empty", env)
    start = train(config, data, runs / f"{name}-start", env)
    row |= {"first_update_s": start["first_update_s"], "empty_first_update_s": empty["first_update_s"]}
    row["peak_rss_mb"], row["empty_peak_rss_mb"] = (
        max(start["peak_rss_mb"].values()),
        max(empty["peak_rss_mb"].values()),
    )
    row["rss_growth_mb"] = row["peak_rss_mb"] - row["empty_peak_rss_mb"]
    if args.nproc > 1:
        ranks = train(config, data, runs / f"{name}-ranks", env, args.nproc)
        row["rank_peak_rss_mb"] = sorted(ranks["peak_rss_mb"].values())[-args.nproc :]
        row["ranks_first_update_s"] = ranks["first_update_s"]
    spm_model = next((out / "cache").glob("spm-*.model"))
    sample = [ln.rstrip("\n") for _, ln in zip(range(200_000), open(args.sample[name]))]
    row["spm_lines_per_s"] = {t: spm_rate(spm_model, sample, t) for t in range(1, os.cpu_count() + 1)}
    row["targets"] = {
        "first_update_le_10s": row["first_update_s"] <= 10,
        "rss_growth_le_500mb": row["rss_growth_mb"] <= 500,
    }
    print(json.dumps({name: row}, indent=1), flush=True)
    return row


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the corpora, the cache and the runs")
    p.add_argument("--pairs", type=int, default=4_500_000, help="translation pairs (WMT14 En-De: 4.5M)")
    p.add_argument("--segments", type=int, default=50_000_000, help="masked-LM segments")
    p.add_argument("--nproc", type=int, default=2, help="ranks of the torchrun start (1: none)")
    p.add_argument("--only", choices=["translation", "mlm"], help="measure one corpus kind")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    out, res = args.out, {}
    pairs, text = out / "pairs", out / "segments.txt"
    args.sample = {"translation": pairs / "train.en", "mlm": text}
    if args.only in (None, "translation"):
        if not (pairs / "valid.en").is_file():
            t = time.perf_counter()
            generate_pairs(pairs, args.pairs)
            print(f"generated {args.pairs:,} pairs in {time.perf_counter() - t:.0f} s", flush=True)
        small = out / "pairs-small"
        small.mkdir(exist_ok=True)
        for f in ("train.de", "train.en", "valid.de", "valid.en"):
            head(pairs / f, 1000, small / f)
        corpus = ["data.corpus='parallel'", "data.src_lang='de'", "data.tgt_lang='en'", "data.vocab_size=1000"]
        corpus += ["data.max_train_examples=0", "data.max_valid_examples=0", "data.max_len=256", "data.max_tokens=4096"]
        res["translation"] = measure(
            "translation",
            "configs/tiny-translation.toml",
            [*corpus, f"data.path='{pairs}'"],
            [*corpus, f"data.path='{small}'"],
            out,
            args,
        )
    if args.only in (None, "mlm"):
        if not text.is_file():
            t = time.perf_counter()
            generate_segments(text, args.segments)
            print(f"generated {args.segments:,} segments in {time.perf_counter() - t:.0f} s", flush=True)
        corpus = ["data.max_train_examples=0", "data.max_valid_examples=0", "data.valid_fraction=0.001"]
        corpus += ["data.vocab_size=1000", "data.max_tokens=4096"]
        small = head(text, 1000, out / "segments-small.txt")
        res["mlm"] = measure(
            "mlm",
            "configs/tiny-mlm.toml",
            [*corpus, f"data.path='{text}'"],
            [*corpus, f"data.path='{small}'", "data.valid_fraction=0.1"],
            out,
            args,
        )
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
