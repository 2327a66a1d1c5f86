"""A large one-segment-a-line text read once, in blocks, into one UTF-8 blob.

A list of Python strings costs ~60 bytes a line on top of the text, and reading a file whole
holds its bytes, its decoded text and its lines at once (three times the text): a 6 GB corpus
would need ~25 GB. Here the file is read (and hashed, as stored) block by block; the stripped,
non-empty lines go into one ``bytearray`` with a newline after each, and their starts into an
integer array. The lines, their numbering in errors, the count of empty lines and the shuffle are
those of ``corpus.lines_of`` and ``random.Random(0).shuffle`` on a list of the lines.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import zlib
from array import array
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .corpus import CorpusError

BLOCK = 1 << 24  # bytes read at a time


class LineStore:
    """Lines as one UTF-8 blob: line i is ``blob[starts[i]:starts[i + 1] - 1]`` (a newline ends each)."""

    def __init__(self, blob: bytearray, starts: np.ndarray) -> None:
        self.blob, self.starts = blob, starts

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, i: int) -> str:
        return self.blob[self.starts[i] : self.starts[i + 1] - 1].decode()

    def take(self, indices) -> list[str]:
        return [self[i] for i in indices]


class HashingReader(io.RawIOBase):
    """A binary file read through: every byte read goes into ``sha256``."""

    def __init__(self, f) -> None:
        self.f, self.sha256 = f, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self.f.readinto(b)
        self.sha256.update(memoryview(b)[:n])
        return n


def _blocks(stream) -> Iterator[bytes]:
    """The stream's bytes in blocks that end just after a newline (the last block: whatever is left)."""
    tail = b""
    while chunk := stream.read(BLOCK):
        data = tail + chunk
        cut = data.rfind(b"\n") + 1
        if cut:
            yield data[:cut]
        tail = data[cut:]
    if tail:
        yield tail


class Stripped:
    """What reading found: the stripped non-empty lines, the number of empty ones, and the
    subword-join lines (``corpus.refuse_subword_joins``'s count over all stripped lines)."""

    def __init__(self) -> None:
        self.blob, self.starts, self.base = bytearray(), [np.zeros(1, np.int64)], 0
        self.total = self.empty = self.joins = 0
        self.first_join = 0

    def add(self, lines: list[str]) -> None:
        stripped = [ln.strip() for ln in lines]
        for n, ln in enumerate(stripped):
            if "@@ " in ln or ln.endswith("@@"):
                self.joins += 1
                self.first_join = self.first_join or self.total + n + 1
        kept = [ln for ln in stripped if ln]
        self.total, self.empty = self.total + len(stripped), self.empty + len(stripped) - len(kept)
        if kept:
            data = ("\n".join(kept) + "\n").encode()
            ends = np.flatnonzero(np.frombuffer(data, np.uint8) == 10) + 1
            self.starts.append(self.base + ends)
            self.blob += data
            self.base += len(data)

    def store(self) -> LineStore:
        return LineStore(self.blob, np.concatenate(self.starts))


def read_stripped(path: Path) -> tuple[Stripped, str]:
    """The file's lines, stripped (``corpus.lines_of``'s newlines: \\n, \\r\\n, \\r; .gz unpacked),
    and the SHA-256 of its bytes as stored. One read: a pipe works."""
    try:
        raw = HashingReader(open(path, "rb"))
    except OSError as e:
        raise CorpusError(f"cannot read {path}: {e.strerror or type(e).__name__}") from None
    out, newlines, last = Stripped(), 0, None
    with raw:
        stream = (
            gzip.GzipFile(fileobj=io.BufferedReader(raw, BLOCK)) if path.suffix == ".gz" else io.BufferedReader(raw)
        )
        try:
            for block in _blocks(stream):
                try:
                    text = block.decode("utf-8")
                except UnicodeDecodeError as e:
                    line = newlines + block[: e.start].count(b"\n") + 1
                    raise CorpusError(f"{path}: line {line} is not valid UTF-8 ({e.reason})") from None
                newlines += block.count(b"\n")
                lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
                last = lines.pop()  # "" after a block's final newline; the text's end otherwise
                out.add(lines)
                if last:
                    out.add([last])
            buf = bytearray(BLOCK)
            while raw.readinto(buf):  # whatever a .gz reader left unread: the hash covers the file
                pass
        except (OSError, EOFError, zlib.error) as e:  # a truncated or corrupt .gz, a failing disk
            raise CorpusError(f"cannot read {path}: {e or type(e).__name__}") from None
    return out, raw.sha256.hexdigest()


def shuffled(n: int) -> np.ndarray:
    """The order ``random.Random(0).shuffle`` gives a list of ``n`` items (as int64 indices)."""
    order = array("q", range(n))
    random.Random(0).shuffle(order)
    return np.frombuffer(order, np.int64)
