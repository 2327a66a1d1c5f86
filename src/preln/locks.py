"""One writer per folder: an OS lock (flock) on ``FOLDER/.lock``, which the system drops when the
process ends, kill -9 included. Run folders (``runs.RunFolder``), runs folders (``reproduce``,
``report``) and prepared corpora (``prepare``) take it while they are written. No torch here:
``prepare`` and ``report`` stay light."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .config import ConfigError


def hold_lock(folder: Path):
    """An exclusive OS lock (flock) on ``folder/.lock``, held until :func:`release_lock` or the
    process's end (kill -9 included); a second holder is refused, naming the first one's PID."""
    folder.mkdir(parents=True, exist_ok=True)
    f = open(folder / ".lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise ConfigError(
            f"{folder} is being written by another preln process (PID {holder}); "
            "wait for it to end, or use another --out folder"
        ) from None
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def release_lock(f) -> None:
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """``hold_lock`` for a command's whole run. A folder the command created that holds nothing but
    the lock afterwards (the command was refused) is removed: a refusal leaves nothing behind."""
    fresh = not folder.exists()
    f = hold_lock(folder)
    try:
        yield
    finally:
        release_lock(f)
        if fresh and folder.is_dir() and {p.name for p in folder.iterdir()} <= {".lock"}:
            shutil.rmtree(folder, ignore_errors=True)
