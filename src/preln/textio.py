"""Text in for ``preln translate``: lines decoded strictly as UTF-8 (an invalid line is named, where
Python's own decoding would pass lone surrogates on to the tokenizer), from a file at once or from
stdin in chunks as they arrive, so that a pipe gets its translations while it is still open."""

from __future__ import annotations

import os
import select
from collections.abc import Iterator

from .errors import CorpusError


def decode_lines(raw_lines: list[bytes], where: str, first: int = 1) -> list[str]:
    out = []
    for n, line in enumerate(raw_lines, first):
        try:
            out.append(line.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as e:
            raise CorpusError(f"{where}: line {n} is not valid UTF-8 ({e.reason})") from None
    return out


def read_lines(path: str) -> list[str]:
    lines = open(path, "rb").read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return decode_lines(lines, path)


def stdin_chunks(fd: int = 0, size: int = 64, wait: float = 0.2) -> Iterator[list[str]]:
    """Lines of ``fd`` in chunks: a chunk ends at ``size`` lines, or when no more input has come
    for ``wait`` seconds (an interactive or slow pipe gets each line translated promptly)."""
    buf, lines, done = b"", [], 0
    while True:
        if select.select([fd], [], [], wait)[0]:
            data = os.read(fd, 1 << 16)
            if not data:
                break
            *complete, buf = (buf + data).split(b"\n")
            lines += complete
            if len(lines) < size:
                continue
        if lines:
            yield decode_lines(lines, "stdin", done + 1)
            done, lines = done + len(lines), []
    if buf:
        lines.append(buf)
    if lines:
        yield decode_lines(lines, "stdin", done + 1)
