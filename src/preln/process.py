"""How a preln process ends: named exit codes, and the two-stage interrupt both the trainer and
the study scheduler use (the first Ctrl-C / SIGTERM asks for a graceful stop, the second aborts).
And what it shares with the others: the CPU threads the training processes of this machine claim.

The scheduler (``lab/execute.py``) reads its children's exit codes by these names, so what a
status means is written once.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections.abc import Callable
from enum import IntEnum
from pathlib import Path


class Exit(IntEnum):
    OK = 0
    DIVERGED = 1
    """Training stopped on a non-finite loss or gradient: a result, not an error."""
    GRID_FAILED = 1
    """``reproduce``: a run of the grid failed (its log's tail is printed); the others stopped."""
    USAGE = 2
    """An error the user can fix (bad config, missing corpus, wrong folder): one line on stderr."""
    BUG = 3
    """An internal error; the traceback is kept in a ``crash-*.log``."""
    INTERRUPTED = 130
    """Ctrl-C / SIGTERM (the shell's 128 + SIGINT): rerun the same command to resume."""


class Interrupts:
    """Within ``with Interrupts(on_first):``, the first SIGINT/SIGTERM sets ``requested`` and
    calls ``on_first(signum)``; the second raises KeyboardInterrupt. Outside the main thread
    (where Python cannot install handlers) it does nothing, and ``requested`` stays False."""

    def __init__(self, on_first: Callable[[int], None] = lambda signum: None) -> None:
        self.on_first, self.requested, self._old = on_first, False, {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.on_first(signum)

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}


def cores() -> int:
    """The cores this process may run on (its affinity where the OS says, else all)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ThreadClaim:
    """A training process's CPU threads, claimed in a file per process (``PRELN_RUNTIME_DIR``, else
    a ``preln-<user>`` folder in the temp dir) until ``release``, so that each run can see what the
    others on this machine compute with: two torch processes with a thread per core each slow each
    other down several times, silently."""

    def __init__(self, threads: int, folder: str | Path | None = None) -> None:
        user = os.getuid() if hasattr(os, "getuid") else os.getlogin()
        default = Path(tempfile.gettempdir()) / f"preln-{user}" / "threads"
        self.folder = Path(folder or os.environ.get("PRELN_RUNTIME_DIR") or default)
        self.threads, self.file = threads, self.folder / str(os.getpid())
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.file.write_text(str(threads))
        except OSError:  # a read-only temp dir: nothing claimed, nothing seen
            self.file = None

    def others(self) -> dict[int, int]:
        """{pid: threads} of the other live processes that claimed threads."""
        found = {}
        for f in self.folder.glob("[0-9]*") if self.file else ():
            try:
                pid = int(f.name)
                if pid != os.getpid() and _alive(pid):
                    found[pid] = int(f.read_text())
                elif pid != os.getpid():
                    f.unlink(missing_ok=True)  # a process that died without releasing
            except (OSError, ValueError):
                continue
        return found

    def warning(self) -> str | None:
        """One line when the claimed threads outnumber this machine's cores, else None."""
        others = self.others()
        total, n = self.threads + sum(others.values()), cores()
        if total <= n:
            return None
        pids = ", ".join(f"pid {p}: {t}" for p, t in sorted(others.items()))
        return (
            f"{len(others) + 1} preln training processes claim {total} threads on {n} cores (this one "
            f"{self.threads}; {pids}): each runs slower than alone; give each train.threads = cores / runs "
            "(preln reproduce --jobs does) or run one at a time"
        )

    def release(self) -> None:
        if self.file is not None:
            self.file.unlink(missing_ok=True)
            self.file = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
