"""What each ``preln`` command does once its arguments are parsed (``cli.py`` parses them): one
library call, its result printed. Each ``cmd_*`` returns a ``process.Exit`` code."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import config
from .config import ConfigError
from .errors import RunFolderError, UsageError
from .process import Exit


def load_config(args: argparse.Namespace) -> config.RunConfig:
    """The config of ``args`` with its overrides, checked against its task's rules too."""
    from . import tasks  # torch-free: the tasks load torch only to build models and data

    overrides = list(args.set)
    if getattr(args, "data", None):
        overrides.append(f"data.path={config.toml_value(args.data)}")
    return tasks.check(config.load(args.config, overrides))


def cmd_train(args: argparse.Namespace) -> int:
    from . import distributed
    from .fit import train  # torch import deferred so `--help` is instant

    cfg = load_config(args)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    clean = False
    try:
        res = train(cfg, out, args.allow_data_change)
        clean = True
    finally:
        distributed.shutdown(clean)
    if os.environ.get("RANK", "0") == "0":
        print(f"run folder: {out}")
    return Exit.OK if res["status"] == "completed" else Exit.DIVERGED


def cmd_finetune(args: argparse.Namespace) -> int:
    from .finetune import default_out, finetune

    out = Path(args.out) if args.out else default_out(args.run, args.task, args.random_init)
    res = finetune(args.run, args.task, out, args.set, args.random_init, args.allow_data_change)
    print(f"run folder: {out}")
    return Exit.OK if res["status"] == "completed" else Exit.DIVERGED


def cmd_analyze(args: argparse.Namespace) -> int:
    from .lab import analyze

    out = Path(args.out)
    written = analyze(args.preset, args.set, out, args.only, args.data, args.placements)
    print((out / "summary.md").read_text())
    print("wrote " + ", ".join(str(p) for p in written))
    return Exit.OK


def cmd_translate(args: argparse.Namespace) -> int:
    from .decode import translate, translate_nbest
    from .inference import load_for_eval
    from .textio import read_lines, stdin_chunks

    decoding = _decoding(args, nbest=args.nbest or 1)
    _, model, tok, desc = load_for_eval(Path(args.run), args.average, args.checkpoint)
    print(f"[preln] translating with the {desc}, beam {decoding.beam}", file=sys.stderr)
    chunks = [read_lines(args.input)] if args.input else stdin_chunks()
    done = 0
    for lines in chunks:
        if not lines:
            continue
        if args.nbest:  # fairseq-interactive's H lines: input number, score, text
            for i, hyps in enumerate(translate_nbest(model, tok, lines, decoding), done + 1):
                print("\n".join(f"{i}\t{score:.4f}\t{text}" for text, score in hyps), flush=True)
        else:
            print("\n".join(translate(model, tok, lines, decoding, progress=len(lines) > 100)), flush=True)
        done += len(lines)
    return Exit.OK


def _decoding(args: argparse.Namespace, nbest: int = 1):
    """The decoding options of ``translate`` / ``evaluate`` as one value (checked as it is made)."""
    from .decoding import Decoding

    limits = {"max_len_a": args.max_len_a, "max_len_b": args.max_len_b, "precision": args.precision}
    return Decoding(beam=args.beam, lenpen=args.lenpen, nbest=nbest, **limits)


def cmd_predict(args: argparse.Namespace) -> int:
    import json

    from . import tasks
    from .inference import load_run
    from .predict import classify, fill_masks, pair_of
    from .textio import read_lines, stdin_chunks

    cfg, model, tok = load_run(Path(args.run), args.checkpoint)
    task = tasks.get(cfg.model.task)
    if task.uses != "predict":
        raise RunFolderError(f"{args.run} is a {task.name} run: use preln {task.uses}")
    chunks = [read_lines(args.input)] if args.input else stdin_chunks()
    done = 0
    for lines in chunks:
        if task.pretrains:  # a masked LM: the fillers of each <mask>
            for f in fill_masks(model, tok, lines, args.top_k):
                if args.json:
                    print(json.dumps({"text": f.text, "fillers": [[vars(x) for x in m] for m in f.fillers]}))
                else:
                    masks = " | ".join(", ".join(f"{x.piece} {x.prob:.3f}" for x in m) for m in f.fillers)
                    print(f"{f.text}\t{masks}")
        else:
            pairs, bad = [], None
            for n, line in enumerate(lines, done + 1):
                try:
                    pairs.append(pair_of(line, n))
                except ValueError as e:  # the lines before it are answered first
                    bad = e
                    break
            for pred in classify(model, tok, cfg, pairs):
                if args.json:
                    print(json.dumps(vars(pred)))
                else:
                    print(f"{pred.label}\t" + " ".join(f"{k}={v:.4f}" for k, v in pred.probs.items()))
            if bad is not None:
                sys.stdout.flush()
                raise bad
        sys.stdout.flush()
        done += len(lines)
    return Exit.OK


def cmd_generate(args: argparse.Namespace) -> int:
    from . import tasks
    from .decode import generate
    from .inference import load_run
    from .textio import read_lines, stdin_chunks

    cfg, model, tok = load_run(Path(args.run), args.checkpoint)
    task = tasks.get(cfg.model.task)
    if task.uses != "generate":
        raise RunFolderError(f"{args.run} is a {task.name} run: use preln {task.uses}")
    settings = {"max_new_tokens": args.max_new_tokens, "top_k": args.top_k, "temperature": args.temperature}
    chunks = [read_lines(args.input)] if args.input else stdin_chunks()
    done = 0
    for lines in chunks:  # line n draws from seed + n, however the lines arrive
        if lines:
            print("\n".join(generate(model, tok, lines, **settings, seed=args.seed + done)), flush=True)
        done += len(lines)
    return Exit.OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_run

    res = evaluate_run(
        args.run, tuple(args.splits.split(",")), _decoding(args), args.average, args.limit, args.allow_data_change
    )
    for split, r in res["splits"].items():
        detok = f"sacreBLEU {r['sacrebleu']:.2f} ({r['sacrebleu_signature']}) | " if "sacrebleu" in r else ""
        print(
            f"{split}: {detok}tokenized-lowercased BLEU {r['tok_lc']:.2f} ({r['tok_lc_signature']}) | "
            f"BP {r['bp']:.3f}, length ratio {r['length_ratio']:.3f} | chrF {r['chrf']:.2f} | TER {r['ter']:.2f} | "
            f"{r['sentences']} sentences, {res['checkpoint']}"
        )
    print(f"wrote {Path(args.run) / 'bleu.json'}")
    return Exit.OK


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    from .evaluate import compare_runs

    res = compare_runs([Path(r) for r in args.runs], args.split, args.setting, args.trials, args.method)
    test = "approximate randomization" if args.method == "randomization" else "bootstrap resampling"
    print(f"{res['split']}: {res['sentences']} sentences, paired {test}, baseline {args.runs[0]}")
    for metric in ("BLEU", "chrF"):
        m = res[metric]
        print(f"{metric} ({m['signature']})")
        for name, r in m["systems"].items():
            p = f"  p = {r['p_value']:.4f}" if "p_value" in r else "  (baseline)"
            print(f"  {name:30s} {r['score']:6.2f}  mean {r['mean']:6.2f} ± {r['ci95']:.2f}{p}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {args.json}")
    return Exit.OK


def cmd_prepare(args: argparse.Namespace) -> int:
    import json

    from .locks import folder_lock

    default = {"iwslt14": "data/iwslt14-de-en", "wmt14": "data/wmt14-en-de"}.get(args.corpus, "data/multi30k")
    out = Path(args.out or default)
    if args.corpus == "wmt14" and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    with folder_lock(out):  # one writer per corpus folder
        info = _prepare(args.corpus, Path(args.source) if args.source else None, out, args.workers)
    print(json.dumps(info, indent=1))
    print(f"prepared {out}: train with --data {out}")
    return Exit.OK


def _prepare(corpus: str, source: Path | None, out: Path, workers: int) -> dict:
    from .data.prepare import prepare_iwslt14, prepare_multi30k

    if corpus == "iwslt14":
        return prepare_iwslt14(source, out)
    if corpus == "wmt14":
        from .data.wmt14 import prepare_wmt14

        return prepare_wmt14(source, out, workers)
    return prepare_multi30k(out, source)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .lab import Reproduce, execute, reproduce

    r = Reproduce(
        args.preset,
        args.studies,
        Path(args.out) if args.out else None,
        args.jobs,
        tuple(g.strip() for g in args.gpus.split(",")) if args.gpus else (),
        args.beam,
        Path(args.root) if args.root else None,
        args.jobs_per_gpu,
        args.launcher,
        tuple(key_values(args.slurm, "--slurm").items()),
    )
    try:
        md, page = reproduce(r)
    except execute.RunFailed as e:
        print(f"preln: error: {e}", file=sys.stderr)
        return Exit.GRID_FAILED
    _print_summary(Path(page).parent)
    print(f"report: {page} (and {md})")
    return Exit.OK


def _print_summary(out: Path) -> None:
    from .lab import claims

    text = claims.summary_text(out)
    if text:
        print(text)


def cmd_plot(args: argparse.Namespace) -> int:
    from .lab import plots

    runs = [Path(r) for r in args.runs]
    missing = [str(r) for r in runs if not (r / "metrics.jsonl").is_file()]
    if missing:
        raise FileNotFoundError(f"not a run folder (no metrics.jsonl): {', '.join(missing)}")
    if args.telemetry:
        written = [plots.plot_telemetry(r, Path(args.out or r / "telemetry.png")) for r in runs[:1]]
    else:
        written = [plots.plot_runs(runs, args.metric, args.x, Path(args.out or runs[0] / f"{args.metric}.png"))]
    print("wrote " + ", ".join(map(str, written)))
    return Exit.OK


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_hf

    out = export_hf(Path(args.run), Path(args.out))
    tokenizer = "AutoTokenizer too" if (out / "tokenizer.json").exists() else f"tokenize with {out / 'spm.model'}"
    print(f"wrote {out} (Transformers: from_pretrained({str(out)!r}); {tokenizer})")
    return Exit.OK


def key_values(items: list[str], flag: str) -> dict:
    """``key=value`` items (values in TOML syntax, or bare words) as a dict."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {item!r}: expected key=value")
        out[key.strip()] = config.toml_literal(raw)
    return out


def cmd_report(args: argparse.Namespace) -> int:
    from .lab import report

    md, page = report.report_folder(Path(args.runs))
    _print_summary(Path(args.runs))
    print(f"report: {md} and {page}")
    return Exit.OK


def cmd_config(args: argparse.Namespace) -> int:
    print(config.dumps(load_config(args)), end="")
    return Exit.OK
