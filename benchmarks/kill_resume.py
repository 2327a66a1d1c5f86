"""kill -9 a tiny training run at N random moments, resume each to its end, and compare every
resumed run's per-update losses with one uninterrupted run (bitwise, on CPU).

    python benchmarks/kill_resume.py [--kills 20] [--updates 60] [--seed 0] [--telemetry N] [--out DIR]

Checkpoints every 5 updates and a log line every update, so random moments fall before the first
checkpoint, inside checkpoint writes, between metric appends and during validation. Prints where
each kill landed (the last logged update) and N/N identical, or which differed; exit 1 on any
difference. With ``--telemetry N`` the runs also write ``telemetry.jsonl`` every N updates, and
its lines (their time stamps aside) must be identical too.
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


def command(out: Path, updates: int, telemetry: int = 0) -> list[str]:
    sets = [f"train.max_updates={updates}", "train.save_every=5", "train.log_every=1", "train.valid_every=10"]
    sets += ["train.progress=false", "train.valid_bleu=false", "train.threads=1", f"train.telemetry_every={telemetry}"]
    cmd = [sys.executable, "-m", "preln", "train", str(ROOT / "configs" / "tiny-translation.toml"), "--out", str(out)]
    return cmd + [x for s in sets for x in ("--set", s)]


def losses(out: Path) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [(r["update"], r["loss"]) for r in rows if r["kind"] == "train"]


def telemetry(out: Path) -> list[dict]:
    path = out / "telemetry.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


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
    ap.add_argument("--telemetry", type=int, default=0, metavar="N", help="train.telemetry_every (default 0: off)")
    ap.add_argument("--out", help="work folder (default: a temporary one, removed at the end)")
    args = ap.parse_args()
    work = Path(args.out or tempfile.mkdtemp(prefix="kill-resume-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    subprocess.run(command(work / "reference", args.updates, args.telemetry), check=True, capture_output=True)
    duration = time.time() - start
    reference, reference_tel = losses(work / "reference"), telemetry(work / "reference")
    rng = random.Random(args.seed)
    same = 0
    for i in range(args.kills):
        out = work / f"kill{i:02d}"
        cmd = command(out, args.updates, args.telemetry)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        at = rng.uniform(0.5, duration)
        time.sleep(at)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        landed = last_update(out) if (out / "metrics.jsonl").exists() else 0
        done = subprocess.run(cmd, capture_output=True, text=True)
        ok = done.returncode == 0 and losses(out) == reference and telemetry(out) == reference_tel
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
