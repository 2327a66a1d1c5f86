"""Provenance: a run records the SHA-256 of the corpus files (and token-id cache entry) it trained
on; a resume or an evaluation on changed data is refused with one line naming what changed, or
allowed with --allow-data-change and recorded."""

import hashlib
import json
import shutil

import pytest

from preln.cli import main

from .conftest import ROOT, one_error, sentences

TINY_MT = str(ROOT / "configs" / "tiny-translation.toml")
TINY_MLM = str(ROOT / "configs" / "tiny-mlm.toml")


@pytest.fixture
def corpus(tmp_path):
    """A small parallel corpus (train, valid, test) in a folder of its own."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for split, n in (("train", 300), ("valid", 30), ("test", 20)):
        src = sentences(n, {"train": 1, "valid": 2, "test": 3}[split])
        (folder / f"{split}.de").write_text("".join(s.upper() + "\n" for s in src))
        (folder / f"{split}.en").write_text("".join(s + "\n" for s in src))
    return folder


def mt_args(corpus, out, updates=4):
    sets = ["data.corpus='parallel'", f"data.path='{corpus}'", "data.vocab_size=60", f"train.max_updates={updates}"]
    sets += ["train.progress=false", "train.valid_bleu=false", "train.save_every=2"]
    return ["train", TINY_MT, "--out", str(out), *[x for s in sets for x in ("--set", s)]]


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_run_records_the_digest_of_every_corpus_file(corpus, tmp_path):
    assert main(mt_args(corpus, tmp_path / "run")) == 0
    rec = json.loads((tmp_path / "run" / "data.json").read_text())
    assert rec["splits"] == {s: [f"{s}.de", f"{s}.en"] for s in ("train", "valid", "test")}
    for name, digest in rec["files"].items():
        assert digest == {"bytes": (corpus / name).stat().st_size, "sha256": sha(corpus / name)}


def test_resuming_on_a_changed_corpus_is_refused_then_allowed_and_recorded(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(mt_args(corpus, run)) == 0
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    (corpus / "train.en").write_text((corpus / "train.en").read_text().replace("dog", "wolf"))
    assert main(mt_args(corpus, run, updates=6)) == 2
    one_error(capsys, str(run), "train.en changed", "SHA-256", "--allow-data-change")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before  # nothing trained
    assert main([*mt_args(corpus, run, updates=6), "--allow-data-change"]) == 0
    history = [json.loads(ln) for ln in (run / "history.jsonl").read_text().splitlines()]
    assert any(h.get("data_changed") and "train.en" in h["data_changed"][0] and h["allowed"] for h in history)
    assert json.loads((run / "data.json").read_text())["files"]["train.en"]["sha256"] == sha(corpus / "train.en")
    assert main(mt_args(corpus, run, updates=8)) == 0  # the run now goes on with the data it was resumed on


def test_a_gone_file_and_a_test_split_change_are_told_apart(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(mt_args(corpus, run)) == 0
    (corpus / "test.de").write_text("anders\n" * 20)  # not read by training: resuming is fine
    assert main(mt_args(corpus, run, updates=6)) == 0
    (corpus / "valid.de").unlink()
    assert main(mt_args(corpus, run, updates=8)) == 2
    one_error(capsys, "valid.de is gone")


def test_evaluating_a_changed_split_is_refused_unless_allowed(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(mt_args(corpus, run)) == 0
    capsys.readouterr()
    (corpus / "test.en").write_text((corpus / "test.en").read_text().replace("cat", "mouse"))
    ev = ["evaluate", str(run), "--beam", "1", "--limit", "3"]
    assert main([*ev, "--splits", "test"]) == 2
    one_error(capsys, "test.en changed")
    assert not (run / "bleu.json").exists()
    assert main([*ev, "--splits", "valid"]) == 0  # the valid split is the one trained on
    assert "data_changed" not in json.loads((run / "bleu.json").read_text())
    assert main([*ev, "--splits", "test", "--allow-data-change"]) == 0
    assert "test.en changed" in json.loads((run / "bleu.json").read_text())["data_changed"][0]


def test_a_moved_corpus_with_the_same_files_resumes(corpus, tmp_path):
    run = tmp_path / "run"
    assert main(mt_args(corpus, run)) == 0
    moved = shutil.copytree(corpus, tmp_path / "elsewhere")
    assert main(mt_args(moved, run, updates=6)) == 0
    assert "elsewhere" in (run / "history.jsonl").read_text()  # the move is on record
    (moved / "train.de").write_text("anders\n" * 300)
    assert main(mt_args(moved, run, updates=8)) == 2  # and the moved corpus is checked like the first


def test_a_run_from_before_the_record_gains_one_and_a_damaged_record_is_one_line(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(mt_args(corpus, run)) == 0
    (run / "data.json").unlink()  # as a run from before data.json was kept
    assert main(mt_args(corpus, run, updates=6)) == 0
    assert json.loads((run / "data.json").read_text())["files"]["train.de"]["sha256"] == sha(corpus / "train.de")
    (run / "data.json").write_text('{"corpus": ')
    assert main(mt_args(corpus, run, updates=8)) == 2
    one_error(capsys, "data.json: damaged")


def test_a_masked_lm_run_records_its_text_and_token_id_cache_entry(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("".join(s + "\n" for s in sentences(400, 7)))
    sets = [f"data.path='{text}'", "data.vocab_size=60", "train.progress=false", "train.save_every=2"]
    args = ["train", TINY_MLM, "--out", str(tmp_path / "mlm"), *[x for s in sets for x in ("--set", s)]]
    assert main([*args, "--set", "train.max_updates=2"]) == 0
    rec = json.loads((tmp_path / "mlm" / "data.json").read_text())
    assert rec["splits"] == {"train": ["text.txt"], "valid": ["text.txt"]}
    assert rec["files"]["text.txt"]["sha256"] == sha(text)
    assert rec["token_ids"]["entry"] and {"train.ids.npy", "valid.offsets.npy"} <= set(rec["token_ids"])
    with open(text, "a") as f:
        f.write("one more line\n")
    assert main([*args, "--set", "train.max_updates=4"]) == 2
    one_error(capsys, "text.txt changed", "bytes")
