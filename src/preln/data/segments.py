"""Token-id sequences stored flat (two integer arrays, memory-mappable), and pairs of them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np


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
        return cls(
            np.load(folder / f"{name}.ids.npy", mmap_mode="r"), np.load(folder / f"{name}.offsets.npy", mmap_mode="r")
        )

    @classmethod
    def pack(cls, chunks: Iterable[list[list[int]]]) -> Segments:
        """Sequences given a chunk at a time (so that no list of all of them is ever held)."""
        ids, offsets, end = [], [np.zeros(1, np.int64)], 0
        for seqs in chunks:
            lens = np.fromiter(map(len, seqs), np.int64, len(seqs))
            ids.append(np.fromiter((t for s in seqs for t in s), np.int32, int(lens.sum())))
            offsets.append(end + np.cumsum(lens))
            end += int(lens.sum())
        return cls(np.concatenate(ids) if ids else np.zeros(0, np.int32), np.concatenate(offsets))


class SegmentsWriter:
    """Sequences appended a chunk at a time to a scratch file (``folder/name.ids.raw``), so that
    no list, and no array, of all of them is ever held in memory; ``close`` maps the file back
    as ``Segments`` (the offsets, 8 bytes a sequence, stay in memory)."""

    def __init__(self, folder: Path, name: str) -> None:
        self.path = folder / f"{name}.ids.raw"
        self.file, self.lengths = open(self.path, "wb"), [np.zeros(1, np.int64)]

    def add(self, seqs: list[list[int]]) -> np.ndarray:
        """Append ``seqs``; their ids as one array (to count tokens without reading the file again)."""
        lens = np.fromiter(map(len, seqs), np.int64, len(seqs))
        ids = np.fromiter((t for s in seqs for t in s), np.int32, int(lens.sum()))
        ids.tofile(self.file)
        self.lengths.append(lens)
        return ids

    def close(self) -> Segments:
        self.file.close()
        offsets = np.cumsum(np.concatenate(self.lengths))
        ids = np.memmap(self.path, np.int32, "r") if offsets[-1] else np.zeros(0, np.int32)
        return Segments(ids, offsets)


class Columns:
    """Examples made of aligned columns (sequences, or per-example values): example i is the
    tuple of each column's item i, e.g. (source ids, target ids) or (ids, length of A, label)."""

    def __init__(self, *columns) -> None:
        if len({len(c) for c in columns}) > 1:
            raise ValueError(f"columns of unequal lengths {[len(c) for c in columns]}")
        self.columns = columns

    def __len__(self) -> int:
        return len(self.columns[0])

    def __getitem__(self, i: int) -> tuple:
        return tuple(c[i] if isinstance(c, Segments) else c[i].item() for c in self.columns)
