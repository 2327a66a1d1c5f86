"""Every writing command takes the lock of what it writes: `report` (a runs or run folder) and
`prepare` (a corpus folder) as `train`, `evaluate` and `reproduce` do; a refusal leaves nothing."""

import gzip
import subprocess
import sys

import pytest

from preln.cli import main
from preln.locks import folder_lock, hold_lock, release_lock

from .conftest import one_error


def holder(folder):
    """Another process holding ``folder``'s lock until its stdin closes (it prints once it holds it)."""
    code = (
        "import sys; from pathlib import Path; from preln.locks import hold_lock; "
        f"lk = hold_lock(Path({str(folder)!r})); print('held', flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"  # waits on the event, not on a clock
    return proc


def multi30k_source(folder):
    """A stand-in for the Multi30k files with the line counts `prepare multi30k` checks."""
    from preln.data.prepare import MULTI30K_LINES

    folder.mkdir()
    for split, n in MULTI30K_LINES.items():
        for lang in ("de", "en"):
            with gzip.open(folder / f"{split}.{lang}.gz", "wt") as f:
                f.write("".join(f"{lang} {i}\n" for i in range(n)))
    return folder


def test_report_refuses_a_folder_another_process_writes(tmp_path, capsys):
    runs = tmp_path / "runs"
    (runs / "r").mkdir(parents=True)
    (runs / "r" / "metrics.jsonl").write_text('{"kind": "valid", "update": 1, "valid_nll": 3.0}\n')
    proc = holder(runs)
    try:
        assert main(["report", str(runs)]) == 2
        one_error(capsys, str(runs), "being written by another preln process", f"PID {proc.pid}")
        assert not (runs / "report.md").exists()
    finally:
        proc.stdin.close()
        proc.wait()
    assert main(["report", str(runs)]) == 0  # once it has ended
    assert (runs / "report.md").is_file() and not list(runs.glob(".*.tmp"))


def test_prepare_refuses_a_corpus_folder_another_process_writes(tmp_path, capsys):
    src, out = multi30k_source(tmp_path / "src"), tmp_path / "out"
    proc = holder(out)
    try:
        assert main(["prepare", "multi30k", "--source", str(src), "--out", str(out)]) == 2
        one_error(capsys, str(out), "being written by another preln process")
        assert {p.name for p in out.iterdir()} == {".lock"}
    finally:
        proc.stdin.close()
        proc.wait()
    assert main(["prepare", "multi30k", "--source", str(src), "--out", str(out)]) == 0
    assert len(list(out.glob("*.gz"))) == 6 and not list(out.glob(".*.tmp"))


def test_a_refused_prepare_leaves_no_folder_behind(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prepare", "multi30k", "--source", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    one_error(capsys, "missing")
    assert not out.exists()


def test_folder_lock_is_exclusive_and_released(tmp_path):
    with folder_lock(tmp_path / "f"):
        with pytest.raises(Exception, match="being written by another preln process"):
            hold_lock(tmp_path / "f")
    release_lock(hold_lock(tmp_path / "f"))  # free again afterwards
