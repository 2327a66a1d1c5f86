"""The run folder: what a run writes, and the checks before a run may write there.

config.toml        the resolved config (vocabulary size filled in)
spm.model          the tokenizer, so a checkpoint is never used with another vocabulary
metrics.jsonl      one JSON object a line: {"kind": "train" | "valid" | "diverged", "update", ...}
telemetry.jsonl    train.telemetry_every: per-layer gradient norms, update ratios, stream RMS
history.jsonl      what each resume changed (train.max_updates raised, intervals...), with its time
status.json        {"status": "running" | "completed" | "diverged" | "interrupted", "update", ...}
admin_profile.json model.norm = "admin": the profiling pass that set the omegas (model_init.admin_init)
init_from.json     train.init_from: the pretrained run and checkpoint the weights came from
data.json          SHA-256 of the corpus files (and token-id cache entry) the run trained on (data/provenance.py)
scores.json        classification: accuracy (and F1) on dev and test at the end
bleu.json, hyp.*   `preln evaluate`: the last evaluation's scores and hypotheses
evaluations/       `preln evaluate`: per checkpoint and decoding setting, its bleu.json and hypotheses
checkpoints/       see checkpoint.py
"""

from __future__ import annotations

import fnmatch
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from . import atomic, checkpoint, config
from .config import ConfigError, RunConfig
from .data import provenance
from .data.corpus import CorpusError, resolve_path
from .errors import RunFolderError
from .locks import hold_lock, release_lock
from .schedules import fix_total

# How a run is computed may change on resume, not what: train.update_freq only with the number of
# processes, so that an update takes as many batches as before (the Trainer checks the checkpoint's).
RESUME_MAY_CHANGE = {"train.progress", "train.threads", "train.device", "train.parallel", "train.update_freq"}
# How long a run trains and what it logs may change on resume (fairseq continues with a larger
# --max-update too); the change is recorded in history.jsonl. Anything else changes what was computed.
RESUME_MAY_EXTEND = {"train.max_updates", "train.max_epochs", "train.log_every", "train.valid_every"}
RESUME_MAY_EXTEND |= {"train.save_every", "train.keep_last", "train.valid_bleu", "train.telemetry_every"}
RESUME_MAY_EXTEND |= {"train.tensorboard", "train.loggers"}
# What a run folder may hold besides its own files: logs of `preln reproduce`, evaluation outputs,
# analysis warm-up runs. Anything else means --out points at someone's folder, not a run's.
RUN_FILES = ("config.toml", "spm.model", "status.json", "checkpoints", ".lock", ".status.json.tmp", "bleu.json")
RUN_FILES += ("admin_profile.json", "history.jsonl", "tensorboard", "init_from.json", "scores.json", "data.json")
RUN_FILES += ("steps.jsonl",)  # `preln reproduce`'s record of the commands it ran here and their times
RUN_FILES += (
    "claims.json",
    "evaluations",
    "wandb",
    "mlruns",
    "mlflow_run_id",
)  # the trackers' (loggers.py)  # `preln report RUN` writes it (and report.*, *.png) beside the run's files
RUN_PATTERNS = ("metrics*.jsonl", "telemetry*.jsonl", "*.png", "report.*", "*.log", "hyp.*", "warmup-post-seed*")
RUN_PATTERNS += ("tensorboard.*",)
RUN_PATTERNS += (".*.tmp",)


# What fine-tuning may set differently from the pretrained run: the task and its head, dropout.
ARCHITECTURE_MAY_DIFFER = {"task", "num_classes", "dropout", "attention_dropout", "activation_dropout"}


@dataclass(frozen=True)
class Pretrained:
    """A masked-LM run folder that initializes another run (``train.init_from``)."""

    run: Path
    tokenizer: Path
    checkpoint: Path


def pretrained(run: Path, cfg: RunConfig, pretrains: Callable[[str], bool]) -> Pretrained:
    """The run ``cfg.train.init_from`` names, checked: a finished run folder of a task that
    ``pretrains`` (masked LM) with the architecture of ``cfg.model``; one-line errors otherwise."""
    if not (run / "config.toml").is_file():
        raise ConfigError(f"train.init_from: {run} is not a run folder (no config.toml)")
    before = config.load(run / "config.toml")
    status = RunFolder(run, writer=False).status() or {}
    if status.get("status") == "diverged":
        raise ConfigError(
            f"train.init_from: {run} diverged at update {status.get('update')}: its weights are not a trained model"
        )
    if not pretrains(before.model.task):
        raise ConfigError(f"train.init_from: {run} is a {before.model.task} run; fine-tuning needs a masked-LM run")
    a, b = config.to_dict(before.model), config.to_dict(cfg.model)
    same = ARCHITECTURE_MAY_DIFFER | ({"vocab_size"} if not b["vocab_size"] else set())  # 0: from its tokenizer
    differ = [f"model.{k}: {a[k]!r} there, {b[k]!r} here" for k in a if k not in same and a[k] != b[k]]
    if differ:
        raise ConfigError(f"train.init_from: {run} has another architecture ({'; '.join(differ[:3])})")
    ckpt = checkpoint.newest_good(run / "checkpoints")
    if ckpt is None or not (run / "spm.model").is_file():
        raise ConfigError(f"train.init_from: {run} has no usable checkpoint or no spm.model")
    return Pretrained(run, run / "spm.model", ckpt)


class RunFolder:
    def __init__(self, path: Path, writer: bool = True) -> None:
        self.path, self.writer = path, writer  # only one process (rank 0) writes
        self._lock = None
        self.extended: list[str] = []  # the RESUME_MAY_EXTEND changes of this resume
        self.resumed_update_freq: int | None = None  # the resumed run's train.update_freq (its config.toml)

    def lock(self) -> None:
        """Become the folder's one writer: an OS lock (flock) on ``.lock``, which the system drops
        when the process ends, kill -9 included. A second writer is refused, naming the holder."""
        if not self.writer or self._lock is not None:
            return
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"{self.path} is a file, not a run folder")
        foreign = sorted(p.name for p in self.path.glob("*") if not _run_file(p.name)) if self.path.exists() else []
        if foreign:
            raise ConfigError(
                f"{self.path} holds files that are not a run's ({', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}); give --out a new or empty folder, or a run folder"
            )
        self._lock = hold_lock(self.path)

    def unlock(self) -> None:
        if self._lock is not None:
            release_lock(self._lock)
            self._lock = None

    @property
    def checkpoints(self) -> list[Path]:
        return checkpoint.list_checkpoints(self.path / "checkpoints")

    def check_resumable(self, cfg: RunConfig) -> None:
        """A folder with a checkpoint may only be resumed with the same config."""
        old = self.path / "config.toml"
        if self.checkpoints and not old.is_file():
            raise ConfigError(
                f"{self.path} holds checkpoints but no config.toml: what they were trained with is unknown, "
                "so they are not resumed (restore config.toml, or use another --out folder)"
            )
        if not (old.is_file() and self.checkpoints):
            return
        before = config.load(old)
        self.resumed_update_freq = before.train.update_freq  # checked against the checkpoint by the Trainer
        if before.train.max_updates:  # written before the length was fixed in config.toml: it ended there
            before = replace(before, schedule=fix_total(before.schedule, before.train.max_updates))
        diffs = [d for d in config.diff(before, cfg) if not _same_corpus(d, before, cfg)]
        moved = [d for d in diffs if d.startswith("data.path:") and self._same_files(cfg)]
        diffs = [d for d in diffs if d not in moved]
        self.extended = moved + [d for d in diffs if d.split(":")[0] in RESUME_MAY_EXTEND]
        changed = [d for d in diffs if d.split(":")[0] not in RESUME_MAY_CHANGE | RESUME_MAY_EXTEND]
        if any(d.startswith("schedule.total:") for d in changed):
            keep = f"--set schedule.total={before.schedule.total}"
            changed.append(
                f"(the schedule's shape depends on the run's length: to extend the run on the schedule its updates "
                f"ran on, add {keep})"
            )
        done = int(self.checkpoints[-1].name.removeprefix(checkpoint.PREFIX))  # sorted, zero-padded
        if cfg.train.max_updates and cfg.train.max_updates < done:
            changed.append(f"train.max_updates={cfg.train.max_updates}, but the run already has {done} updates")
        if changed:
            raise ConfigError(
                f"{self.path} holds a run with another config; cannot resume it with: {'; '.join(changed)}. "
                "Use another --out folder."
            )

    def check_finished(self, cfg: RunConfig) -> None:
        """A finished run counts as ``cfg``'s only if resuming it with ``cfg`` would be allowed
        (``check_resumable``) and it is as long as ``cfg`` asks. ``cfg`` as given, before a start
        fills in the vocabulary's size (0: the tokenizer's), the precision ``auto`` resolves to and
        the schedule's length: those are taken from the run's config.toml."""
        old = self.path / "config.toml"
        if not old.is_file():
            return  # nothing to compare with (a report says what the folder lacks)
        run = config.load(old)
        if not cfg.model.vocab_size:
            cfg = config.with_vocab(cfg, run.model.vocab_size)
        if cfg.train.precision == "auto":
            cfg = replace(cfg, train=replace(cfg.train, precision=run.train.precision))
        cfg = replace(cfg, schedule=fix_total(cfg.schedule, cfg.train.max_updates or run.schedule.total))
        self.check_resumable(cfg)
        longer = [d for d in self.extended if d.startswith(("train.max_updates:", "train.max_epochs:"))]
        if longer:
            done = (self.status() or {}).get("update", "?")
            raise ConfigError(
                f"{self.path} holds a finished run of {done} updates, but the study asks for more "
                f"({'; '.join(longer)}): extend it with preln train (docs/training.md), or use another --out folder"
            )

    def open(self, cfg: RunConfig, tokenizer: bytes) -> None:
        """Make the folder ready for ``cfg``: check that a run it holds may be resumed with it, then
        write config.toml and spm.model (``tokenizer``: the model's bytes; see ``check_resumable``
        and ``prepare``)."""
        self.check_resumable(cfg)
        self.prepare(cfg, tokenizer)

    def prepare(self, cfg: RunConfig, tokenizer: bytes) -> None:
        """Write config.toml and spm.model; a log without a checkpoint is kept under a new name."""
        if not self.writer:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for log in ("metrics", "telemetry"):
            path = self.path / f"{log}.jsonl"
            if path.exists() and not self.checkpoints:
                path.replace(self.path / f"{log}.{stamp}.jsonl")
        if (self.path / "tensorboard").exists() and not self.checkpoints:  # events of a start that left no checkpoint
            (self.path / "tensorboard").replace(self.path / f"tensorboard.{stamp}")
        # atomically: the other ranks of a distributed start read it (check_resumable) meanwhile
        atomic.write_text(self.path / "config.toml", config.dumps(cfg))
        if self.extended:  # what a resume changed, for whoever reads the run later
            self.write_metrics({"changed": self.extended}, "history.jsonl")
        spm = self.path / "spm.model"
        if not (spm.is_file() and spm.read_bytes() == tokenizer):
            atomic.write_bytes(spm, tokenizer)

    def data_record(self) -> provenance.DataRecord | None:
        """The run's ``data.json`` (None for a run from before it was kept); a damaged one is an error."""
        path = self.path / "data.json"
        if not path.is_file():
            return None
        try:
            return provenance.DataRecord.from_json(path.read_text())
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            why = type(e).__name__
            raise CorpusError(f"{path}: damaged ({why}); restore it, or delete it to record afresh") from None

    def _same_files(self, cfg: RunConfig) -> bool:
        """Whether ``cfg``'s corpus holds every file ``data.json`` recorded, unchanged (a corpus
        moved or copied elsewhere)."""
        try:
            rec = self.data_record()
            return rec is not None and not provenance.changes(rec, cfg, tuple(rec.splits))
        except CorpusError:
            return False

    def check_data(self, cfg: RunConfig, splits: tuple[str, ...], allow: bool, what: str) -> list[str]:
        """Compare the files of ``splits`` with ``data.json``: a change is refused (one line naming
        each file), or with ``allow`` recorded in history.jsonl and returned."""
        before = self.data_record()
        changed = provenance.changes(before, cfg, splits) if before else []
        if changed and not allow:
            raise provenance.refusal(self.path, what, changed)
        if changed:
            self.write_metrics({"data_changed": changed, "during": what, "allowed": True}, "history.jsonl")
        return changed

    def log_gap(self, name: str, update: int, every: int) -> str | None:
        """A phrase when log ``name`` (metrics.jsonl: its train lines; telemetry.jsonl) holds fewer
        lines than one every ``every`` updates up to the checkpoint's ``update``: it was truncated,
        emptied, replaced or removed. None when whole, or when the interval changed on a resume."""
        key = "train.log_every" if name == "metrics.jsonl" else "train.telemetry_every"
        if every <= 0 or any(key in str(r.get("changed")) for r in self.metrics("history.jsonl")):
            return None
        rows = self.metrics(name)
        have = {r.get("update") for r in rows if name != "metrics.jsonl" or r.get("kind") == "train"}
        want = update // every
        if len(have - {None}) >= want:
            return None
        return f"{name} holds {len(have - {None})} of the {want} lines up to update {update}"

    def truncate_metrics(self, update: int) -> None:
        """Drop log lines written after the checkpoint being resumed (they will be redone)."""
        for name in ("metrics.jsonl", "telemetry.jsonl"):
            path = self.path / name
            if self.writer and path.exists():
                keep = [ln for ln, row in self._rows(name) if row.get("update", 0) <= update]
                atomic.write_text(path, "".join(ln + "\n" for ln in keep))  # never a log half-rewritten

    def _rows(self, name: str = "metrics.jsonl") -> list[tuple[str, dict]]:
        """(line, record) of a JSON-lines log; a line that is not a JSON object (torn by a crash
        mid-write, or still being written by a live run) is left out."""
        try:
            lines = (self.path / name).read_text(errors="replace").splitlines()
        except OSError:
            return []
        rows = []
        for ln in lines:
            try:
                row = json.loads(ln)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append((ln, row))
        return rows

    def write_metrics(self, record: dict, name: str = "metrics.jsonl") -> None:
        """Append one JSON line; ``time`` (Unix seconds) dates it, for wall-clock comparisons."""
        if self.writer:
            with open(self.path / name, "a") as f:
                f.write(json.dumps({**record, "time": round(time.time(), 3)}) + "\n")

    def write_json(self, name: str, obj: object) -> None:
        """A JSON file in the folder (rank 0 only), written whole or not at all."""
        if self.writer:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic.write_text(self.path / name, json.dumps(obj, indent=1) + "\n")

    def write_status(self, status: str, **fields) -> None:
        if self.writer:
            atomic.write_text(self.path / "status.json", json.dumps({"status": status, **fields}, indent=1) + "\n")

    def status(self) -> dict | None:
        p = self.path / "status.json"
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise RunFolderError(f"{p}: not valid JSON ({e}); delete it and rerun to rebuild it") from None

    def metrics(self, name: str = "metrics.jsonl") -> list[dict]:
        """The records of ``metrics.jsonl`` (or ``telemetry.jsonl``); a line still being written is
        left out, so another process may read a live run."""
        return [row for _, row in self._rows(name)]


def _same_corpus(change: str, a: RunConfig, b: RunConfig) -> bool:
    """A ``data.path`` change that names the same corpus (spelled relative, absolute, via the
    data root) is no change."""
    if not change.startswith("data.path:"):
        return False
    try:
        return resolve_path(a.data.path).resolve() == resolve_path(b.data.path).resolve()
    except CorpusError:
        return False


def _run_file(name: str) -> bool:
    return name in RUN_FILES or any(fnmatch.fnmatch(name, p) for p in RUN_PATTERNS)
