"""How a preln process ends: named exit codes, and the two-stage interrupt both the trainer and
the study scheduler use (the first Ctrl-C / SIGTERM asks for a graceful stop, the second aborts).

The scheduler (``lab/execute.py``) reads its children's exit codes by these names, so what a
status means is written once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from enum import IntEnum


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
