"""Grids on a cluster: ``preln reproduce --launcher slurm`` submits each planned job (its steps:
train, evaluate, analyze) as one job through submitit (the optional extra ``pip install
'preln[cluster]'``) and waits for them. Skipping and resuming work as with local processes: only
unfinished jobs are planned, and each step is skipped where its result exists (``steps.needed``),
so a rerun after a preemption resumes the runs from their checkpoints. ``--launcher local`` uses
submitit's local executor (the tests do).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..config import ConfigError
from ..process import Exit
from .execute import RunFailed
from .steps import Job, log_name, needed, run_status
from .timing import record_step


def run_job(job: Job) -> str:
    """Run a job's steps in order (on the cluster node), each as a ``preln`` subprocess whose log
    is ``<step>.log`` in the job's folder; returns its status."""
    for step, argv in job.steps:
        if not needed(step, job.folder, job.expect):
            continue
        job.folder.mkdir(parents=True, exist_ok=True)
        started = time.time()
        with open(job.folder / log_name(step), "a") as log:
            rc = subprocess.run([sys.executable, "-m", "preln", *argv], stdout=log, stderr=log).returncode
        record_step(job.folder, step, time.time() - started, rc)
        if rc == Exit.DIVERGED and step == "train":
            break  # a result: no evaluation of a diverged run
        if rc != Exit.OK:
            raise RunFailed(f"{job.name}: `preln {step}` failed (exit {rc}); see {job.folder / log_name(step)}")
    return run_status(job.folder) if any(s == "train" for s, _ in job.steps) else "done"


DEFAULTS = {"timeout_min": 24 * 60}
"""submitit's own default time limit is 5 minutes, which ends any real run; a day instead
(``--slurm timeout_min=...`` and other submitit parameters, e.g. ``slurm_partition='gpu'``)."""


def check(launcher: str, parameters: dict | None) -> None:
    """Before anything is planned or written: submitit installed, Slurm reachable for ``slurm``,
    and the ``--slurm`` parameters accepted by submitit (names and types); one-line errors."""
    if launcher == "processes":
        if parameters:
            raise ConfigError("--slurm applies to --launcher slurm or local, not to processes")
        return
    try:
        import submitit
    except ImportError:
        raise ConfigError(f"--launcher {launcher} needs submitit: pip install 'preln[cluster]'") from None
    if launcher == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError(
            "--launcher slurm: Slurm's sbatch is not on PATH here (run on the cluster's login node, or use "
            "--launcher processes)"
        )
    with tempfile.TemporaryDirectory() as folder:
        try:
            executor = submitit.AutoExecutor(folder=folder, cluster="local" if launcher == "local" else "slurm")
            executor.update_parameters(**{**DEFAULTS, **(parameters or {})})
        except (ValueError, TypeError, NameError, AssertionError, RuntimeError) as e:  # submitit's own checks
            raise ConfigError(f"--slurm: {str(e).strip().splitlines()[0]}") from None


def submit(jobs: list[Job], launcher: str, logs: Path, parameters: dict | None = None) -> dict[str, str]:
    """Submit every job, wait for all; {job name: status}. A failed job raises RunFailed after the
    others have ended (they are independent; their results are kept). A job that is preempted or
    times out is requeued (submitit's checkpointing) and resumes from the run's last checkpoint."""
    try:
        import submitit
    except ImportError:
        raise ConfigError(f"--launcher {launcher} needs submitit: pip install 'preln[cluster]'") from None

    class RunJobs(submitit.helpers.Checkpointable):  # requeued with the same job: the steps resume
        def __call__(self, job: Job) -> str:
            return run_job(job)

    executor = submitit.AutoExecutor(folder=str(logs), cluster="local" if launcher == "local" else "slurm")
    try:
        executor.update_parameters(**{**DEFAULTS, **(parameters or {})})
    except (ValueError, TypeError, NameError) as e:  # submitit names an unknown parameter with a NameError
        raise ConfigError(f"--slurm: {str(e).splitlines()[0]}") from None
    submitted = [(job, executor.submit(RunJobs(), job)) for job in jobs]
    results, failures = {}, []
    for job, handle in submitted:
        try:
            results[job.name] = handle.result()
            print(f"[preln] {job.name}: {results[job.name]}", file=sys.stderr)
        except Exception as e:  # submitit wraps the node's exception
            failures.append(f"{job.name}: {str(e).strip().splitlines()[-1] if str(e).strip() else e}")
    if failures:
        raise RunFailed("; ".join(failures))
    return results
