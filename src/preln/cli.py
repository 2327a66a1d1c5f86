"""Command line: ``preln train | finetune | analyze | reproduce | plot | export | report | prepare |
translate | evaluate | config``. The parsers are here; each command's ``cmd_*`` (in ``commands.py``)
makes one library call and prints the result.

Exit codes are ``process.Exit``: errors a user can fix (bad config, missing corpus, wrong
checkpoint) are one line ``preln: error: ...`` with status 2, never a traceback; a diverged run
(or a failed run of a grid) is 1; a bug is 3 with its traceback kept in a ``crash-*.log``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__, commands
from .config import did_you_mean
from .decoding import LENPEN, MAX_LEN_A, MAX_LEN_B
from .errors import PrelnError
from .lab import DEFAULT_STUDIES
from .process import Exit

EPILOG = """Data: corpora are read from a path, never downloaded by `train`. data.path in the
config (or --data) is used as given if it exists, else looked up under $PRELN_DATA_ROOT
(default ../shared/data). Tokenizers are cached in $PRELN_CACHE (default ~/.cache/preln)."""


def _decode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR", help="a translation run folder (from preln train)")
    p.add_argument("--beam", type=int, default=5, help="beam size; 1 = greedy (default 5)")
    p.add_argument("--lenpen", type=float, default=LENPEN, help="length penalty (default 1, fairseq-generate's)")
    p.add_argument(
        "--max-len-a",
        type=float,
        default=MAX_LEN_A,
        metavar="A",
        help="at most A * source length + B tokens a hypothesis (fairseq-generate; default A 0, B 200)",
    )
    p.add_argument("--max-len-b", type=int, default=MAX_LEN_B, metavar="B", help="see --max-len-a (default 200)")
    p.add_argument(
        "--average",
        type=int,
        default=1,
        metavar="N",
        help="average the weights of the last N checkpoints (default 1: the last)",
    )
    p.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="on a GPU: bf16 autocast (auto, the default) or fp32; a CPU always decodes in fp32",
    )


def _allow_data_change(p: argparse.ArgumentParser, verb: str) -> None:
    help = f"{verb} on corpus files that differ from the run's data.json (recorded in its history.jsonl)"
    p.add_argument("--allow-data-change", action="store_true", help=help)


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="run config (TOML), e.g. configs/cpu-multi30k-pre.toml")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (TOML syntax; repeatable), e.g. --set model.norm=post",
    )
    p.add_argument("--data", metavar="PATH", help="corpus folder or file (overrides data.path)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="preln",
        description="Train Transformers with the place of the normalization as one switch (Post-LN, Pre-LN, "
        "Sandwich, DeepNorm, Admin, ReZero, Mix-LN) and reproduce Xiong et al. 2020, On Layer Normalization in "
        "the Transformer Architecture.",
        epilog=EPILOG,
    )
    ap.add_argument("--version", action="version", version=f"preln {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_train,
        _add_finetune,
        _add_analyze,
        _add_reproduce,
        _add_plot,
        _add_export,
        _add_report,
        _add_prepare,
        _add_translate,
        _add_predict,
        _add_generate,
        _add_evaluate,
        _add_compare,
        _add_config,
    ):
        add(sub)
    ap.command_names = tuple(sub.choices)  # for the "did you mean" of a mistyped command
    return ap


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a config into a run folder (resumes if it has a checkpoint)",
        description="Train a model. The run folder gets config.toml, spm.model, metrics.jsonl, "
        "status.json and checkpoints/. Rerunning into the same folder resumes from its last "
        "checkpoint.",
        epilog=EPILOG,
    )
    _config_args(p)
    p.add_argument("--out", metavar="DIR", help="run folder (default runs/<config name>)")
    _allow_data_change(p, "resume")
    p.set_defaults(func=commands.cmd_train)


def _add_finetune(sub) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a masked-LM run on sentence-pair classification (accuracy/F1 on dev and test)",
        description="Fine-tune a pretrained masked-LM run folder on a pair-classification task with BERT's "
        "recipe (AdamW lr 1e-4, 10% warm-up, linear decay, 3 epochs, batches of 2,048 tokens; --set changes "
        "any of it). The run folder gets metrics.jsonl (dev accuracy each epoch), scores.json (dev and test "
        "at the end), checkpoints; rerunning resumes. A TSV folder needs train.tsv and dev.tsv (test.tsv optional) "
        'with a header; GLUE MRPC: --set \'data.pair_columns=["Quality", "#1 String", "#2 String"]\'; '
        'RTE: --set \'data.pair_columns=["label", "sentence1", "sentence2"]\' '
        '--set \'data.pair_labels=["not_entailment", "entailment"]\'.',
        epilog=EPILOG,
    )
    p.add_argument("run", help="the pretrained masked-LM run folder")
    p.add_argument(
        "--task", required=True, help="paraphrase or containment ($PRELN_DATA_ROOT/pairclf), or a folder of TSVs"
    )
    p.add_argument("--out", metavar="DIR", help="run folder (default <run>-ft-<task> beside the pretrained run)")
    p.add_argument(
        "--random-init", action="store_true", help="the control: its vocabulary and architecture, not its weights"
    )
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override (repeatable)")
    _allow_data_change(p, "resume")
    p.set_defaults(func=commands.cmd_finetune)


def _add_analyze(sub) -> None:
    p = sub.add_parser(
        "analyze",
        help="gradient norms and hidden-state scales at initialization (the paper's Fig. 3, Theorem 1, Lemma 2)",
        description="Measure per-layer expected-gradient norms (Post-LN vs Pre-LN at init, Post-LN after warm-up), "
        "the last layer's W2 gradient against depth and width with log-log slopes, and Lemma 2's hidden-state "
        "scales. Writes analysis.json, PNG figures and summary.md. The cpu preset takes about 6 minutes on 2 cores "
        "(its parts measured: 350 s).",
        epilog=EPILOG,
    )
    p.add_argument("--preset", choices=["cpu", "paper"], default="cpu", help="sizes (default cpu; paper = GPU)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set seeds=5 --set depths=[6,10,14] "
        "(see preln.lab.analysis.AnalysisConfig; base.<section>.<key> for the run settings)",
    )
    p.add_argument("--only", metavar="PARTS", help="comma-separated subset of fig3,warmup,depth,width,lemma2")
    p.add_argument(
        "--placements",
        metavar="NORMS",
        help="also measure these model.norm placements side by side (per-layer gradients, depth slopes, residual "
        "stream), e.g. post,pre,sandwich,deepnorm,admin,rezero,mix",
    )
    p.add_argument("--data", metavar="PATH", help="Multi30k-layout corpus folder (default multi30k)")
    p.add_argument("--out", metavar="DIR", default="runs/analysis", help="output folder (default runs/analysis)")
    p.set_defaults(func=commands.cmd_analyze)


def _add_reproduce(sub) -> None:
    p = sub.add_parser(
        "reproduce",
        help="run the paper's studies (grids of runs from studies/*.toml), then write the report",
        description="Expand each study file for the preset, train every run not yet completed or diverged "
        "(interrupted runs resume), score test BLEU (beam search), run the analysis, and write report.md / "
        "report.html. Ctrl-C stops after the current updates; rerunning skips finished runs. The quick preset "
        "took 64 minutes on 2 AMD EPYC cores (71-84 when the host was busier) with --jobs 2 "
        "from a fresh clone, install included "
        "(docs/reference-quick); paper needs a GPU.",
    )
    p.add_argument(
        "--preset",
        choices=["quick", "long", "paper", "smoke"],
        default="quick",
        help="sizes (default quick: 2 CPU cores; long: fig5 with six seeds and lr's 12+12-layer grid too, the "
        "default studies that have it; smoke: the studies at toy size, minutes; paper: GPUs)",
    )
    p.add_argument(
        "--studies",
        default=None,
        help=f"comma-separated study names (studies/NAME.toml) or paths (default {DEFAULT_STUDIES}: longest "
        "jobs first, those that have the preset; fig2, lr-mlm and placements are opt-in)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="processes at once, each with cores/N threads (default 1; measured gains: docs/reproduce.md)",
    )
    p.add_argument(
        "--gpus",
        metavar="IDS",
        help="comma-separated GPU ids: one run per GPU at a time (CUDA_VISIBLE_DEVICES); --jobs = their count",
    )
    p.add_argument(
        "--jobs-per-gpu",
        type=int,
        default=1,
        metavar="N",
        help="runs at once on each GPU of --gpus (default 1); refused if N of the grid's largest run would not fit "
        "in a GPU's free memory (an estimate from its config)",
    )
    p.add_argument(
        "--launcher",
        choices=["processes", "slurm", "local"],
        default="processes",
        help="processes: here (default); slurm: each job submitted through submitit (pip install 'preln[cluster]'), "
        "with the same skip/resume; local: submitit's local executor",
    )
    p.add_argument(
        "--slurm",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a submitit parameter for --launcher slurm/local, repeatable, e.g. --slurm timeout_min=600 "
        "--slurm slurm_partition=gpu --slurm gpus_per_node=1 (default time limit: a day)",
    )
    p.add_argument("--out", metavar="DIR", help="runs folder (default runs/reproduce-<preset>)")
    p.add_argument("--beam", type=int, default=5, help="beam for test BLEU (default 5)")
    p.add_argument("--root", metavar="DIR", help=argparse.SUPPRESS)
    p.set_defaults(func=commands.cmd_reproduce)


def _add_plot(sub) -> None:
    p = sub.add_parser(
        "plot",
        help="curves of any run folders overlaid, or one run's telemetry as layer x update heatmaps",
        description="One metric of metrics.jsonl for each run, labelled by the config values that differ "
        "between them; with --telemetry, the FFN W2 gradient norm, its update ratio and the residual stream's RMS "
        "per layer and update (train with --set train.telemetry_every=N).",
    )
    p.add_argument("runs", metavar="RUN_DIR", nargs="+")
    p.add_argument("--metric", default="valid_nll", help="valid_nll (default), valid_loss, loss, lr, grad_norm, ...")
    p.add_argument("--x", choices=["update", "epoch", "time"], default="update", help="x axis (default update)")
    p.add_argument("--telemetry", action="store_true", help="heatmaps of the (first) run's telemetry.jsonl")
    p.add_argument("--out", metavar="FILE", help="PNG (default RUN_DIR/<metric>.png or RUN_DIR/telemetry.png)")
    p.set_defaults(func=commands.cmd_plot)


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export",
        help="a run as a Hugging Face Transformers model (masked LM: BERT / RoBERTa-PreLayerNorm; "
        "Post-LN translation: FSMT; Pre-LN causal LM: GPT-2)",
        description="Write the run's last checkpoint as a Transformers model folder (config.json, "
        "model.safetensors) with the run's spm.model; needs pip install 'preln[hf]'. A masked-LM run becomes "
        "BertForMaskedLM (Post-LN) or RobertaPreLayerNormForMaskedLM (Pre-LN), a Post-LN translation run "
        "FSMTForConditionalGeneration, a Pre-LN causal LM GPT2LMHeadModel; masked-LM, classifier and causal-LM "
        "folders hold a tokenizer for AutoTokenizer too. Runs whose layers no Transformers class computes "
        "exactly are refused with the reason.",
    )
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("out", metavar="OUT_DIR")
    p.add_argument("--format", choices=["hf"], default="hf", help="hf: Hugging Face Transformers (default)")
    p.set_defaults(func=commands.cmd_export)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="write report.md and report.html from a runs folder (files only)")
    p.add_argument("runs", metavar="RUNS_DIR")
    p.set_defaults(func=commands.cmd_report)


def _add_prepare(sub) -> None:
    p = sub.add_parser(
        "prepare",
        help="prepare a corpus: the IWSLT14 De-En or WMT14 En-De recipe, or Multi30k",
        description="iwslt14: fairseq's prepare-iwslt14.sh in Python (Moses tokenization and lowercasing with "
        "sacremoses, cleaning, valid = every 23rd line, test = dev2010 + TEDX.dev2012 + tst2010-2012) from the "
        "official de-en.tgz archive (--source) or downloaded. wmt14: fairseq's prepare-wmt14en2de.sh in Python "
        "(Europarl v7 + Common Crawl + News Commentary v12, punctuation normalized, Moses -a tokenization, cased, "
        "valid = every 100th line, cleaned to 1..250 tokens and ratio 1.5; test = newstest2014) from a folder of "
        "its five archives (--source) or downloaded. multi30k: the raw task-1 files, from a local folder "
        "(--source) or downloaded.",
    )
    p.add_argument("corpus", choices=["iwslt14", "wmt14", "multi30k"])
    p.add_argument("--workers", type=int, default=1, help="wmt14: processes that share the tokenization")
    p.add_argument("--source", metavar="PATH", help="local archive or folder (default: download; needs network)")
    p.add_argument(
        "--out", metavar="DIR", help="output folder (default data/iwslt14-de-en, data/wmt14-en-de or data/multi30k)"
    )
    p.set_defaults(func=commands.cmd_prepare)


def _add_translate(sub) -> None:
    p = sub.add_parser(
        "translate",
        help="translate lines (a file or stdin) with a trained run, to stdout",
        description="Beam-search (or greedy) translation, one output line per input line.",
    )
    _decode_args(p)
    p.add_argument(
        "--input", metavar="FILE", help="source text, one sentence a line (default stdin, translated as lines arrive)"
    )
    p.add_argument(
        "--nbest",
        type=int,
        default=0,
        metavar="N",
        help="print the N best of each line as 'line<TAB>score<TAB>text' (score: log-prob / length^lenpen)",
    )
    p.add_argument("--checkpoint", choices=["last", "best"], default="last", help="which checkpoint (default last)")
    p.set_defaults(func=commands.cmd_translate)


def _add_predict(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="a masked LM's fillers for each <mask>, or a fine-tuned classifier's label per sentence pair",
        description="Read lines (--input FILE, or stdin as they arrive) and print, for a masked-LM run, the "
        "line with each <mask> filled by its best filler and the --top-k fillers with their probabilities; "
        "for a fine-tuned classifier (preln finetune), one 'sentence 1<TAB>sentence 2' pair a line: the label "
        "and every class's probability. --json prints one JSON object a line.",
    )
    p.add_argument("run", metavar="RUN_DIR", help="a masked-LM run or a fine-tuning run folder")
    p.add_argument("--input", metavar="FILE", help="text, one example a line (default stdin, as lines arrive)")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="masked LM: fillers per mask (default 5)")
    p.add_argument("--json", action="store_true", help="one JSON object per input line")
    p.add_argument("--checkpoint", choices=["last", "best"], default="last", help="which checkpoint (default last)")
    p.set_defaults(func=commands.cmd_predict)


def _add_generate(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="continue prompts (a file or stdin) with a causal language model run, to stdout",
        description="Each input line is a prompt (an empty line: from nothing); print it continued by at most "
        "--max-new-tokens tokens, up to the model's </s>: greedy with --top-k 1 (default), else sampled from the "
        "K most likely next tokens at --temperature, reproducibly from --seed.",
    )
    p.add_argument("run", metavar="RUN_DIR", help="a causal language model run folder (model.task = 'causal')")
    p.add_argument("--input", metavar="FILE", help="prompts, one a line (default stdin, answered as lines arrive)")
    p.add_argument("--max-new-tokens", type=int, default=50, metavar="N", help="at most N new tokens (default 50)")
    p.add_argument("--top-k", type=int, default=1, metavar="K", help="sample from the K likeliest; 1 = greedy")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1)")
    p.add_argument("--seed", type=int, default=0, help="the sampling's seed (default 0)")
    p.add_argument("--checkpoint", choices=["last", "best"], default="last", help="which checkpoint (default last)")
    p.set_defaults(func=commands.cmd_generate)


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="BLEU of a run on its corpus's valid/test splits (written to bleu.json)",
        description="Translate the run's valid and test splits and score them with sacreBLEU "
        "(detokenized, with signature) and tokenized lowercased BLEU (the IWSLT convention).",
    )
    _decode_args(p)
    p.add_argument("--splits", default="valid,test", help="comma-separated (default valid,test)")
    p.add_argument("--limit", type=int, default=0, metavar="N", help="only the first N sentences of each split")
    _allow_data_change(p, "score")
    p.set_defaults(func=commands.cmd_evaluate)


def _add_compare(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="paired test of BLEU and chrF between evaluated runs (p-values, 95%% intervals)",
        description="Compare the hypotheses `preln evaluate` wrote for two or more translation runs on the "
        "same sentences (sacreBLEU): per system BLEU and chrF, the bootstrap mean and 95% interval, and "
        "each system's p-value against the first (the baseline) by paired approximate randomization "
        "(calibrated by simulation: docs/statistics.md). Reads only.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="evaluated run folders; the first is the baseline")
    p.add_argument("--split", default="test", choices=["valid", "test"], help="which split (default test)")
    p.add_argument(
        "--setting",
        default="",
        metavar="KEY",
        help="a kept evaluation (a folder under RUN/evaluations/; default: the last)",
    )
    p.add_argument(
        "--trials",
        type=int,
        default=1000,
        metavar="N",
        help="randomization trials and bootstrap resamples (default 1000)",
    )
    p.add_argument(
        "--method",
        choices=["randomization", "bootstrap"],
        default="randomization",
        help="the p-value's test: paired approximate randomization (default; calibrated) or paired bootstrap",
    )
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    p.set_defaults(func=commands.cmd_compare)


def _add_config(sub) -> None:
    p = sub.add_parser(
        "config",
        help="print the resolved config (after --set) as TOML",
        description="Load, override and validate a config, then print it.",
    )
    _config_args(p)
    p.set_defaults(func=commands.cmd_config)


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    _check_command(ap, sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except (PrelnError, OSError) as e:  # OSError: missing, unreadable, full disk; any other error is a bug
        if os.environ.get("PRELN_DEBUG"):
            raise
        print(f"preln: error: {e}", file=sys.stderr)
        return Exit.USAGE
    except KeyboardInterrupt:
        print("preln: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return Exit.INTERRUPTED
    except Exception as e:  # a bug: one line for the user, the traceback kept in a file for the report
        if os.environ.get("PRELN_DEBUG"):
            raise
        where = _keep_traceback(args)
        print(
            f"preln: internal error: {type(e).__name__}: {str(e)[:300]} (a bug; the traceback is in {where}; "
            "PRELN_DEBUG=1 shows it here)",
            file=sys.stderr,
        )
        return Exit.BUG


def _check_command(ap: argparse.ArgumentParser, argv: list[str]) -> None:
    """A mistyped command is answered with the likely intended one (argparse only lists them all)."""
    if not argv or argv[0].startswith("-"):
        return
    names = getattr(ap, "command_names", ())
    if argv[0] not in names and (hint := did_you_mean(argv[0], names)):
        ap.error(f"unknown command {argv[0]!r}{hint}")


def _keep_traceback(args: argparse.Namespace) -> Path:
    """Write the current exception's traceback into the run folder the command worked on (the
    cache folder otherwise); return the file."""
    import time
    import traceback

    from .data.tokenizer import default_cache_dir

    folder = next((Path(v) for v in (getattr(args, "out", None), getattr(args, "run", None)) if v), None)
    if folder is None or not folder.is_dir():
        folder = default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"crash-{time.strftime('%Y%m%d-%H%M%S')}.log"
        path.write_text(traceback.format_exc())
        return path
    except OSError:
        return Path("(unwritable: " + str(folder) + ")")


if __name__ == "__main__":
    sys.exit(main())
