"""Loading a trained run for use: its config, tokenizer and model from a checkpoint (or the
mean of the last few), checked. Decoding is ``decode.py``'s; scoring is apart (``scores.py``,
``evaluate.py``): what only translates or exports never loads a scorer."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from . import checkpoint, config, tasks
from .config import ConfigError, RunConfig
from .data.tokenizer import PAD, Tokenizer
from .errors import RunFolderError
from .model import Seq2Seq
from .tasks import build_model


def load_run(run_dir: str | Path, which: str = "last") -> tuple[RunConfig, nn.Module, Tokenizer]:
    """A run's config, model and tokenizer; ``which`` = "last" or "best" checkpoint."""
    run = Path(run_dir)
    cfg = config.load(run / "config.toml")
    path = run / "checkpoints" / "best" if which == "best" else checkpoint.newest_good(run / "checkpoints", _warn)
    if path is None or not path.is_dir():
        raise FileNotFoundError(f"{run}: no {which} checkpoint")
    why = checkpoint.problem(path)  # the last one was checked by newest_good; best is checked here
    if why:
        raise RunFolderError(f"{path}: damaged ({why}); use --checkpoint last, or retrain")
    tok = Tokenizer(run / "spm.model")
    if len(tok) != cfg.model.vocab_size:
        raise RunFolderError(f"{run}: tokenizer has {len(tok)} pieces but the model {cfg.model.vocab_size}")
    checkpoint.check_vocabulary(path, tok.sha256(), tok.path)
    model = build_model(cfg.model, PAD)
    checkpoint.load_weights(path, model)
    return cfg, model, tok


def _warn(msg: str) -> None:
    print(f"[preln] {msg}", file=sys.stderr)


def load_for_eval(run_dir: Path, average: int = 1, which: str = "last") -> tuple[RunConfig, Seq2Seq, Tokenizer, str]:
    """The run's model (on the GPU when there is one), optionally with the mean weights of its
    last ``average`` checkpoints."""
    if average > 1 and which != "last":
        raise RunFolderError(
            f"--average {average} averages the last {average} checkpoints; with --checkpoint {which} use 1"
        )
    cfg, model, tok = load_run(run_dir, which)
    uses = tasks.get(cfg.model.task).uses
    if uses != "translate":  # the task says which command its models serve
        raise RunFolderError(
            f"{run_dir} is a {cfg.model.task} run; translation needs a translation model (use preln {uses})"
        )
    desc = f"{which} checkpoint"
    if average > 1:
        ckpts = checkpoint.list_checkpoints(Path(run_dir) / "checkpoints")[-average:]
        damaged = [f"{p.name} ({why})" for p in ckpts if (why := checkpoint.problem(p))]
        if damaged or len(ckpts) < average:
            raise ConfigError(
                f"{run_dir}: --average {average} needs the last {average} checkpoints intact; "
                + (f"damaged: {', '.join(damaged)}" if damaged else f"the run has {len(ckpts)}")
            )
        for p in ckpts:
            checkpoint.check_vocabulary(p, tok.sha256(), tok.path)
        model.load_state_dict(checkpoint.average_weights(ckpts), strict=False)
        desc = f"mean of {len(ckpts)} checkpoints ({ckpts[0].name}..{ckpts[-1].name})"
    if torch.cuda.is_available():
        model = model.cuda()
    return cfg, model.eval(), tok, desc
