"""A text corpus tokenized once: token ids cached on disk and memory-mapped.

Tokenizing 15M words takes minutes and a Python list of every segment takes gigabytes, so the
masked-LM corpus is tokenized once into two flat arrays per split (``ids``, and ``offsets`` into
them) under ``<cache>/ids/``; a run, a resumed run and the next run of a grid map them from disk
in milliseconds and hold no list of segments. An entry is keyed by the text file's SHA-256, the
split settings and the vocabulary's SHA-256: other text, another split or another vocabulary is
another entry. The vocabulary trained for a (text, split, vocabulary settings) is remembered by a
small pointer file, so a fresh run finds both without reading the text. Entries are written to a
temporary folder and renamed into place: concurrent runs never see half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import atomic
from ..config import DataConfig
from .batching import encode_pair
from .corpus import CorpusError, lines_of, read_bytes, refuse_subword_joins
from .tokenizer import BOS, EOS, Tokenizer, default_cache_dir, train_or_load

VERSION = "ids-v2"  # v2: entries carry their files' SHA-256, checked on every open
_CHUNK = 20_000  # segments encoded at a time: the build's memory stays bounded


class Segments:
    """Token-id sequences stored flat: ``ids[offsets[i]:offsets[i + 1]]`` is sequence i. Indexing
    gives a list of ints; the arrays may be memory-mapped files."""

    def __init__(self, ids: np.ndarray, offsets: np.ndarray) -> None:
        self.ids, self.offsets = ids, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> list[int]:
        return self.ids[self.offsets[i] : self.offsets[i + 1]].tolist()

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def head(self, n: int) -> Segments:
        """The first ``n`` sequences (all when n <= 0), sharing the arrays."""
        return self if n <= 0 or n >= len(self) else Segments(self.ids, self.offsets[: n + 1])

    def save(self, folder: Path, name: str) -> None:
        np.save(folder / f"{name}.ids.npy", self.ids)
        np.save(folder / f"{name}.offsets.npy", self.offsets)

    @classmethod
    def open(cls, folder: Path, name: str) -> Segments:
        return cls(np.load(folder / f"{name}.ids.npy", mmap_mode="r"), np.load(folder / f"{name}.offsets.npy"))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _key(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, (VERSION, *parts))).encode()).hexdigest()[:20]


def read_text(path: Path, d: DataConfig, raw: bytes) -> tuple[dict[str, list[str]], list[str]]:
    """The corpus's non-empty lines (of ``raw``, the bytes read from ``path``), shuffled by a fixed
    seed (independent of the training seed) and split into train and valid
    (``data.valid_fraction``), each cut to its limit."""
    lines = [ln.strip() for ln in lines_of(path, raw)]
    refuse_subword_joins(path, lines)
    empty = sum(1 for ln in lines if not ln)
    lines = [ln for ln in lines if ln]
    if d.mlm_pairs:  # consecutive segments of the corpus, paired before the shuffle
        lines = [f"{a}{PAIR}{b}" for a, b in zip(lines[0::2], lines[1::2])]
    if len(lines) < 2:
        raise CorpusError(f"{path}: {len(lines)} non-empty line(s); a text corpus needs a train and a valid part")
    random.Random(0).shuffle(lines)
    n_valid = max(1, int(len(lines) * d.valid_fraction))
    valid, train = lines[:n_valid], lines[n_valid:]
    if d.max_train_examples:
        train = train[: d.max_train_examples]
    if d.max_valid_examples:
        valid = valid[: d.max_valid_examples]
    return {"train": train, "valid": valid}, ([f"dropped {empty} empty lines"] if empty else [])


PAIR = "\t"
"""Joins the two segments of a pair in ``read_text``'s lines (a tab never survives ``strip``-ped
corpus lines as content: the corpus reader keeps one segment a line)."""


def encode(tok: Tokenizer, lines: list[str], max_len: int) -> tuple[Segments, int]:
    """``<cls> ids <sep>`` per line, or ``<cls> A <sep> B <sep>`` per pair (lines joined by ``PAIR``;
    ``batching.encode_pair``, the longer segment cut first); (segments, number truncated)."""
    ids, offsets, truncated = [], [np.zeros(1, np.int64)], 0
    end = 0
    for start in range(0, len(lines), _CHUNK):
        chunk = lines[start : start + _CHUNK]
        if chunk and PAIR in chunk[0]:  # a pair corpus: every line is a pair
            halves = [ln.split(PAIR, 1) for ln in chunk]
            a, b = (tok.encode(list(h)) for h in zip(*halves))
            truncated += sum(len(x) + len(y) + 3 > max_len for x, y in zip(a, b))
            seqs = [encode_pair(x, y, max_len)[0] for x, y in zip(a, b)]
        else:
            enc = tok.encode(chunk)
            truncated += sum(len(e) > max_len - 2 for e in enc)
            seqs = [[BOS, *e[: max_len - 2], EOS] for e in enc]
        lens = np.fromiter((len(s) for s in seqs), np.int64, len(seqs))
        ids.append(np.fromiter((t for s in seqs for t in s), np.int32, int(lens.sum())))
        offsets.append(end + np.cumsum(lens))
        end += int(lens.sum())
    return Segments(np.concatenate(ids) if ids else np.zeros(0, np.int32), np.concatenate(offsets)), truncated


@dataclass(frozen=True)
class TextCorpus:
    """A text corpus's token ids, as ``load_text_corpus`` found or built them."""

    segments: dict[str, Segments]
    """train and valid."""
    tok: Tokenizer
    notes: list[str]
    cached: bool
    """Whether the ids came from the cache (else they were built, and cached, now)."""
    entry: Path
    """The cache entry the ids are mapped from."""

    def provenance(self) -> dict[str, str]:
        """The entry's name and its files' SHA-256 (checked against them when it was opened)."""
        return {"entry": self.entry.name, **_meta(self.entry)["files"]}


def load_text_corpus(path: Path, d: DataConfig, tokenizer_file: Path | None = None) -> TextCorpus:
    """The corpus's train/valid token ids and tokenizer, from the cache or built and cached.
    ``tokenizer_file`` (a resumed or fine-tuned run's vocabulary) is used instead of training one.
    A hit reads the file only to hash it; a miss reads it once, and the entry is keyed by the hash
    of exactly the bytes it tokenized (a file that changes meanwhile cannot key another's ids)."""
    if path.is_dir():
        raise CorpusError(f"{path}: a text corpus is one file, one segment a line")
    cache = (Path(d.cache_dir) if d.cache_dir else default_cache_dir()) / "ids"
    if path.is_file():  # a pipe or a device cannot be read twice: it is read once, below
        hit = _lookup(cache, file_sha256(path), d, tokenizer_file)
        if hit is not None:
            return hit
    raw = read_bytes(path)
    text_sha = hashlib.sha256(raw).hexdigest()
    hit = _lookup(cache, text_sha, d, tokenizer_file)
    if hit is not None:
        return hit
    text, notes = read_text(path, d, raw)
    split = _split_key(text_sha, d)
    tok = Tokenizer(tokenizer_file) if tokenizer_file else _remembered(_pointer(cache, split, d))
    if tok is None:
        segments = [x for ln in text["train"] for x in ln.split(PAIR)]  # the vocabulary of segments, not pairs
        tok = train_or_load(segments, d.vocab_size, d.spm_model, d.cache_dir)
        _write_atomic(_pointer(cache, split, d), str(tok.path.resolve()))
    segments = {}
    for name, lines in text.items():
        segments[name], truncated = encode(tok, lines, d.max_len)
        if truncated:
            notes.append(f"{name}: truncated {truncated} segments to {d.max_len} tokens")
    entry = cache / _key(split, tok.sha256(), d.max_len)
    _store(entry, segments, {"notes": notes, "text": str(path), "tokenizer": str(tok.path), "max_len": d.max_len})
    opened = _open(entry, len(tok))
    if opened is None:
        raise CorpusError(f"{entry}: the token-id cache entry just written does not read back (disk full or failing?)")
    return TextCorpus(opened, tok, notes, False, entry)


def _split_key(text_sha: str, d: DataConfig) -> str:
    pairs = ("pairs",) if d.mlm_pairs else ()  # single segments keep the keys they always had
    return _key(text_sha, d.valid_fraction, d.max_train_examples, d.max_valid_examples, *pairs)


def _pointer(cache: Path, split: str, d: DataConfig) -> Path:
    """The file naming the vocabulary trained for this text, split and vocabulary settings."""
    return cache / f"tokenizer-{_key(split, d.vocab_size, d.spm_model)}.txt"


def _lookup(cache: Path, text_sha: str, d: DataConfig, tokenizer_file: Path | None) -> TextCorpus | None:
    """``load_text_corpus``'s result from the cache for the text with this hash, or None."""
    split = _split_key(text_sha, d)
    tok = Tokenizer(tokenizer_file) if tokenizer_file else _remembered(_pointer(cache, split, d))
    if tok is None:
        return None
    entry = cache / _key(split, tok.sha256(), d.max_len)
    if not entry.exists():
        return None
    opened = _open(entry, len(tok))  # an entry is renamed into place whole: one without meta.json is damaged
    if opened is None:  # damaged: set aside (named in the warning) and built afresh by the caller
        aside = entry.with_name(f"{entry.name}.damaged-{os.getpid()}-{time.time_ns()}")
        try:
            os.rename(entry, aside)
        except OSError:  # set aside by another run at the same moment, or not renamable: gone either way
            shutil.rmtree(entry, ignore_errors=True)
        print(
            f"[preln] warning: token-id cache {entry} is damaged; set aside as {aside.name}, rebuilding",
            file=sys.stderr,
        )
        return None
    return TextCorpus(opened, tok, _meta(entry)["notes"], True, entry)


def _remembered(pointer: Path) -> Tokenizer | None:
    """The tokenizer trained earlier for this text and these settings, if its file still exists."""
    try:
        target = Path(pointer.read_text().strip())
    except (OSError, ValueError):  # gone, unreadable, or not text (damaged): train the vocabulary again
        return None
    return Tokenizer(target) if target.is_file() else None


def _meta(entry: Path) -> dict:
    return json.loads((entry / "meta.json").read_text())


def _open(entry: Path, vocab: int) -> dict[str, Segments] | None:
    """The entry's splits, memory-mapped, after checking every file against the SHA-256 its
    ``meta.json`` recorded (and the ids against the vocabulary); None when anything is off."""
    try:
        meta = _meta(entry)
        if any(file_sha256(entry / name) != digest for name, digest in meta["files"].items()):
            return None
        out = {name: Segments.open(entry, name) for name in ("train", "valid")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # unreadable, truncated, not ours
        return None
    for seg in out.values():
        if len(seg.offsets) < 2 or seg.offsets[-1] != len(seg.ids) or (len(seg.ids) and int(seg.ids.max()) >= vocab):
            return None
    return out


def _store(entry: Path, segments: dict[str, Segments], meta: dict) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=".tmp-"))
    for name, seg in segments.items():
        seg.save(tmp, name)
    files = {f.name: file_sha256(f) for f in sorted(tmp.iterdir())}
    (tmp / "meta.json").write_text(json.dumps({**meta, "files": files}, indent=1))
    try:
        os.rename(tmp, entry)
    except OSError:  # another run stored the same entry first: theirs is identical
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, text)
