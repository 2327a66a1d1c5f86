"""Translate and score: BLEU in the two conventions that get confused, each always labelled.

* ``sacrebleu``: sacreBLEU on detokenized text with its default 13a tokenization, reported with
  its signature (Post 2018) — comparable across papers that also report it. Only for corpora of
  raw text (Multi30k, TSV): on pre-tokenized text it would be 13a over Moses tokens, which is
  neither convention, so it is not reported there.
* ``tok_lc``: tokenized, lowercased BLEU as multi-bleu.perl / fairseq-generate compute it — the
  IWSLT14 convention that Xiong et al. report. Raw corpora are Moses-tokenized (sacremoses) and
  lowercased first; pre-tokenized corpora (``data.pretokenized``, e.g. ``preln prepare iwslt14``
  output: Moses tokens, XML-escaped, lowercased) are scored as they stand, since tokenizing them
  again would split every ``&apos;`` into three tokens and inflate the score. Computed by
  sacreBLEU with ``tokenize='none'``; its signature is reported. Not comparable with the first.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from . import atomic, checkpoint, config
from .config import ConfigError, RunConfig
from .data.batching import pad, token_batches
from .data.datasets import read_pairs
from .data.tokenizer import EOS, PAD, Tokenizer
from .decode import beam_search, greedy
from .decoding import LENPEN, MAX_LEN_A, MAX_LEN_B
from .model import Seq2Seq, build_model
from .runs import RunFolder
from .scores import paired_test, translation_scores


def translate(
    model: Seq2Seq,
    tok: Tokenizer,
    lines: list[str],
    beam: int = 5,
    lenpen: float = LENPEN,
    max_tokens: int = 4000,
    progress: bool = False,
    max_len_a: float = MAX_LEN_A,
    max_len_b: int = MAX_LEN_B,
    precision: str = "auto",
) -> list[str]:
    """Detokenized translations of ``lines``, in order; beam = 1 means greedy. Defaults are
    fairseq-generate's: lenpen 1, at most 0 * src_len + 200 tokens. On a GPU the model runs under
    bf16 autocast unless ``precision`` is ``fp32`` (scores and log-softmax stay float32)."""
    limits = {"max_len_a": max_len_a, "max_len_b": max_len_b}
    if beam == 1:
        decode = lambda src: greedy(model, src, **limits)
    else:
        decode = lambda src: beam_search(model, src, beam, lenpen, **limits)
    return tok.decode(_batched(model, tok, lines, beam, max_tokens, progress, decode, precision))


def translate_nbest(
    model: Seq2Seq,
    tok: Tokenizer,
    lines: list[str],
    beam: int = 5,
    nbest: int = 1,
    lenpen: float = LENPEN,
    max_tokens: int = 4000,
    max_len_a: float = MAX_LEN_A,
    max_len_b: int = MAX_LEN_B,
    precision: str = "auto",
) -> list[list[tuple[str, float]]]:
    """For each line, its ``nbest`` (<= beam) best translations as (text, score), best first; the
    score is fairseq's: log-probability over length ** lenpen. nbest 1 gives ``translate``'s text."""
    if not 1 <= nbest <= beam:
        raise ValueError(f"--nbest must be in 1..beam ({beam}), got {nbest}")
    limits = {"max_len_a": max_len_a, "max_len_b": max_len_b}
    hyps = _batched(
        model,
        tok,
        lines,
        beam,
        max_tokens,
        False,
        lambda src: beam_search(model, src, beam, lenpen, **limits, nbest=nbest),
        precision,
    )
    return [[(text, score) for text, (score, _) in zip(tok.decode([ids for _, ids in h]), h)] for h in hyps]


def _batched(
    model: Seq2Seq, tok: Tokenizer, lines: list[str], beam: int, max_tokens: int, progress: bool, decode, precision: str
):
    """``decode`` over token-budget batches of the encoded ``lines`` (sorted by length, so little
    padding); results in input order. bf16 autocast on a GPU unless ``precision`` is fp32."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"--precision must be auto, bf16 or fp32, got {precision!r}")
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
    batches = token_batches([(len(s),) for s in ids], max(max_tokens // beam, limit))  # beams multiply it
    device = next(model.parameters()).device
    bf16 = device.type == "cuda" and precision != "fp32"
    out: list = [[] for _ in lines]
    for batch in tqdm(batches, desc="translate", unit="batch", disable=not progress):
        src = pad([ids[i] for i in batch], PAD).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            hyps = decode(src)
        for i, h in zip(batch, hyps):
            out[i] = h
    return out


def check_decoding(beam: int, lenpen: float, max_len_a: float, max_len_b: int) -> None:
    """Decoding settings that would fail deep inside beam search, or decode garbage, as one line."""
    if beam < 1:
        raise ValueError(f"--beam must be >= 1, got {beam}")
    if not math.isfinite(lenpen):
        raise ValueError(f"--lenpen must be a finite number, got {lenpen}")
    if not (math.isfinite(max_len_a) and max_len_a >= 0) or max_len_b < 1:
        raise ValueError(f"--max-len-a must be >= 0 and --max-len-b >= 1, got {max_len_a}, {max_len_b}")


def looks_pretokenized(refs: list[str]) -> bool:
    """Moses-escaped entities in over 1% of the lines: text that ``data.pretokenized`` should mark."""
    hits = sum(1 for r in refs if "&apos;" in r or "&quot;" in r or " @-@ " in r)
    return hits > 0.01 * max(len(refs), 1)


def load_run(run_dir: str | Path, which: str = "last") -> tuple[RunConfig, nn.Module, Tokenizer]:
    """A run's config, model and tokenizer; ``which`` = "last" or "best" checkpoint."""
    run = Path(run_dir)
    cfg = config.load(run / "config.toml")
    path = run / "checkpoints" / "best" if which == "best" else checkpoint.newest_good(run / "checkpoints", _warn)
    if path is None or not path.is_dir():
        raise FileNotFoundError(f"{run}: no {which} checkpoint")
    why = checkpoint.problem(path)  # the last one was checked by newest_good; best is checked here
    if why:
        raise ValueError(f"{path}: damaged ({why}); use --checkpoint last, or retrain")
    tok = Tokenizer(run / "spm.model")
    if len(tok) != cfg.model.vocab_size:
        raise ValueError(f"{run}: tokenizer has {len(tok)} pieces but the model {cfg.model.vocab_size}")
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
        raise ValueError(
            f"--average {average} averages the last {average} checkpoints; with --checkpoint {which} use 1"
        )
    cfg, model, tok = load_run(run_dir, which)
    if not isinstance(model, Seq2Seq):
        raise ValueError(f"{run_dir} is a {cfg.model.task} run; translation needs a translation model")
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


def evaluate_run(
    run_dir: str | Path,
    splits: tuple[str, ...] = ("valid", "test"),
    beam: int = 5,
    lenpen: float = LENPEN,
    average: int = 1,
    limit: int = 0,
    max_len_a: float = MAX_LEN_A,
    max_len_b: int = MAX_LEN_B,
    precision: str = "auto",
    allow_data_change: bool = False,
) -> dict:
    """BLEU of a run on its corpus's splits; written to ``RUN_DIR/bleu.json`` (and returned). On a
    GPU under bf16 autocast unless ``precision`` is fp32 (``bleu.json`` says which). Splits whose
    files differ from the run's ``data.json`` are refused unless ``allow_data_change`` (then the
    change is in ``bleu.json`` and the run's history.jsonl)."""
    run = Path(run_dir)
    check_decoding(beam, lenpen, max_len_a, max_len_b)
    unknown = [s for s in splits if s not in ("valid", "test")]
    if unknown or not splits:
        raise ValueError(f"--splits: {','.join(unknown) or 'none'}: the splits are valid and test")
    if limit < 0:
        raise ValueError(f"--limit must be >= 0 (0 = every sentence), got {limit}")
    if not (run / "config.toml").is_file():
        raise FileNotFoundError(f"{run}: not a run folder (no config.toml)")
    folder = RunFolder(run)
    folder.lock()  # not while a trainer writes the folder, nor two evaluations at once
    try:
        changed = folder.check_data(config.load(run / "config.toml"), splits, allow_data_change, "evaluate")
        return _evaluate(run, splits, beam, lenpen, average, limit, max_len_a, max_len_b, precision, changed)
    finally:
        folder.unlock()


def _evaluate(run: Path, splits, beam, lenpen, average, limit, max_len_a, max_len_b, precision, changed) -> dict:
    cfg, model, tok, desc = load_for_eval(run, average)
    on_gpu = next(model.parameters()).is_cuda
    result: dict = {"checkpoint": desc, "beam": beam, "lenpen": lenpen, "max_len_a": max_len_a}
    if changed:  # allowed by --allow-data-change: the scores are of other data than the run's
        result["data_changed"] = changed
    result["precision"] = "bf16" if on_gpu and precision != "fp32" else "fp32"
    result |= {"max_len_b": max_len_b, "limit": limit, "pretokenized": cfg.data.pretokenized, "splits": {}}
    for split in splits:
        src, ref, _ = read_pairs(cfg, split)
        if limit:
            src, ref = src[:limit], ref[:limit]
        if not cfg.data.pretokenized and looks_pretokenized(ref):
            print(
                f"[preln] warning: the {split} references look Moses-tokenized and escaped (&apos; ...): "
                "if the corpus is pre-tokenized, set data.pretokenized = true so BLEU scores it as it stands",
                file=sys.stderr,
            )
        start = time.perf_counter()
        limits = {"max_len_a": max_len_a, "max_len_b": max_len_b, "precision": precision}
        hyps = translate(model, tok, src, beam, lenpen, progress=True, **limits)
        result["splits"][split] = {
            "sentences": len(src),
            "seconds": round(time.perf_counter() - start, 1),
            **translation_scores(hyps, ref, cfg.data.tgt_lang, cfg.data.pretokenized),
        }
        atomic.write_text(run / f"hyp.{split}.{cfg.data.tgt_lang}", "".join(h + "\n" for h in hyps))
    atomic.write_text(run / "bleu.json", json.dumps(result, indent=1) + "\n")  # a kill leaves the old one whole
    _keep(run, setting_key(run, average, result), result, cfg.data.tgt_lang)
    return result


def setting_key(run: Path, average: int, result: dict) -> str:
    """The folder name under ``RUN/evaluations/`` of one checkpoint and decoding setting."""
    newest = checkpoint.newest_good(run / "checkpoints")
    ckpt = (f"avg{average}-" if average > 1 else "") + (newest.name if newest else "none")
    r = result
    key = f"{ckpt}-beam{r['beam']}-lenpen{r['lenpen']:g}-len{r['max_len_a']:g}x+{r['max_len_b']}-{r['precision']}"
    return key + (f"-limit{r['limit']}" if r["limit"] else "")


def _keep(run: Path, key: str, result: dict, lang: str) -> None:
    """``RUN/evaluations/KEY/``: this setting's bleu.json (its splits merged across evaluations)
    and hypotheses, which a later evaluation with other settings does not overwrite."""
    folder = run / "evaluations" / key
    folder.mkdir(parents=True, exist_ok=True)
    try:
        kept = json.loads((folder / "bleu.json").read_text())
    except (OSError, ValueError):
        kept = {"splits": {}}
    merged = {**result, "splits": {**kept.get("splits", {}), **result["splits"]}}
    for split in result["splits"]:
        atomic.write_bytes(folder / f"hyp.{split}.{lang}", (run / f"hyp.{split}.{lang}").read_bytes())
    atomic.write_text(folder / "bleu.json", json.dumps(merged, indent=1) + "\n")


def compare_runs(
    runs: list[Path], split: str = "test", setting: str = "", trials: int = 1000, method: str = "randomization"
) -> dict:
    """A paired test (``scores.paired_test``) of BLEU and chrF between runs' hypotheses of one split: each
    run's last evaluation, or its kept ``setting`` (a name under ``RUN/evaluations/``). The runs
    must have translated the same sentences of the same corpus; the first is the baseline."""
    if len(runs) < 2 or trials < 1:
        raise ValueError("compare needs two or more runs and --trials >= 1")
    systems, refs, conventions = {}, None, set()
    for run in runs:
        cfg = config.load(run / "config.toml")
        folder = run / "evaluations" / setting if setting else run
        hyp = folder / f"hyp.{split}.{cfg.data.tgt_lang}"
        if not hyp.is_file():
            todo = f"run `preln evaluate {run} --splits {split}` first"
            raise FileNotFoundError(f"{run}: no {hyp.relative_to(run)}; {todo}")
        hyps = hyp.read_text().splitlines()
        _, ref, _ = read_pairs(cfg, split)
        if refs is not None and ref[: len(hyps)] != refs:
            raise ValueError(f"{run}: its {split} references differ from {runs[0]}'s (another corpus or --limit)")
        refs = ref[: len(hyps)]
        conventions.add(cfg.data.pretokenized)
        systems[run.name if run.name not in systems else str(run)] = hyps
    if len(conventions) > 1:
        raise ValueError("the runs score their text in different conventions (data.pretokenized differs)")
    return {
        "split": split,
        "sentences": len(refs),
        **paired_test(systems, refs, conventions.pop(), trials, method),
        "method": method,
    }


def accuracy_f1(predictions: list[int], labels: list[int]) -> dict:
    """Accuracy, and for two classes the F1 of class 1 (how MRPC is reported), in percent."""
    if len(predictions) != len(labels) or not labels:
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    out = {"accuracy": 100.0 * sum(p == y for p, y in zip(predictions, labels)) / len(labels), "n": len(labels)}
    if set(labels) | set(predictions) <= {0, 1}:
        tp = sum(p == y == 1 for p, y in zip(predictions, labels))
        fp = sum(p == 1 and y == 0 for p, y in zip(predictions, labels))
        fn = sum(p == 0 and y == 1 for p, y in zip(predictions, labels))
        out["f1"] = 200.0 * tp / (2 * tp + fp + fn) if tp else 0.0
    return out


@torch.no_grad()
def classification_scores(model: nn.Module, data, split: str, device: torch.device) -> dict:
    """Accuracy (and F1) of a pair classifier on a split of its ``PairData``."""
    model.eval()
    predictions, labels = [], []
    for k in range(data.num_batches(split)):
        t = data.batch(split, 0, k).to(device).tensors
        predictions += model(t["ids"], segments=t["segments"], classify=True).argmax(-1).tolist()
        labels += t["labels"].tolist()
    return accuracy_f1(predictions, labels)
