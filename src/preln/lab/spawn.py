"""Starting a study's commands (``preln train``, ``evaluate``, ``analyze``, ...) as processes of
their own without paying for their imports each time.

A fresh ``python -m preln train`` spends ~4 s importing before it computes anything (on 2 Intel
Xeon cores: ``torch`` ~2 s, ``torch._dynamo`` ~1.9 s, which every ``torch.optim`` optimizer
imports on construction, preln ~0.3 s): 5-10% of a main-job command. So the commands are forked
from a server that imported those once (Python's ``multiprocessing`` "forkserver"; the server
itself starts from a fresh interpreter, so nothing of the scheduler's own state, threads or tqdm
bar is forked). Each command is still its own process: its own memory, exit code, signals and
log, its environment and working directory those of the scheduler when it starts, its CPU threads
set before it computes. The server never runs a torch operation (forking after OpenMP's thread
pool exists can hang) and never initializes CUDA (``CUDA_VISIBLE_DEVICES`` is read at the first
CUDA call, in the command). Where the platform has no fork server, a plain subprocess.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import runpy
import select
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

# what the server imports once; a name that fails to import is skipped (the command imports it)
PRELOAD = ["torch", "torch._dynamo", "preln.cli"]


class Command(Protocol):
    """A started command, as ``subprocess.Popen`` has it: ``poll`` is None while it runs, then its
    exit code (negative: the signal that ended it)."""

    pid: int

    def poll(self) -> int | None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...
    def wait(self, timeout: float | None = None) -> int: ...


def start(argv: list[str], log: Path, env: dict[str, str], threads: int) -> Command:
    """Run ``preln ARGV`` with stdout and stderr appended to ``log``, environment ``env`` (the whole
    of it) and ``threads`` CPU threads, stopped when this process (the scheduler) ends, however it
    ends (SIGTERM: a graceful stop)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return _subprocess(argv, log, env)
    proc = _server().Process(target=_command, args=(argv, str(log), env, threads, os.getcwd(), os.getpid()))
    with _no_main_module():
        proc.start()
    return _Forked(proc)


@contextlib.contextmanager
def _no_main_module() -> Iterator[None]:
    """Start a command without the scheduler's main module: multiprocessing imports it into each
    child (found from ``sys.modules["__main__"]`` when the process starts), which would run a
    caller's unguarded script again in every command. The command is ``python -m preln``'s, not
    the caller's."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


_CONTEXT = None


def _server():
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(PRELOAD)
    return _CONTEXT


class _Forked:
    """A forked command behind the ``Command`` face."""

    def __init__(self, proc: multiprocessing.process.BaseProcess) -> None:
        self.proc, self.pid, self.code = proc, proc.pid, None

    def poll(self) -> int | None:
        if self.code is None and self.proc.exitcode is not None:
            self.code = self.proc.exitcode
            self.proc.close()  # its pipe: a grid starts hundreds of commands
        return self.code

    def terminate(self) -> None:
        if self.poll() is None:
            self.proc.terminate()

    def kill(self) -> None:
        if self.poll() is None:
            self.proc.kill()

    def wait(self, timeout: float | None = None) -> int:
        if self.poll() is None:
            self.proc.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(f"preln (pid {self.pid})", timeout or 0.0)
        return self.code


def _command(argv: list[str], log: str, env: dict[str, str], threads: int, cwd: str, scheduler: int) -> None:
    """In the forked process: the scheduler's environment and folder, the log as stdout and stderr,
    the threads, then ``preln ARGV`` (its exit code is the process's)."""
    _stop_when_gone(scheduler)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    import torch

    torch.set_num_threads(threads)
    sys.argv = ["preln", *argv]
    runpy.run_module("preln", run_name="__main__", alter_sys=True)  # as `python -m preln ARGV`: exits


def _stop_when_gone(scheduler: int) -> None:
    """SIGTERM to this process (a graceful stop in ``train``) when the scheduler ends: a killed
    ``reproduce`` must not leave commands writing into run folders. A forked command's parent is
    the server, which outlives the scheduler while any command runs (each holds its "alive" pipe),
    so the parent-death signal cannot say it; a thread waits on the scheduler's pidfd (Linux), else
    looks once a second."""

    def watch() -> None:
        try:
            fd = os.pidfd_open(scheduler)
            select.select([fd], [], [])
        except (AttributeError, OSError):  # no pidfd here, or the scheduler already went
            while _alive(scheduler):
                time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="preln-scheduler-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_parent() -> None:
    """In a subprocess: die with the parent (the scheduler), via Linux's PR_SET_PDEATHSIG = 1,
    SIGTERM (a graceful stop in ``train``)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _subprocess(argv: list[str], log: Path, env: dict[str, str]) -> Command:
    with open(log, "a") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "preln", *argv], stdout=f, stderr=f, env=env, preexec_fn=_die_with_parent
        )
