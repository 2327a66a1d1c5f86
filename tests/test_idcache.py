"""The token-id cache for every corpus kind, and the remembered file digests it keys by."""

import dataclasses
import gzip
import hashlib
import os
import random
import re

import numpy as np
import pytest

from preln import config
from preln.data import corpus, datasets, digests, sources, textlines
from preln.data.tokenizer import EOS, Tokenizer
from preln.tasks import load_data

from .conftest import ROOT, require_data


def test_translation_pairs_are_tokenized_once_and_equal_a_direct_encoding(tmp_path, monkeypatch):
    require_data("multi30k")
    over = [f"data.cache_dir='{tmp_path / 'cache'}'", "data.max_train_examples=600", "data.max_len=24"]
    cfg = config.load(ROOT / "configs" / "tiny-translation.toml", over)
    first, tok = load_data(cfg)
    assert "token ids cached for the next run" in first.notes
    text, _ = datasets.read_translation(cfg)  # the reference: every pair encoded on its own
    for split, (src, tgt) in text.items():
        want = [
            (s + [EOS], t) for s, t in zip(tok.encode(src), tok.encode(tgt)) if len(s) + 1 <= 24 and len(t) + 1 <= 24
        ]
        assert [first.examples[split][i] for i in range(len(first.examples[split]))] == want
    assert any("longer than 24 tokens" in n for n in first.notes)  # max_len dropped some: the test sees the rule

    monkeypatch.setattr(Tokenizer, "encode", lambda self, texts: pytest.fail("re-tokenized"))
    monkeypatch.setattr(datasets, "read_translation", lambda cfg: pytest.fail("read the corpus again"))
    second, _ = load_data(cfg)
    assert "token ids from the cache" in second.notes
    assert isinstance(second.examples["train"].columns[0].ids, np.memmap)  # mapped, not a list in memory
    assert list(second.batches["train"]) == list(first.batches["train"])
    assert second.batch("train", 1, 0).tensors["src"].equal(first.batch("train", 1, 0).tensors["src"])
    monkeypatch.undo()
    other, _ = load_data(config.override(cfg, ["data.max_train_examples=500"]))  # other settings: other ids
    assert "token ids cached for the next run" in other.notes and len(other.examples["train"]) < 600


def test_a_remembered_digest_is_not_trusted_after_the_file_is_written(tmp_path, monkeypatch):
    """Same size, mtime set back: the write still changed the ctime, so the file is hashed again."""
    # Remember even a file written just now: its timestamps may equal or pass time.time_ns()
    # (a coarse or skewed file-system clock), so no finite threshold would do.
    monkeypatch.setattr(digests, "FRESH_S", float("-inf"))
    f, memo = tmp_path / "corpus.txt", tmp_path / "digests"
    f.write_text("alpha beta\n")
    first = digests.file_sha256(f, memo)
    assert list(memo.iterdir()) and digests.file_sha256(f, memo) == first
    st = f.stat()
    f.write_text("gamma delt\n")  # the same number of bytes
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert digests.file_sha256(f, memo) == digests.sha256_of(f) != first


def test_a_file_written_just_now_is_hashed_but_not_remembered(tmp_path):
    f, memo = tmp_path / "corpus.txt", tmp_path / "digests"
    f.write_text("alpha\n")
    assert digests.file_sha256(f, memo) == digests.sha256_of(f)
    assert not memo.exists()  # its timestamps could not yet tell a write in the same clock tick apart


def lines_then_split(path, d, raw):
    """The text reader as it was (the whole file, a list of strings): the reference."""
    lines = [ln.strip() for ln in corpus.lines_of(path, raw)]
    corpus.refuse_subword_joins(path, lines)
    empty = sum(1 for ln in lines if not ln)
    lines = [ln for ln in lines if ln]
    if d.mlm_pairs:
        lines = [f"{a}{sources.PAIR}{b}" for a, b in zip(lines[0::2], lines[1::2])]
    if len(lines) < 2:
        raise corpus.CorpusError(
            f"{path}: {len(lines)} non-empty line(s); a text corpus needs a train and a valid part"
        )
    random.Random(0).shuffle(lines)
    n_valid = max(1, int(len(lines) * d.valid_fraction))
    valid, train = lines[:n_valid], lines[n_valid:]
    train, valid = train[: d.max_train_examples or None], valid[: d.max_valid_examples or None]
    return {"train": train, "valid": valid}, ([f"dropped {empty} empty lines"] if empty else [])


TEXTS = [
    "one\ntwo\r\nthree\rfour\n\n  \nfive\u00a0\n\u3000six  \nseven",
    "a\r\r\nb\r\n\r\nc\r",
    "x\n" * 7 + "last\n\n",
    "".join(f"line {i} with words {'é' * (i % 3)}\n" for i in range(101)),
]


@pytest.mark.parametrize("block", [3, 7, 1 << 24])
@pytest.mark.parametrize("pairs", [False, True])
def test_the_block_reader_gives_the_whole_file_readers_lines_split_and_notes(tmp_path, monkeypatch, block, pairs):
    monkeypatch.setattr(textlines, "BLOCK", block)
    for n, text in enumerate(TEXTS):
        for name in (f"t{n}.txt", f"t{n}.txt.gz"):
            path = tmp_path / name
            raw = gzip.compress(text.encode()) if name.endswith(".gz") else text.encode()
            path.write_bytes(raw)
            d = config.DataConfig(corpus="text", path=str(path), valid_fraction=0.2, mlm_pairs=pairs)
            d = dataclasses.replace(d, max_train_examples=5) if n == 3 else d
            try:
                want = lines_then_split(path, d, raw)
            except corpus.CorpusError as e:
                with pytest.raises(corpus.CorpusError, match=re.escape(str(e))):
                    sources.read_text_source(path, d)
                continue
            source, sha = sources.read_text_source(path, d)
            assert sha == hashlib.sha256(raw).hexdigest() and source.notes == want[1]
            scratch = tmp_path / f"scratch-{n}-{name}"
            scratch.mkdir()
            got = source.encode(FakeTok(), scratch)
            for split in ("train", "valid"):
                assert [FakeTok.text(got.segments[split][i]) for i in range(len(got.segments[split]))] == want[0][split]
            assert sorted(source.vocab_text()) == sorted(x for ln in want[0]["train"] for x in ln.split(sources.PAIR))


class FakeTok:
    """Characters as ids (ids of the encoded segments read back as text)."""

    def __len__(self):
        return 1 << 16

    def encode(self, texts):
        return [[ord(c) + 10 for c in t] for t in texts]

    @staticmethod
    def text(ids):
        body = ids[1:-1]  # <cls> ... <sep>
        return "".join(chr(i - 10) if i != EOS else sources.PAIR for i in body)


def test_the_block_reader_names_the_line_that_is_not_utf8_and_refuses_bpe_output(tmp_path, monkeypatch):
    monkeypatch.setattr(textlines, "BLOCK", 5)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good\nfine\r\nalso\n\xff broken\nok\n")
    with pytest.raises(corpus.CorpusError, match=r"bad.txt: line 4 is not valid UTF-8"):
        sources.read_text_source(bad, config.DataConfig(corpus="text", path=str(bad)))
    bpe = tmp_path / "bpe.txt"
    bpe.write_text("".join(f"w@@ ord {i}\n" for i in range(20)) + "plain\n")
    with pytest.raises(corpus.CorpusError, match=r"20 of 21 lines \(first: line 1\) have subword-nmt"):
        sources.read_text_source(bpe, config.DataConfig(corpus="text", path=str(bpe)))


def test_batches_are_cached_beside_the_entry_and_rebuilt_when_damaged(tmp_path, monkeypatch):
    require_data("multi30k")
    over = [f"data.cache_dir='{tmp_path / 'cache'}'", "data.max_train_examples=600"]
    cfg = config.load(ROOT / "configs" / "tiny-translation.toml", over)
    first, _ = load_data(cfg)
    want = {s: list(b) for s, b in first.batches.items()}
    folder = first.entry.with_name(f"{first.entry.name}.batches")
    assert sorted(p.name for p in folder.glob("train-*")) == [
        "train-1024-8.bounds.npy",
        "train-1024-8.json",
        "train-1024-8.order.npy",
    ]
    monkeypatch.setattr(datasets, "token_batches", lambda *a: pytest.fail("batched again"))
    second, _ = load_data(cfg)
    assert isinstance(second.batches["train"].order, np.memmap)
    assert {s: list(b) for s, b in second.batches.items()} == want
    monkeypatch.undo()
    order = folder / "train-1024-8.order.npy"
    raw = bytearray(order.read_bytes())
    raw[-1] ^= 0xFF  # a damaged file: still loadable, its checksum differs
    order.write_bytes(bytes(raw))
    third, _ = load_data(cfg)
    assert {s: list(b) for s, b in third.batches.items()} == want
    other, _ = load_data(config.override(cfg, ["data.max_tokens=512"]))  # another budget: other batches
    assert len(other.batches["train"]) > len(want["train"])
