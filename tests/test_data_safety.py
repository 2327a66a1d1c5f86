"""Three ways to lose or poison data: a log rewritten in place, a corpus that changes between
being hashed and being read, a run that depends on the shared cache staying put."""

import json
import os
import resource
import shutil
import subprocess
import sys
import textwrap
import threading

from preln import config
from preln.data import idcache
from preln.fit import fit
from preln.runs import RunFolder
from preln.tasks import load_data
from preln.trainer import Trainer

from .conftest import ROOT, require_data


def test_a_resume_that_dies_while_dropping_redone_lines_keeps_the_logs_whole(tmp_path):
    """The resume drops the log lines after its checkpoint. If the process dies while it rewrites a
    log (here: the file-size limit is hit, as a full disk would), the log must still be whole."""
    run = tmp_path / "run"
    run.mkdir()
    lines = [json.dumps({"kind": "train", "update": u, "loss": 1.0 / u, "pad": "x" * 60}) for u in range(1, 3001)]
    text = "".join(ln + "\n" for ln in lines)
    (run / "telemetry.jsonl").write_text(text)
    (run / "metrics.jsonl").write_text(text)
    limit = len(text) // 3  # more than the kept lines need in total, less than one log
    script = textwrap.dedent(
        f"""
        import resource, signal
        from pathlib import Path
        from preln.runs import RunFolder
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        RunFolder(Path({str(run)!r})).truncate_metrics(2000)
        """
    )
    subprocess.run([sys.executable, "-c", script], capture_output=True)
    for name in ("metrics.jsonl", "telemetry.jsonl"):
        got = (run / name).read_text().splitlines()
        assert got in (lines, lines[:2000]), f"{name}: {len(got)} lines left"
    assert resource.getrlimit(resource.RLIMIT_FSIZE)  # (the limit was the child's only)
    RunFolder(run).truncate_metrics(2000)  # without the limit: the redone lines are dropped
    assert (run / "telemetry.jsonl").read_text().splitlines() == lines[:2000]
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")], "a temporary file was left"


def test_the_token_id_cache_keys_the_text_it_read(tmp_path, monkeypatch):
    """A corpus that changes between being hashed and being read (here: right after the hash)
    must not leave A's key holding B's ids: what is tokenized is what is hashed."""
    a = "".join(f"alpha line {i} with some words {i % 7}\n" for i in range(300))
    b = "".join(f"beta {i}\n" for i in range(30))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(a)
    cache = tmp_path / "cache"
    over = [f"data.path='{corpus}'", f"data.cache_dir='{cache}'", "data.vocab_size=100", "data.valid_fraction=0.1"]
    cfg = config.load(ROOT / "configs" / "tiny-mlm.toml", over)
    real = idcache.file_sha256

    def hash_then_change(path, *memo):
        digest = real(path, *memo)
        if path == corpus:  # another process rewrites the corpus just after it was hashed
            path.write_text(b)
        return digest

    monkeypatch.setattr(idcache, "file_sha256", hash_then_change)
    load_data(cfg)
    monkeypatch.undo()
    for text, n in ((a, 300), (b, 30)):  # each text, as a plain file, must get its own ids from the cache
        plain = tmp_path / f"plain-{n}.txt"
        plain.write_text(text)
        data, _ = load_data(config.override(cfg, [f"data.path='{plain}'"]))
        assert len(data.examples["train"]) + len(data.examples["valid"]) == n


def test_a_text_corpus_that_can_be_read_once_is_read_once(tmp_path):
    """A named pipe gives its text once: hashing it and then reading it again would wait forever."""
    a = "".join(f"alpha line {i} with some words {i % 7}\n" for i in range(300))
    fifo = tmp_path / "corpus.txt"
    os.mkfifo(fifo)
    over = [f"data.path='{fifo}'", f"data.cache_dir='{tmp_path / 'cache'}'", "data.vocab_size=100"]
    cfg = config.load(ROOT / "configs" / "tiny-mlm.toml", [*over, "data.valid_fraction=0.1"])

    def serve():
        with open(fifo, "w") as f:
            f.write(a)

    threading.Thread(target=serve, daemon=True).start()
    got = []
    reader = threading.Thread(target=lambda: got.append(load_data(cfg)[0]), daemon=True)
    reader.start()
    reader.join(120)  # a hang detector: a second read of the pipe never returns
    assert got, "load_data read the pipe twice and is waiting for a second writer"
    assert len(got[0].examples["train"]) + len(got[0].examples["valid"]) == 300


def test_a_running_run_survives_its_cache_folder_being_removed(tmp_path, monkeypatch):
    """The trainer keeps its own copy of the tokenizer (the run folder's spm.model): clearing
    PRELN_CACHE while it trains must not stop it at the next checkpoint."""
    require_data("multi30k")
    cache = tmp_path / "cache"
    monkeypatch.setenv("PRELN_CACHE", str(cache))
    sets = ["train.max_updates=6", "train.save_every=2", "train.progress=false", "train.valid_bleu=false"]
    cfg = config.load(ROOT / "configs" / "tiny-translation.toml", [*sets, "data.max_train_examples=400"])
    with Trainer(cfg, tmp_path / "run") as t:
        shutil.rmtree(cache)
        fit(t)
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "completed" and status["update"] == 6
