"""Running a study's jobs: commands (``preln train``, ``evaluate``, ``analyze``; each a process of
its own, started by ``spawn``) at most ``jobs`` at a time, each with ``cpus // jobs`` threads (or
one GPU each), a progress bar over all of them, interrupts passed on gracefully, and a record of
each invocation for the report.

A diverged run is a result (its exit code ``Exit.DIVERGED``) and the rest goes on; any other
failure stops the grid with the failing command's log. Rerunning skips finished steps
(``steps.needed``) and resumes interrupted runs (the trainer does).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from ..config import ConfigError
from ..process import Exit, Interrupts
from .spawn import Command, start
from .steps import Job, last_update, log_name, needed, run_status
from .studies import Study
from .timing import TimeLeft, Work, minutes, record_step


class RunFailed(RuntimeError):
    """A command of the grid failed (not diverged): a bug or a setup problem; its log's tail."""


def _tail(path: Path, n: int = 3) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").replace("\r", "\n").splitlines() if ln.strip()]
    except OSError:
        return ""
    return "\n".join(lines[-n:])


class _Slot:
    def __init__(self, job: Job, threads: int, gpu: str | None = None):
        self.job, self.threads, self.gpu, self.started = job, threads, gpu, time.time()
        self.steps = list(job.steps)
        self.trains = any(step == "train" for step, _ in job.steps)
        self.proc: Command | None = None

    def next_step(self) -> bool:
        """Start the next command; False when there is none (or the run diverged)."""
        while self.steps:
            step, argv = self.steps.pop(0)
            if not needed(step, self.job.folder, self.job.expect):
                continue
            self.job.folder.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
            if self.gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = self.gpu
            self.proc = start(argv, self.job.folder / log_name(step), env, self.threads)
            self.step, self.step_started = step, time.time()
            return True
        return False


def execute(
    jobs: list[Job], jobs_at_once: int = 1, gpus: list[str] | None = None, poll_s: float = 1.0
) -> dict[str, str]:
    """Run the jobs, ``jobs_at_once`` subprocesses at a time (with ``gpus``: one GPU each, via
    CUDA_VISIBLE_DEVICES), with one progress bar over all of them (weighted by updates). A
    diverged run is recorded and the rest goes on; a failing command stops the others gracefully
    and raises RunFailed with its log. Ctrl-C / SIGTERM: the children finish their update and
    checkpoint, then this raises KeyboardInterrupt (rerun to resume).
    Returns {job name: "completed" | "diverged" | "done"}."""
    cpus = os.cpu_count() or 1
    if jobs_at_once < 1 or jobs_at_once > cpus:
        raise ConfigError(f"--jobs {jobs_at_once}: use 1..{cpus} (the CPU cores; more processes would thrash)")
    if gpus is not None and len(gpus) < jobs_at_once:
        raise ConfigError(f"--jobs {jobs_at_once} needs as many GPUs, --gpus lists {len(gpus)}")
    pool = _Pool(jobs, jobs_at_once, max(1, cpus // jobs_at_once), gpus)
    try:
        with Interrupts(lambda signum: _stop_children(signum, pool.running)) as stop:
            try:
                while pool.pending or pool.running:
                    pool.start(stop.requested)
                    pool.poll(stop.requested)
                    if stop.requested and not pool.running:
                        raise KeyboardInterrupt
                    _show(pool)
                    time.sleep(poll_s)
            except KeyboardInterrupt:
                if not stop.requested or pool.running:  # a second interrupt: abort
                    for slot in pool.running:
                        slot.proc.kill()
                raise
            except BaseException:  # a bug here: the commands stop gracefully rather than run on
                _terminate(pool.running)
                raise
    finally:
        pool.bar.close()
    return pool.results


class _Pool:
    """The jobs waiting, the slots running, the results so far."""

    def __init__(self, jobs: list[Job], at_once: int, threads: int, gpus: list[str] | None) -> None:
        self.pending, self.running, self.results = pilots_first(jobs), [], {}
        self.finished = sum(found_done(j) for j in jobs)  # a resumed grid's done steps
        self.at_once, self.threads, self.gpus, self.free_gpus = at_once, threads, gpus, list(gpus or [])
        total = sum(j.size for j in jobs)
        # on a terminal a bar; in a log file its state as a plain line every 30 s (_show), no frames
        frames = sys.stderr if sys.stderr.isatty() else io.StringIO()
        # no rate-based remaining time: the units' cost differs by study and step; the postfix
        # carries the estimate from the ended commands' times (``left_text``)
        form = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
        self.bar = tqdm(total=total, desc="reproduce", unit="upd", dynamic_ncols=True, bar_format=form, file=frames)
        self.time_left = TimeLeft()

    def start(self, stopping: bool) -> None:
        while self.pending and len(self.running) < self.at_once and not stopping:
            slot = _Slot(self.pending.pop(0), self.threads, self.free_gpus.pop(0) if self.gpus else None)
            if slot.next_step():
                self.running.append(slot)
            else:
                self.release(slot)

    def poll(self, stopping: bool) -> None:
        """Collect the commands that ended: start the job's next step, or finish the job."""
        for slot in list(self.running):
            rc = slot.proc.poll()
            if rc is None:
                continue
            # timed to when this poll saw it end (the report's "where the time went")
            seconds = time.time() - slot.step_started
            record_step(slot.job.folder, slot.step, seconds, rc)
            self.time_left.ended(slot.job.study, slot.step, step_weight(slot.job), seconds, rc == Exit.OK)
            if rc == Exit.INTERRUPTED or stopping:
                self.running.remove(slot)
                continue
            if rc not in (Exit.OK, Exit.DIVERGED) or (rc == Exit.DIVERGED and slot.step != "train"):
                self.running.remove(slot)
                _terminate(self.running)
                log = slot.job.folder / log_name(slot.step)
                raise RunFailed(f"{slot.job.name}: `preln {slot.step}` failed (exit {rc}); {log}:\n{_tail(log)}")
            if not slot.next_step():
                self.running.remove(slot)
                self.release(slot)

    def left_text(self) -> str:
        """The wall time left as "about 34 min left" (job seconds over the slots they can fill),
        naming the studies whose steps no ended command has timed yet ("lr not yet timed"); ""
        before any command has ended and when nothing is left."""
        now = time.time()
        running = [(s.job, s.step, now - s.step_started, s.steps) for s in self.running]
        work = work_left(self.pending, running)
        seconds = self.time_left.left(work)
        slots = min(self.at_once, len(self.pending) + len(self.running))
        if seconds is None or not slots:
            return ""
        guess = self.time_left.untimed(work)
        return f"about {minutes(seconds / slots)} left" + (f", {', '.join(guess)} not yet timed" if guess else "")

    def release(self, slot: _Slot) -> None:
        self.free_gpus.extend([slot.gpu] if slot.gpu is not None else [])
        self.results[slot.job.name] = _finish(slot, self.bar)
        self.finished += slot.job.size - found_done(slot.job)


def pilots_first(jobs: list[Job]) -> list[Job]:
    """The jobs in their order, but the first job of each study moved to the front: every kind of
    step is then timed within minutes, so the time left is measured, not guessed (in the main job
    `lr` came last and was guessed at the mean rate for 55 of its 80 minutes). No result depends
    on the order; the longest jobs still come first."""
    pilots, studies = [], set()
    for job in jobs:
        if job.study not in studies:
            studies.add(job.study)
            pilots.append(job)
    chosen = {id(j) for j in pilots}
    return pilots + [j for j in jobs if id(j) not in chosen]


def step_weight(job: Job) -> int:
    """Each step of a job weighs the same on the bar: ``size / steps`` (a fine-tuning or an
    evaluation ~ the training's updates)."""
    return job.size // max(len(job.steps), 1)


def found_done(job: Job) -> int:
    """The bar's units of the steps a resumed grid found done (``Job.done``): counted from the start."""
    return step_weight(job) * len(job.done)


def work_left(pending: list[Job], running: list[tuple[Job, str, float, list[tuple[str, list[str]]]]]) -> list[Work]:
    """Every step not yet ended: the waiting jobs' steps, and for each running job (job, its
    current step, seconds in it, steps after it) the current step and those after it; not the
    steps a resumed grid found done (``Job.done``)."""
    work = [Work(j.study, step, step_weight(j), 0.0) for j in pending for step, _ in j.steps if step not in j.done]
    for job, step, spent, after in running:
        work.append(Work(job.study, step, step_weight(job), spent))
        work += [Work(job.study, later, step_weight(job), 0.0) for later, _ in after if later not in job.done]
    return work


def progress(job: Job, remaining: int, step: str) -> int:
    """A running job's share of the bar, in its ``size`` units: each step weighs the same
    (``size / steps``: a fine-tuning or an evaluation ~ the training's updates), the steps before
    the current one whole (but those a resumed grid found done: the pool starts with them), a
    training step by its updates so far. ``remaining``: steps after the current one."""
    weight = step_weight(job)
    before = [s for s, _ in job.steps[: len(job.steps) - remaining - 1] if s not in job.done]
    return weight * len(before) + (min(last_update(job.folder), weight) if step == "train" else 0)


def _show(pool: _Pool) -> None:
    bar = pool.bar
    bar.n = pool.finished + sum(progress(s.job, len(s.steps), s.step) for s in pool.running)
    now = [
        f"{s.job.name}@{last_update(s.job.folder)}" if s.step == "train" else f"{s.job.name}:{s.step}"
        for s in pool.running
    ]
    bar.set_postfix_str("; ".join(t for t in [pool.left_text(), " ".join(now)] if t), refresh=False)
    interval = 1.0 if sys.stderr.isatty() else 30.0  # a log file gets a line every 30 s, not every second
    if time.time() - getattr(bar, "_shown", 0.0) >= interval:
        if sys.stderr.isatty():
            bar.refresh()
        else:
            print(f"[preln] {bar}", file=sys.stderr, flush=True)
        bar._shown = time.time()


def _finish(slot: _Slot, bar: tqdm) -> str:
    status = run_status(slot.job.folder) if slot.trains else "done"
    msg = f"{slot.job.name}: {status} in {time.time() - slot.started:.0f} s"
    if (slot.job.folder / "bleu.json").is_file():
        test = json.loads((slot.job.folder / "bleu.json").read_text())["splits"].get("test", {})
        if "sacrebleu" in test:
            msg += f", test sacreBLEU {test['sacrebleu']:.2f}"
        msg += f", tok-lc BLEU {test.get('tok_lc', float('nan')):.2f}"
    bar.write(f"[preln] {msg}", file=sys.stderr)
    return status or "missing"


def _stop_children(signum: int, running: list[_Slot]) -> None:
    """The first Ctrl-C / SIGTERM: no new jobs; the commands stop gracefully (a terminal's Ctrl-C
    reaches them itself, SIGTERM is passed on) and checkpoint."""
    print("\n[preln] stopping: runs finish their update and checkpoint (again to abort)", file=sys.stderr)
    if signum == signal.SIGTERM:
        for slot in running:
            slot.proc.terminate()


def _terminate(running: list[_Slot], timeout: float = 120.0) -> None:
    """Graceful stop (SIGTERM: finish the update, checkpoint), then wait."""
    for s in running:
        s.proc.terminate()
    for s in running:
        try:
            s.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            s.proc.kill()


def _machine() -> str:
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{os.cpu_count()} cores ({cpu}){gpu}, {platform.system()}, torch {torch.__version__}"


def _commit(root: Path) -> str:
    try:
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "-uno"], capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return (r.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")) or "unknown"


PROC_STAT = Path("/proc/stat")


def host_cpu_times(path: Path | None = None) -> tuple[int, int] | None:
    """(steal, total) jiffies of all CPUs since boot from /proc/stat (Linux), or None. Steal is the
    time the hypervisor gave this VM's CPUs to others: on a shared host the same commands ran 1.3x
    as long in one run as in another that day, so a timed run records it. Guest time is already
    inside user time, so the total is user through steal."""
    try:
        fields = (path or PROC_STAT).read_text().split("\n", 1)[0].split()
        user_to_steal = [int(x) for x in fields[1:9]]
    except (OSError, ValueError):
        return None
    if fields[0] != "cpu" or len(user_to_steal) < 8:
        return None
    return user_to_steal[7], sum(user_to_steal)


def record_invocation(
    out: Path,
    root: Path,
    preset: str,
    studies: list[Study],
    jobs: int,
    started: float,
    cpu_at_start: tuple[int, int] | None = None,
) -> None:
    """Append this ``reproduce`` invocation (what, where, when, how long, and the host's steal
    share since ``cpu_at_start``, from ``host_cpu_times``) to ``OUT/reproduce.json``, which the
    report's header reads: a rerun that resumes adds a line, so the wall time of a reference run
    is the sum over its invocations."""
    from .. import __version__

    path = out / "reproduce.json"
    try:
        history = json.loads(path.read_text()).get("invocations", [])
    except (OSError, ValueError):
        history = []
    entry = {
        "preln": __version__,
        "commit": _commit(root),
        "preset": preset,
        "studies": [s.name for s in studies],
        "jobs": jobs,
        "machine": _machine(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "seconds": round(time.time() - started),
    }
    now = host_cpu_times()
    if cpu_at_start and now and now[1] > cpu_at_start[1]:
        entry["host_steal"] = round((now[0] - cpu_at_start[0]) / (now[1] - cpu_at_start[1]), 3)
    history.append(entry)
    path.write_text(json.dumps({"invocations": history}, indent=1) + "\n")
