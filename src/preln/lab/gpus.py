"""Several runs per GPU (``preln reproduce --gpus 0 --jobs-per-gpu N``): small models leave most of
an H100/H200 idle. Before a grid starts, its largest run's memory is estimated from its config and
an N that cannot fit in a GPU's free memory is refused, saying how many would.

The estimate (not a measurement): fp32 weights, gradients and Adam's two moments (16 bytes a
parameter), the activations of one batch (``data.max_tokens`` tokens x layers x (12 d + 2 d_ffn)
values in fp32), the logits and their gradient (3 x tokens x vocabulary in fp32) and 1 GiB of CUDA
context per process; plus 10% headroom. It errs high for bf16 and flash attention.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable

import torch

from .. import config, tasks
from ..config import ConfigError, RunConfig
from ..tasks import build_model

GIB = 1024**3


def run_bytes(cfg: RunConfig) -> int:
    """Estimated peak GPU memory of one training process of ``cfg``, in bytes."""
    m, d = cfg.model, cfg.data
    vocab = m.vocab_size or d.vocab_size
    with torch.device("meta"):
        params = sum(p.numel() for p in build_model(config.with_vocab(cfg, vocab).model).parameters())
    layers = tasks.get(m.task).layers(m)
    tokens = d.max_tokens  # one micro-batch at a time (update_freq accumulates gradients, not activations)
    activations = tokens * layers * (12 * m.d_model + 2 * m.d_ffn) * 4
    logits = 3 * tokens * vocab * 4
    return int(1.1 * (16 * params + activations + logits + GIB))


def nvidia_free_bytes(gpu: str) -> int | None:
    """Free memory of GPU ``gpu`` from nvidia-smi (None where it cannot be asked)."""
    if shutil.which("nvidia-smi") is None:
        return None
    q = ["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits", "-i", gpu]
    try:
        out = subprocess.run(q, capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        return int(out.splitlines()[0]) * 1024**2
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def check_gpus(gpus: list[str], count: Callable[[], int] = torch.cuda.device_count) -> None:
    """Every GPU ``--gpus`` names is a CUDA device index of this machine; a run sent to a GPU that
    is not there would silently train on the CPU."""
    n = count()
    bad = [g for g in gpus if not g.isdigit() or int(g) >= n]
    if bad:
        have = f"GPUs 0..{n - 1}" if n else "no CUDA GPU"
        raise ConfigError(f"--gpus {','.join(gpus)}: {', '.join(bad)} is not a GPU of this machine ({have})")


def check_fit(
    cfgs: list[RunConfig],
    gpus: list[str],
    per_gpu: int,
    free_bytes: Callable[[str], int | None] = nvidia_free_bytes,
) -> None:
    """Refuse ``per_gpu`` runs on each GPU if the largest run's estimate times ``per_gpu`` exceeds a
    GPU's free memory; the message says how many would fit."""
    if per_gpu < 1:
        raise ConfigError(f"--jobs-per-gpu must be >= 1, got {per_gpu}")
    if not cfgs or per_gpu == 1:
        return
    need = max(run_bytes(c) for c in cfgs)
    for gpu in gpus:
        free = free_bytes(gpu)
        if free is None:
            print(f"[preln] warning: GPU {gpu}'s free memory unknown: --jobs-per-gpu unchecked", file=sys.stderr)
            continue
        if per_gpu * need > free:
            raise ConfigError(
                f"--jobs-per-gpu {per_gpu}: each run needs about {need / GIB:.1f} GiB (estimated from its config), "
                f"GPU {gpu} has {free / GIB:.1f} GiB free: at most {free // need} fit"
            )
