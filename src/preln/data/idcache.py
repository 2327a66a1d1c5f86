"""Corpora tokenized once: token ids cached on disk and memory-mapped.

Tokenizing a corpus takes minutes at scale and a Python list of every example takes gigabytes,
so every corpus kind (text, translation pairs, classification pairs) is tokenized once into flat
arrays under ``<cache>/ids/``: for each sequence column ``ids`` and ``offsets`` into them, and
per-example values (labels) as plain arrays. A run, a resumed run and the next run of a grid map
them from disk in milliseconds and hold no list of examples; each rank touches only the pages
of the examples it batches. An entry is keyed by the corpus files' SHA-256, the reading settings
and the vocabulary's SHA-256: other text, another split or another vocabulary is another entry.
The vocabulary trained for a (corpus, settings, vocabulary settings) is remembered by a small
pointer file, so a fresh run finds both without reading the corpus. Entries are written to a
temporary folder and renamed into place: concurrent runs never see half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import atomic
from ..config import DataConfig
from .corpus import CorpusError
from .digests import file_sha256, remember
from .segments import Segments
from .tokenizer import Tokenizer, default_cache_dir, train_or_load

VERSION = "ids-v3"  # v3: entries list their columns; every corpus kind (v2: text only)


@dataclass(frozen=True)
class Encoded:
    """A corpus's token ids as an entry holds them."""

    segments: dict[str, Segments]
    """Sequence columns by name, e.g. ``train`` (text) or ``train.src``, ``train.tgt`` (pairs)."""
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    """Per-example values by name, e.g. ``train.labels``; ``train.counts``: token frequencies."""
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Source:
    """A corpus as read, before tokenization: what a cache entry is built from."""

    vocab_text: Callable[[], list[str]]
    """The text a vocabulary is trained on (called only when none is remembered or given)."""
    encode: Callable[[Tokenizer, Path], Encoded]
    """Encodes with the tokenizer, writing large columns into the scratch folder given
    (``segments.SegmentsWriter``; removed once the entry is stored)."""
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CachedCorpus:
    """A corpus's token ids, as ``load_text_corpus`` / ``load_corpus`` found or built them."""

    segments: dict[str, Segments]
    arrays: dict[str, np.ndarray]
    tok: Tokenizer
    notes: list[str]
    cached: bool
    """Whether the ids came from the cache (else they were built, and cached, now)."""
    entry: Path
    """The cache entry the ids are mapped from."""

    def provenance(self) -> dict[str, str]:
        """The entry's name and its files' SHA-256 (checked against them when it was opened)."""
        return {"entry": self.entry.name, **_meta(self.entry)["files"]}


def cache_root(d: DataConfig) -> Path:
    return Path(d.cache_dir) if d.cache_dir else default_cache_dir()


def load_text_corpus(path: Path, d: DataConfig, tokenizer_file: Path | None, read: Callable) -> CachedCorpus:
    """A one-file corpus's token ids and tokenizer, from the cache or built and cached;
    ``read()`` reads the file once and gives its ``Source`` and the SHA-256 of the bytes it read.
    ``tokenizer_file`` (a resumed or fine-tuned run's vocabulary) is used instead of training one.
    A hit reads the file only to hash it (or not at all: ``digests``); a miss reads it once, and
    the entry is keyed by the hash of exactly the bytes it tokenized (a file that changes
    meanwhile cannot key another's ids). A pipe is read once."""
    if path.is_dir():
        raise CorpusError(f"{path}: a text corpus is one file, one segment a line")
    cache = cache_root(d) / "ids"
    settings = ("text", d.valid_fraction, d.max_train_examples, d.max_valid_examples, d.mlm_pairs)
    if path.is_file():  # a pipe or a device cannot be read twice: it is read once, below
        hit = _lookup(cache, _key(file_sha256(path, cache.parent / "digests"), *settings), d, tokenizer_file)
        if hit is not None:
            return hit
    source, sha = read()
    split = _key(sha, *settings)
    hit = _lookup(cache, split, d, tokenizer_file)
    return hit or _build(cache, split, d, tokenizer_file, source, {"corpus": str(path)})


def load_corpus(files: list[Path], settings: tuple, d: DataConfig, tokenizer_file: Path | None, read) -> CachedCorpus:
    """A corpus of several files (``read()`` gives its ``Source``), keyed by their SHA-256 and
    ``settings`` (what else decides the examples); a file that changes while it is read is refused."""
    cache = cache_root(d) / "ids"
    memo = cache.parent / "digests"

    def digests() -> list[str]:
        return [file_sha256(f, memo) for f in files]

    before = digests()
    split = _key(*before, *settings)
    hit = _lookup(cache, split, d, tokenizer_file)
    if hit is not None:
        return hit
    source = read()
    if digests() != before:
        raise CorpusError(f"{files[0].parent}: a corpus file changed while it was read; run again")
    return _build(cache, split, d, tokenizer_file, source, {"corpus": [str(f) for f in files]})


def _build(cache: Path, split: str, d: DataConfig, tokenizer_file: Path | None, source: Source, meta: dict):
    tok = Tokenizer(tokenizer_file) if tokenizer_file else _remembered(_pointer(cache, split, d))
    if tok is None:
        tok = train_or_load(source.vocab_text(), d.vocab_size, d.spm_model, d.cache_dir)
        _write_atomic(_pointer(cache, split, d), str(tok.path.resolve()))
    cache.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=cache, prefix=".scratch-"))
    try:
        enc = source.encode(tok, scratch)
        notes = [*source.notes, *enc.notes]
        entry = cache / _key(split, tok.sha256(), d.max_len)
        _store(entry, enc, {**meta, "notes": notes, "tokenizer": str(tok.path), "max_len": d.max_len})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    opened = _open(entry, len(tok))
    if opened is None:
        raise CorpusError(f"{entry}: the token-id cache entry just written does not read back (disk full or failing?)")
    return CachedCorpus(*opened, tok, notes, False, entry)


def _key(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, (VERSION, *parts))).encode()).hexdigest()[:20]


def _pointer(cache: Path, split: str, d: DataConfig) -> Path:
    """The file naming the vocabulary trained for this corpus, split and vocabulary settings."""
    return cache / f"tokenizer-{_key(split, d.vocab_size, d.spm_model)}.txt"


def _lookup(cache: Path, split: str, d: DataConfig, tokenizer_file: Path | None) -> CachedCorpus | None:
    """The cached token ids of the corpus and settings keyed ``split``, or None."""
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
    return CachedCorpus(*opened, tok, _meta(entry)["notes"], True, entry)


def _remembered(pointer: Path) -> Tokenizer | None:
    """The tokenizer trained earlier for this corpus and these settings, if its file still exists."""
    try:
        target = Path(pointer.read_text().strip())
    except (OSError, ValueError):  # gone, unreadable, or not text (damaged): train the vocabulary again
        return None
    return Tokenizer(target) if target.is_file() else None


def _meta(entry: Path) -> dict:
    return json.loads((entry / "meta.json").read_text())


def _open(entry: Path, vocab: int) -> tuple[dict[str, Segments], dict[str, np.ndarray]] | None:
    """The entry's columns, memory-mapped, after checking every file against the SHA-256 its
    ``meta.json`` recorded (and the ids against the vocabulary); None when anything is off."""
    memo = entry.parent.parent / "digests"  # an entry's files never change: hashed once, unless touched
    try:
        meta = _meta(entry)
        if any(file_sha256(entry / name, memo) != digest for name, digest in meta["files"].items()):
            return None
        segments = {name: Segments.open(entry, name) for name in meta["segments"]}
        arrays = {name: np.load(entry / f"{name}.npy", mmap_mode="r") for name in meta["arrays"]}
        if meta["max_id"] >= vocab:  # (the ids are the ones written: their checksums matched)
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # unreadable, truncated, not ours
        return None
    for seg in segments.values():
        if len(seg.offsets) < 2 or seg.offsets[-1] != len(seg.ids):
            return None
    return segments, arrays


def _store(entry: Path, enc: Encoded, meta: dict) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=".tmp-"))
    for name, seg in enc.segments.items():
        seg.save(tmp, name)
    for name, values in enc.arrays.items():
        np.save(tmp / f"{name}.npy", values)
    files = {f.name: file_sha256(f) for f in sorted(tmp.iterdir())}
    columns = {"segments": sorted(enc.segments), "arrays": sorted(enc.arrays)}
    columns["max_id"] = max((int(s.ids.max()) for s in enc.segments.values() if len(s.ids)), default=-1)
    (tmp / "meta.json").write_text(json.dumps({**meta, **columns, "files": files}, indent=1))
    try:
        os.rename(tmp, entry)
    except OSError:  # another run stored the same entry first: theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
        return
    for name, digest in files.items():  # (gigabytes at scale: the next run need not hash them again)
        remember(entry / name, digest, entry.parent.parent / "digests")


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, text)
