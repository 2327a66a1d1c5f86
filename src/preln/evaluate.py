"""Evaluate a translation run (decode with `inference.py`, score with `scores.py`) and compare runs. BLEU in the
two conventions that get confused, each always labelled:

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

import json
import sys
import time
from pathlib import Path

from . import atomic, checkpoint, config
from .data.datasets import read_pairs
from .decode import translate
from .decoding import FAIRSEQ, Decoding
from .errors import RunFolderError, UsageError
from .inference import load_for_eval
from .runs import RunFolder
from .scores import paired_test, translation_scores


def looks_pretokenized(refs: list[str]) -> bool:
    """Moses-escaped entities in over 1% of the lines: text that ``data.pretokenized`` should mark."""
    hits = sum(1 for r in refs if "&apos;" in r or "&quot;" in r or " @-@ " in r)
    return hits > 0.01 * max(len(refs), 1)


def evaluate_run(
    run_dir: str | Path,
    splits: tuple[str, ...] = ("valid", "test"),
    decoding: Decoding = FAIRSEQ,
    average: int = 1,
    limit: int = 0,
    allow_data_change: bool = False,
) -> dict:
    """BLEU of a run on its corpus's splits; written to ``RUN_DIR/bleu.json`` (and returned) with
    the ``decoding`` setting. On a GPU under bf16 autocast unless ``decoding.precision`` is fp32
    (``bleu.json`` says which). Splits whose files differ from the run's ``data.json`` are refused
    unless ``allow_data_change`` (then the change is in ``bleu.json`` and the run's history.jsonl)."""
    run = Path(run_dir)
    unknown = [s for s in splits if s not in ("valid", "test")]
    if unknown or not splits:
        raise UsageError(f"--splits: {','.join(unknown) or 'none'}: the splits are valid and test")
    if limit < 0:
        raise UsageError(f"--limit must be >= 0 (0 = every sentence), got {limit}")
    if not (run / "config.toml").is_file():
        raise FileNotFoundError(f"{run}: not a run folder (no config.toml)")
    folder = RunFolder(run)
    folder.lock()  # not while a trainer writes the folder, nor two evaluations at once
    try:
        changed = folder.check_data(config.load(run / "config.toml"), splits, allow_data_change, "evaluate")
        return _evaluate(run, splits, decoding, average, limit, changed)
    finally:
        folder.unlock()


def _evaluate(run: Path, splits: tuple[str, ...], decoding: Decoding, average: int, limit: int, changed) -> dict:
    cfg, model, tok, desc = load_for_eval(run, average)
    on_gpu = next(model.parameters()).is_cuda
    result: dict = {"checkpoint": desc, **decoding.record()}
    if changed:  # allowed by --allow-data-change: the scores are of other data than the run's
        result["data_changed"] = changed
    result["precision"] = "bf16" if on_gpu and decoding.precision != "fp32" else "fp32"
    result |= {"limit": limit, "pretokenized": cfg.data.pretokenized, "splits": {}}
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
        hyps = translate(model, tok, src, decoding, progress=True)
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
        raise UsageError("compare needs two or more runs and --trials >= 1")
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
            raise RunFolderError(f"{run}: its {split} references differ from {runs[0]}'s (another corpus or --limit)")
        refs = ref[: len(hyps)]
        conventions.add(cfg.data.pretokenized)
        systems[run.name if run.name not in systems else str(run)] = hyps
    if len(conventions) > 1:
        raise RunFolderError("the runs score their text in different conventions (data.pretokenized differs)")
    return {
        "split": split,
        "sentences": len(refs),
        **paired_test(systems, refs, conventions.pop(), trials, method),
        "method": method,
    }
