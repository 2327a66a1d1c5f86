"""kill -9 a tiny training run at N random moments, resume each to its end, and compare every
resumed run's per-update losses with one uninterrupted run (bitwise, on CPU).

    python benchmarks/kill_resume.py [--kills 20] [--updates 60] [--seed 0] [--out DIR]

Checkpoints every 5 updates and a log line every update, so random moments fall before the first
checkpoint, inside checkpoint writes, between metric appends and during validation. Prints where
each kill landed (the last logged update) and N/N identical, or which differed; exit 1 on any
difference.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def command(out: Path, updates: int) -> list[str]:
    sets = [f"train.max_updates={updates}", "train.save_every=5", "train.log_every=1", "train.valid_every=10"]
    sets += ["train.progress=false", "train.valid_bleu=false", "train.threads=1"]
    cmd = [sys.executable, "-m", "preln", "train", str(ROOT / "configs" / "tiny-translation.toml"), "--out", str(out)]
    return cmd + [x for s in sets for x in ("--set", s)]


def losses(out: Path) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [(r["update"], r["loss"]) for r in rows if r["kind"] == "train"]


def last_update(out: Path) -> int:
    try:
        return max((u for u, _ in losses(out)), default=0)
    except (OSError, ValueError):
        return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--updates", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="work folder (default: a temporary one, removed at the end)")
    args = ap.parse_args()
    work = Path(args.out or tempfile.mkdtemp(prefix="kill-resume-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    subprocess.run(command(work / "reference", args.updates), check=True, capture_output=True)
    duration = time.time() - start
    reference = losses(work / "reference")
    rng = random.Random(args.seed)
    same = 0
    for i in range(args.kills):
        out = work / f"kill{i:02d}"
        proc = subprocess.Popen(command(out, args.updates), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        at = rng.uniform(0.5, duration)
        time.sleep(at)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        landed = last_update(out) if (out / "metrics.jsonl").exists() else 0
        done = subprocess.run(command(out, args.updates), capture_output=True, text=True)
        ok = done.returncode == 0 and losses(out) == reference
        same += ok
        print(f"kill {i + 1:2d} at {at:5.2f} s (after update {landed:3d}): {'identical' if ok else 'DIFFERENT'}")
        if not ok:
            print(done.stderr[-1000:])
    print(f"{same}/{args.kills} resumed runs identical to the uninterrupted one ({args.updates} updates each)")
    if not args.out:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if same == args.kills else 1


if __name__ == "__main__":
    sys.exit(main())
