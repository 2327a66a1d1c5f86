"""SHA-256 of corpus files, remembered by their stat so a large corpus is hashed once.

A run's start hashes its corpus twice over (the token-id cache's key, the run's ``data.json``):
seconds for a gigabyte. The digest of a regular file is remembered under ``<cache>/digests/``
with the file's size, mtime, ctime, inode and device; while all five are unchanged the
remembered digest is used. Like git's index, a file modified within ``FRESH_S`` of being hashed
is not remembered (its timestamps may not yet tell a later write within the same clock tick
apart), and writing a file always changes its ctime, even when its mtime is set back.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from .. import atomic

FRESH_S = 2.0


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def remember(path: Path, digest: str, memo: Path) -> None:
    """Record ``digest`` for a file preln has just written itself (a cache file, never changed in
    place afterwards): remembered at once, so the next run does not hash it again."""
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
    try:
        memo.mkdir(parents=True, exist_ok=True)
        atomic.write_text(_note(memo, path), json.dumps({"path": str(path.resolve()), "stat": stamp, "sha256": digest}))
    except OSError:  # a read-only cache: hashed again next time
        pass


def _note(memo: Path, path: Path) -> Path:
    return memo / f"{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24]}.json"


def file_sha256(path: Path, memo: Path | None = None) -> str:
    """``path``'s SHA-256; remembered in folder ``memo`` (a cache) for a regular file."""
    if memo is None or not path.is_file():
        return sha256_of(path)
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
    note = _note(memo, path)
    try:
        known = json.loads(note.read_text())
        if known["stat"] == stamp:
            return known["sha256"]
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or damaged: hash the file
        pass
    digest = sha256_of(path)
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > FRESH_S * 1e9 and path.stat() == st:
        try:
            memo.mkdir(parents=True, exist_ok=True)
            atomic.write_text(note, json.dumps({"path": str(path.resolve()), "stat": stamp, "sha256": digest}))
        except OSError:  # a read-only cache: hash again next time
            pass
    return digest
