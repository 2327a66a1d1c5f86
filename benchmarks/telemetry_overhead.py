"""Telemetry's cost: training tokens/s with ``train.telemetry_every = N`` against without, on the
CPU preset's model (Multi30k, d 128, 6+6 layers), runs alternated A B A B in one process so that
the machine's state is shared. Tokens/s counts the training steps only (validation excluded), and
the telemetry's work (hooks, norms, weight copies) happens inside them.

    python benchmarks/telemetry_overhead.py [--every 10] [--updates 60] [--pairs 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from preln import config
from preln.fit import train
from preln.runs import RunFolder

ROOT = Path(__file__).resolve().parents[1]


def tokens_per_s(run: Path, skip: int) -> float:
    rows = [r for r in RunFolder(run, writer=False).metrics() if r.get("kind") == "train" and r["update"] > skip]
    return sum(r["ntokens"] for r in rows) / sum(r["ntokens"] / r["tokens_per_s"] for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "cpu-multi30k-pre.toml"))
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--updates", type=int, default=60)
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    base = [f"train.max_updates={args.updates}", "train.log_every=10", "train.valid_every=0"]
    base += ["train.valid_bleu=false", "train.progress=false", f"train.save_every={args.updates}"]
    res: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.pairs):
            for name, every in (("off", 0), ("on", args.every)):
                run = Path(tmp) / f"{name}{i}"
                train(config.load(args.config, [*base, f"train.telemetry_every={every}"]), run)
                res[name].append(tokens_per_s(run, skip=10))  # the first 10 updates warm the allocator
    off, on = statistics.mean(res["off"]), statistics.mean(res["on"])
    out = {"every": args.every, "updates": args.updates, "tokens_per_s": res, "overhead": 1 - on / off}
    print(f"tokens/s without telemetry {off:.0f}, with telemetry every {args.every}: {on:.0f}")
    print(f"overhead: {100 * (1 - on / off):.1f}% of training time ({args.pairs} pairs, A B A B)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
