"""Damage as a property: every file a run folder or the cache holds, truncated, emptied, replaced by
garbage or removed, is either recovered from (the resumed run ends as the undamaged one would, and
whatever cannot be redone is named in a warning) or refused with one error line naming it."""

import contextlib
import io
import json
import os
import random
import shutil

import pytest

from preln.cli import main

from .conftest import ROOT, sentences

TINY_MT = str(ROOT / "configs" / "tiny-translation.toml")
TINY_MLM = str(ROOT / "configs" / "tiny-mlm.toml")
DAMAGES = ("truncated", "emptied", "garbage", "removed")
SETS = ["data.vocab_size=60", "train.progress=false", "train.threads=1"]


def write_corpus(folder):
    lines = sentences(300, 0)
    folder.mkdir()
    for split, part in (("train", lines[:240]), ("valid", lines[240:280]), ("test", lines[280:])):
        (folder / f"{split}.de").write_text("".join(s.upper() + "\n" for s in part))
        (folder / f"{split}.en").write_text("".join(s + "\n" for s in part))
    (folder / "text.txt").write_text("".join(s + "\n" for s in lines))
    return folder


def run(args: list[str]) -> tuple[int, list[str]]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(args)
    return int(rc), err.getvalue().strip().splitlines()


def mt(corpus, out, updates: int) -> list[str]:
    sets = [*SETS, "data.corpus='parallel'", f"data.path='{corpus}'", "train.valid_bleu=false", "train.save_every=2"]
    sets += ["train.keep_last=3", "train.telemetry_every=2", f"train.max_updates={updates}"]
    return ["train", TINY_MT, "--out", str(out), *[x for s in sets for x in ("--set", s)]]


def train_lines(out) -> list[tuple[int, float]]:
    path = out / "metrics.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    return [(r["update"], r["loss"]) for r in rows if r.get("kind") == "train"]


def telemetry(out) -> list[dict]:
    path = out / "telemetry.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def damage(path, kind: str) -> None:
    data = path.read_bytes()
    if kind == "removed":
        path.unlink()
    elif kind == "emptied":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(random.Random(len(data)).randbytes(max(64, len(data))))


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A run stopped at 4 updates (checkpoints at 2 and 4, best, telemetry) and the same run
    trained to 6 without a stop, on a small generated corpus."""
    root = tmp_path_factory.mktemp("damage")
    corpus = write_corpus(root / "corpus")
    assert run(mt(corpus, root / "base", 4))[0] == 0
    assert run(mt(corpus, root / "reference", 6))[0] == 0
    return root, corpus


RUN_FILES = [
    "config.toml",
    "spm.model",
    "status.json",
    "data.json",
    "metrics.jsonl",
    "telemetry.jsonl",
    *(f"checkpoints/update_0000004/{f}" for f in ("model.safetensors", "trainer.safetensors", "trainer.json")),
    "checkpoints/update_0000004/manifest.json",
]


@pytest.mark.parametrize("name", RUN_FILES)
def test_a_damaged_run_file_is_recovered_from_or_named(made, tmp_path, name):
    root, corpus = made
    reference = train_lines(root / "reference")
    for kind in DAMAGES:
        case = tmp_path / kind
        shutil.copytree(root / "base", case)
        damage(case / name, kind)
        rc, err = run(mt(corpus, case, 6))
        named = name.split("/")[-1] if not name.startswith("checkpoints/") else "update_0000004"
        if rc == 2:
            assert err[-1].startswith("preln: error: ") and named in err[-1], (name, kind, err[-1:])
            assert not (case / "checkpoints" / "update_0000006").exists()  # nothing trained
            continue
        assert rc == 0, (name, kind, err[-3:])
        got = train_lines(case)
        assert [x for x in got if x[0] > 4] == [x for x in reference if x[0] > 4], (name, kind)  # ends as it would
        told = any("warning" in ln and named in ln for ln in err)
        whole = got == reference and telemetry(case) == telemetry(root / "reference")
        assert whole or told, (name, kind, "lines lost without a warning naming the file")
        if name.startswith("checkpoints/"):
            assert told, (name, kind, "a damaged checkpoint skipped without a warning")


def test_a_damaged_best_checkpoint_is_named_when_used(made, tmp_path, capsys):
    root, _ = made
    for kind in DAMAGES:
        case = tmp_path / kind
        shutil.copytree(root / "base", case)
        damage(case / "checkpoints" / "best" / "model.safetensors", kind)
        (case / "in.txt").write_text("A DOG\n")
        args = ["translate", str(case), "--checkpoint", "best", "--input", str(case / "in.txt")]
        assert main(args) == 2, kind
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("preln: error: ") and "best" in err[-1] and "damaged" in err[-1], (kind, err[-1:])


CACHE_FILES = [
    "meta.json",
    "train.counts.npy",
    "train.ids.npy",
    "train.offsets.npy",
    "valid.ids.npy",
    "valid.offsets.npy",
]
BATCH_FILES = [f"train-1024-8.{f}" for f in ("json", "order.npy", "bounds.npy")]


def test_a_damaged_cache_file_is_rebuilt_with_a_warning_or_silently_retrained(made, tmp_path, monkeypatch):
    """The token-id cache entry (every file), its tokenizer pointer and the cached tokenizer."""
    _, corpus = made
    sets = [*SETS, f"data.path='{corpus / 'text.txt'}'", "train.max_updates=2"]

    def mlm(out):
        return ["train", TINY_MLM, "--out", str(out), *[x for s in sets for x in ("--set", s)]]

    cache0 = tmp_path / "cache0"
    monkeypatch.setenv("PRELN_CACHE", str(cache0))
    assert run(mlm(tmp_path / "reference"))[0] == 0
    reference = train_lines(tmp_path / "reference")
    (entry,) = [p.name for p in (cache0 / "ids").iterdir() if p.is_dir() and not p.name.endswith(".batches")]
    targets = [f"ids/{entry}/{f}" for f in CACHE_FILES] + [f"ids/{entry}.batches/{f}" for f in BATCH_FILES]
    targets += [p.relative_to(cache0).as_posix() for p in cache0.rglob("tokenizer-*.txt")]
    targets += [p.relative_to(cache0).as_posix() for p in cache0.glob("spm-*.model")]
    assert len(targets) == len(CACHE_FILES) + len(BATCH_FILES) + 2 and all((cache0 / t).is_file() for t in targets)
    for name in targets:
        for kind in DAMAGES:
            cache = tmp_path / f"cache-{kind}"
            shutil.rmtree(cache, ignore_errors=True)
            shutil.copytree(cache0, cache)
            monkeypatch.setenv("PRELN_CACHE", str(cache))
            damage(cache / name, kind)
            out = tmp_path / f"run-{kind}"
            shutil.rmtree(out, ignore_errors=True)
            rc, err = run(mlm(out))
            assert rc == 0 and train_lines(out) == reference, (name, kind, err[-2:])
            silent = name.endswith(".json") and ".batches/" in name and kind == "removed"  # as if never built
            if name.startswith("ids/") and not name.startswith("ids/tokenizer-") and not silent:
                assert any("warning: token-id cache" in ln and entry in ln for ln in err), (name, kind)
    assert os.environ["PRELN_CACHE"] != str(cache0)


REPORT_FILES = ["metrics.jsonl", "status.json", "config.toml", "bleu.json", "history.jsonl", "data.json"]


def test_a_damaged_file_a_report_reads_is_skipped_or_named(made, tmp_path):
    """`preln report RUN` on a run whose files are damaged: a report (what is unreadable left out)
    or one line naming the file."""
    root, _ = made
    base = tmp_path / "base"
    shutil.copytree(root / "reference", base)
    (base / "bleu.json").write_text(json.dumps({"splits": {"test": {"tok_lc": 1.5, "sacrebleu": 1.2}}}))
    (base / "history.jsonl").write_text(json.dumps({"changed": ["train.max_updates: 4 -> 6"]}) + "\n")
    for name in REPORT_FILES:
        for kind in DAMAGES:
            case = tmp_path / f"{name}-{kind}"
            shutil.copytree(base, case)
            damage(case / name, kind)
            rc, err = run(["report", str(case)])
            if rc == 2:
                assert err[-1].startswith("preln: error: ") and name.split(".")[0] in err[-1], (name, kind, err[-1:])
            else:
                assert rc == 0 and (case / "report.md").is_file(), (name, kind, err[-2:])
