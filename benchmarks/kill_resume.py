"""kill -9 a command at N random moments, rerun it to its end, and compare each outcome with one
uninterrupted run of the same command (bitwise on CPU; time stamps and durations aside).

    python benchmarks/kill_resume.py [--command train|finetune|evaluate|export|reproduce]
                                     [--kills 20] [--seed 0] [--telemetry N] [--out DIR]

The whole process group is killed (a reproduce's children too, as a crash would). What is compared:
- train: a tiny translation run (60 updates, a checkpoint every 5, a log line every update):
  every per-update loss (and, with ``--telemetry N``, every telemetry line);
- finetune: a tiny pretrained masked LM fine-tuned on pairclf paraphrase (60 updates): the losses
  and ``scores.json``;
- evaluate: BLEU of a tiny translation run (beam 2, 500 sentences a split): ``bleu.json`` and the
  hypothesis files;
- export: the tiny masked LM written as a Transformers folder: every file's bytes, and nothing else
  beside the folder;
- reproduce: a study of 4 tiny runs (train, then test BLEU), 2 at a time: every run's losses, its
  BLEU and ``claims.json``'s claims.
Prints where each kill landed and N/N identical, or which differed; exit 1 on any difference.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["train.progress=false", "train.threads=1"]


def preln(*args: str, sets: list[str] = ()) -> list[str]:
    return [sys.executable, "-m", "preln", *args, *[x for s in sets for x in ("--set", s)]]


def jsonl(path: Path) -> list[dict]:
    try:
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    except (OSError, ValueError):
        return []
    return [{k: v for k, v in r.items() if k not in ("time", "tokens_per_s")} for r in rows]


def losses(out: Path) -> list[tuple[int, float]]:
    return [(r["update"], r["loss"]) for r in jsonl(out / "metrics.jsonl") if r.get("kind") == "train"]


def last_logged(run: Path) -> str:
    done = losses(run)
    return f"after update {done[-1][0] if done else 0:3d}"


def digests(folder: Path) -> dict[str, str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


class Case:
    """One command: ``prepare`` (once), its argv for a trial folder, what its outcome is."""

    def __init__(self, work: Path, telemetry: int = 0) -> None:
        self.work, self.telemetry = work, telemetry

    def prepare(self) -> None:
        pass

    def trial(self, folder: Path) -> list[str]:
        raise NotImplementedError

    def outcome(self, folder: Path) -> object:
        raise NotImplementedError

    def progress(self, folder: Path) -> str:
        return ""

    def pretrained(self) -> Path:
        """A tiny masked LM (6 updates), shared by finetune and export."""
        pre = self.work / "pretrained"
        sets = ["train.max_updates=6", *QUIET]
        cmd = preln("train", str(ROOT / "configs/tiny-mlm.toml"), "--out", str(pre), sets=sets)
        subprocess.run(cmd, check=True, capture_output=True)
        return pre

    def translation(self) -> Path:
        run = self.work / "translation"
        sets = ["train.max_updates=40", "train.valid_bleu=false", *QUIET]
        cfg = str(ROOT / "configs/tiny-translation.toml")
        subprocess.run(preln("train", cfg, "--out", str(run), sets=sets), check=True, capture_output=True)
        return run


class Train(Case):
    def trial(self, folder: Path) -> list[str]:
        sets = ["train.max_updates=60", "train.save_every=5", "train.log_every=1", "train.valid_every=10"]
        sets += ["train.valid_bleu=false", f"train.telemetry_every={self.telemetry}", *QUIET]
        return preln("train", str(ROOT / "configs/tiny-translation.toml"), "--out", str(folder / "run"), sets=sets)

    def outcome(self, folder: Path) -> object:
        return losses(folder / "run"), jsonl(folder / "run" / "telemetry.jsonl")

    def progress(self, folder: Path) -> str:
        return last_logged(folder / "run")


class Finetune(Case):
    def prepare(self) -> None:
        self.pre = self.pretrained()

    def trial(self, folder: Path) -> list[str]:
        sets = ["train.max_updates=60", "train.save_every=5", "train.log_every=1", *QUIET]
        return preln("finetune", str(self.pre), "--task", "paraphrase", "--out", str(folder / "ft"), sets=sets)

    def outcome(self, folder: Path) -> object:
        scores = folder / "ft" / "scores.json"
        return losses(folder / "ft"), json.loads(scores.read_text()) if scores.is_file() else None

    def progress(self, folder: Path) -> str:
        return last_logged(folder / "ft")


class Evaluate(Case):
    def prepare(self) -> None:
        self.run = self.translation()

    def trial(self, folder: Path) -> list[str]:
        if not (folder / "run").exists():
            shutil.copytree(self.run, folder / "run")
        return preln("evaluate", str(folder / "run"), "--beam", "2", "--limit", "500")

    def outcome(self, folder: Path) -> object:
        path = folder / "run" / "bleu.json"
        bleu = json.loads(path.read_text()) if path.is_file() else None
        for split in (bleu or {}).get("splits", {}).values():
            split.pop("seconds", None)
        hyps = {p.name: p.read_text() for p in sorted((folder / "run").glob("hyp.*"))}
        return bleu, hyps

    def progress(self, folder: Path) -> str:
        return "bleu.json written" if (folder / "run" / "bleu.json").is_file() else "no bleu.json yet"


class Export(Case):
    def prepare(self) -> None:
        self.pre = self.pretrained()

    def trial(self, folder: Path) -> list[str]:
        folder.mkdir(parents=True, exist_ok=True)
        return preln("export", str(self.pre), str(folder / "hf"))

    def outcome(self, folder: Path) -> object:
        return sorted(p.name for p in folder.iterdir()), digests(folder / "hf")

    def progress(self, folder: Path) -> str:
        return f"beside it: {sorted(p.name for p in folder.iterdir())}"


STUDY = """
title = "kill -9 and rerun"
[preset.smoke]
config = "configs/tiny-translation.toml"
seeds = [1, 2]
set = ["train.max_updates=16", "train.valid_every=4", "train.save_every=4", "train.valid_bleu=false"]
evaluate = ["--max-len-a", "1.2", "--max-len-b", "10", "--limit", "100"]

[[condition]]
name = "pre"

[[condition]]
name = "post"
set = ["model.norm='post'"]

[[claim]]
text = "Pre-LN reaches a lower validation loss than Post-LN"
paper = "-"
condition = "pre"
better_than = "post"
metric = "final_nll"
"""


class Reproduce(Case):
    """A study of 4 tiny runs (train, then test BLEU), 2 at a time, and its report."""

    def prepare(self) -> None:
        self.study = self.work / "kill.toml"
        self.study.write_text(STUDY)

    def trial(self, folder: Path) -> list[str]:
        args = ["--preset", "smoke", "--studies", str(self.study), "--jobs", "2", "--out", str(folder / "runs")]
        return preln("reproduce", *args, "--root", str(ROOT))

    def outcome(self, folder: Path) -> object:
        runs = folder / "runs"
        per_run = {p.parent.relative_to(runs).as_posix(): losses(p.parent) for p in sorted(runs.rglob("metrics.jsonl"))}
        bleu = {}
        for p in sorted(runs.rglob("bleu.json")):
            splits = json.loads(p.read_text())["splits"]
            bleu[p.parent.name] = {s: r["tok_lc"] for s, r in splits.items()}
        claims = runs / "claims.json"
        verdicts = json.loads(claims.read_text())["claims"] if claims.is_file() else None
        return per_run, bleu, verdicts

    def progress(self, folder: Path) -> str:
        runs = folder / "runs"
        done = sum(1 for p in runs.rglob("status.json") if '"completed"' in p.read_text()) if runs.is_dir() else 0
        return f"{done} runs trained"


CASES = {"train": Train, "finetune": Finetune, "evaluate": Evaluate, "export": Export, "reproduce": Reproduce}


def kill_at(cmd: list[str], seconds: float) -> None:
    """Start ``cmd`` in a process group of its own and SIGKILL the whole group after ``seconds``."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--command", choices=sorted(CASES), default="train")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--telemetry", type=int, default=0, metavar="N", help="train: train.telemetry_every (default 0)")
    ap.add_argument("--updates", type=int, help=argparse.SUPPRESS)  # kept for old invocations: train uses 60
    ap.add_argument("--out", help="work folder (default: a temporary one, removed at the end)")
    args = ap.parse_args()
    work = Path(args.out or tempfile.mkdtemp(prefix=f"kill-{args.command}-"))
    work.mkdir(parents=True, exist_ok=True)
    case = CASES[args.command](work, args.telemetry)
    case.prepare()
    start = time.time()
    subprocess.run(case.trial(work / "reference"), check=True, capture_output=True)
    duration = time.time() - start
    reference = case.outcome(work / "reference")
    rng = random.Random(args.seed)
    same = 0
    for i in range(args.kills):
        folder = work / f"kill{i:02d}"
        at = rng.uniform(0.3, duration)
        kill_at(case.trial(folder), at)
        landed = case.progress(folder)
        done = subprocess.run(case.trial(folder), capture_output=True, text=True)
        ok = done.returncode == 0 and case.outcome(folder) == reference
        same += ok
        print(f"kill {i + 1:2d} at {at:5.2f} s of {duration:.1f} ({landed}): {'identical' if ok else 'DIFFERENT'}")
        if not ok:
            print(done.stderr[-1500:])
    print(f"{args.command}: {same}/{args.kills} reruns after kill -9 identical to the uninterrupted run")
    if not args.out:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if same == args.kills else 1


if __name__ == "__main__":
    sys.exit(main())
