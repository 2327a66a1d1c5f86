"""Using a trained run: load its model (a checkpoint, or the mean of the last few) and decode
with it (``translate``, ``translate_nbest``) under a ``Decoding`` setting. Scoring is apart
(``scores.py``, ``evaluate.py``): what only translates or exports never loads a scorer."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from . import checkpoint, config
from .config import ConfigError, RunConfig
from .data.batching import pad, token_batches
from .data.tokenizer import EOS, PAD, Tokenizer
from .decode import beam_search, greedy
from .decoding import FAIRSEQ, Decoding
from .errors import RunFolderError
from .model import Seq2Seq, build_model


def translate(
    model: Seq2Seq, tok: Tokenizer, lines: list[str], decoding: Decoding = FAIRSEQ, progress: bool = False
) -> list[str]:
    """Detokenized translations of ``lines``, in order (the best hypothesis of each; beam 1 is
    greedy search). Defaults are fairseq-generate's (``Decoding``). On a GPU the model runs under
    bf16 autocast unless ``decoding.precision`` is ``fp32`` (scores and log-softmax stay float32)."""
    d = decoding
    if d.beam == 1:
        decode = lambda src: greedy(model, src, max_len_a=d.max_len_a, max_len_b=d.max_len_b)
    else:
        decode = lambda src: beam_search(model, src, d.beam, d.lenpen, max_len_a=d.max_len_a, max_len_b=d.max_len_b)
    return tok.decode(_batched(model, tok, lines, d, progress, decode))


def translate_nbest(
    model: Seq2Seq, tok: Tokenizer, lines: list[str], decoding: Decoding = FAIRSEQ
) -> list[list[tuple[str, float]]]:
    """For each line, its ``decoding.nbest`` best translations as (text, score), best first; the
    score is fairseq's: log-probability over length ** lenpen. nbest 1 gives ``translate``'s text."""
    d = decoding
    limits = {"max_len_a": d.max_len_a, "max_len_b": d.max_len_b, "nbest": d.nbest}
    hyps = _batched(model, tok, lines, d, False, lambda src: beam_search(model, src, d.beam, d.lenpen, **limits))
    return [[(text, score) for text, (score, _) in zip(tok.decode([ids for _, ids in h]), h)] for h in hyps]


def _batched(model: Seq2Seq, tok: Tokenizer, lines: list[str], d: Decoding, progress: bool, decode):
    """``decode`` over token-budget batches of the encoded ``lines`` (sorted by length, so little
    padding); results in input order. bf16 autocast on a GPU unless ``d.precision`` is fp32."""
    limit = model.config.max_positions - 1
    encoded = tok.encode(lines)
    long = sum(len(s) > limit - 1 for s in encoded)
    if long:
        print(
            f"[preln] warning: {long} input line(s) longer than {limit - 1} tokens (model.max_positions) "
            "are cut to that length",
            file=sys.stderr,
        )
    ids = [s[: limit - 1] + [EOS] for s in encoded]
    batches = token_batches([(len(s),) for s in ids], max(d.max_tokens // d.beam, limit))  # beams multiply it
    device = next(model.parameters()).device
    bf16 = device.type == "cuda" and d.precision != "fp32"
    out: list = [[] for _ in lines]
    for batch in tqdm(batches, desc="translate", unit="batch", disable=not progress):
        src = pad([ids[i] for i in batch], PAD).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            hyps = decode(src)
        for i, h in zip(batch, hyps):
            out[i] = h
    return out


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
    if not isinstance(model, Seq2Seq):
        raise RunFolderError(f"{run_dir} is a {cfg.model.task} run; translation needs a translation model")
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
