"""The Trainer's mechanics, the same for every task (translation, masked-LM), alone or under
torchrun: build (device, data, model, optimizer, schedule), resume, one update (``train_step``),
validation, checkpoints. When to do what (epochs, the cadence of validation, saving and logging,
status, graceful stop) is the loop policy in ``fit.py``; another policy (fine-tuning) reuses
these mechanics.

The run folder's layout is in ``runs.py``. The data order is a pure function of (seed, epoch)
and the position in it is part of the checkpoint, so a resumed run repeats the uninterrupted
one's losses exactly on CPU.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from . import checkpoint, config, distributed, runs, schedules, tasks
from .config import ConfigError, RunConfig
from .data import Batch, provenance
from .data.batching import Prefetch
from .data.provenance import TRAINING_SPLITS
from .data.tokenizer import PAD
from .errors import RunFolderError
from .model_init import init_from_data
from .optim import build_optimizer
from .process import ThreadClaim
from .runs import RunFolder
from .telemetry import Telemetry


class Diverged(RuntimeError):
    """Non-finite loss or gradient, at ``update``."""

    def __init__(self, message: str, update: int) -> None:
        super().__init__(message)
        self.update = update


@dataclass
class Step:
    """One update's sums over all ranks, left on the device (float64 tensors): reading them is a
    host sync, which the loop does at its log points only."""

    loss: Tensor
    nll: Tensor
    ntokens: int
    grad_norm: Tensor


@dataclass
class State:
    """What, besides weights and optimizer, a resumed run needs: the data-order position."""

    update: int = 0
    epoch: int = 1
    next_batch: int = 0
    """Index of the next batch in this epoch's order."""
    best_valid: float | None = None
    fp16_skipped: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> State:
        """From a checkpoint's ``trainer.json`` (checkpoints before 0.2 named next_batch ``k``)."""
        d = dict(d)
        if "k" in d:
            d["next_batch"] = d.pop("k")
        return cls(**d)


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _device(cfg: RunConfig) -> torch.device:
    name = cfg.train.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={cfg.train.device!r} but CUDA is not available")
    if cfg.train.parallel == "fsdp" and cfg.train.precision == "fp16":
        raise ConfigError("train.precision='fp16' with FSDP is not supported; use bf16")
    if dev.type != "cuda" and cfg.train.precision not in ("fp32", "auto"):
        raise ConfigError(f"train.precision={cfg.train.precision!r} needs CUDA; use fp32 on {dev}")
    return dev


class Trainer:
    """Holds a run folder's lock from construction to ``close()`` (or the end of a ``with``)."""

    def __init__(self, cfg: RunConfig, out: Path, allow_data_change: bool = False) -> None:
        self.allow_data_change = allow_data_change  # resume on a corpus that changed (recorded in history.jsonl)
        self.last_valid: tuple[int, dict] | None = None  # (update, ``evaluate("valid")``) of the last validation
        self.device = _device(cfg)
        self.dist = distributed.init(self.device.type)
        if self.dist.active and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.folder = RunFolder(out, writer=self.dist.main)
        fresh = not out.exists()
        self.folder.lock()  # one writer per run folder; released by close()
        # the CPU threads this run computes with, where the other training processes see them
        self.claim = ThreadClaim(torch.get_num_threads()) if self.device.type == "cpu" else None
        if self.claim is not None and (crowded := self.claim.warning()):
            self.log(f"warning: {crowded}")
        try:
            self._setup(cfg, out)
        except BaseException:
            if self.claim is not None:
                self.claim.release()
            self.folder.unlock()
            if fresh and out.is_dir() and {p.name for p in out.iterdir()} <= {".lock"}:
                shutil.rmtree(out, ignore_errors=True)  # refused before anything was written: no folder left
            raise

    def close(self) -> None:
        if hasattr(self, "prefetch"):  # the thread building the next update's batches
            self.prefetch.close()
        if self.claim is not None:
            self.claim.release()
        self.folder.unlock()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _setup(self, cfg: RunConfig, out: Path) -> None:
        tasks.check(cfg)
        ckpts = self.folder.checkpoints
        resume_from = checkpoint.newest_good(self.folder.path / "checkpoints", self.log) if ckpts else None
        if not self.dist.main:
            self.dist.barrier()  # rank 0 trains and caches the tokenizer first
        # a resumed run has its own weights and vocabulary: the pretrained folder may have moved since
        source = None
        if cfg.train.init_from and not ckpts:
            source = runs.pretrained(Path(cfg.train.init_from), cfg, lambda task: tasks.get(task).pretrains)
        vocab = out / "spm.model" if ckpts else (source.tokenizer if source else None)
        changed = self.folder.check_data(cfg, TRAINING_SPLITS, self.allow_data_change, "resume") if ckpts else []
        self.task = tasks.get(cfg.model.task)
        self.data, self.tok = self.task.load_data(cfg, vocab)
        if self.dist.main:
            self.dist.barrier()
        self.cfg = config.with_vocab(cfg, len(self.tok))
        if cfg.train.precision == "auto":  # resolved before the folder's resume check compares configs
            resolved = "bf16" if self.device.type == "cuda" else "fp32"
            self.cfg = replace(self.cfg, train=replace(self.cfg.train, precision=resolved))
        self.batches_per_update = cfg.train.update_freq * self.dist.world  # all ranks together
        self.updates_per_epoch = math.ceil(self.data.num_batches() / self.batches_per_update)
        self.max_updates = cfg.train.max_updates or self.updates_per_epoch * cfg.train.max_epochs
        if cfg.train.max_epochs:
            self.max_updates = min(self.max_updates, self.updates_per_epoch * cfg.train.max_epochs)
        self.cfg = replace(self.cfg, schedule=schedules.fix_total(self.cfg.schedule, self.max_updates))
        self.folder.open(self.cfg, self.tok.proto)
        if not ckpts or changed or self.folder.data_record() is None:  # what it trains on from now
            self.folder.write_json("data.json", asdict(provenance.record(cfg, self.data.token_ids)))
        self.dist.barrier()
        torch.manual_seed(cfg.train.seed)
        self.module = self.task.build_model(self.cfg.model, PAD).to(self.device)
        if source is not None and resume_from is None:
            self._init_from(source)
        random_weights = source is None or cfg.train.init_weights == "random"
        if resume_from is None and random_weights:
            self._data_dependent_init()  # fresh weights only; a resumed or pretrained run has its own
        if cfg.train.compile:
            self.module.compile()  # in place: the same module, state_dict keys and all
        self.model = distributed.wrap(
            self.module, cfg.train.parallel, self.dist, self.device, find_unused=self.task.unused_parameters
        )
        if self.dist.active:
            torch.manual_seed(cfg.train.seed * 1000 + self.dist.rank)  # distinct dropout masks per rank
        self.opt = build_optimizer(self.model, self.cfg.optim)
        if cfg.train.telemetry_every and self.dist.active and cfg.train.parallel == "fsdp":
            raise ConfigError("train.telemetry_every needs whole weights: not under FSDP (use DDP, or 0)")
        self.telemetry = Telemetry(self.module) if cfg.train.telemetry_every else None
        self.prefetch = Prefetch(self._build_batches)
        self.lr = schedules.from_config(self.cfg.schedule, cfg.optim.lr, self.max_updates, self.updates_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.train.precision == "fp16")
        self.state = State()
        self._first_bad = torch.zeros(3, dtype=torch.float64, device=self.device)  # see _note_nonfinite
        if cfg.schedule.warmup > self.max_updates:
            self.log(
                f"warning: schedule.warmup={cfg.schedule.warmup} is longer than the run "
                f"({self.max_updates} updates): the peak lr is never reached"
            )
        if resume_from is not None:
            self._resume(resume_from)
        elif ckpts:
            raise RunFolderError(
                f"{out}: every checkpoint is damaged; nothing to resume from (move them away to restart)"
            )

    def _init_from(self, source: runs.Pretrained) -> None:
        """Fine-tuning: the encoder (and embeddings, MLM head) from the pretrained checkpoint; the
        pooler and classifier stay as drawn from this run's seed. ``init_weights = "random"`` keeps
        everything as drawn (the control)."""
        info = {"run": str(source.run), "checkpoint": source.checkpoint.name, "weights": self.cfg.train.init_weights}
        if self.cfg.train.init_weights == "pretrained":
            state, meta = checkpoint.model_state(source.checkpoint), checkpoint.load(source.checkpoint)[2]
            fresh = ("pooler.", "classifier.")
            res = self.module.load_state_dict({k: v for k, v in state.items() if not k.startswith(fresh)}, strict=False)
            own = self.module.state_dict()
            loaded = {own[k].data_ptr() for k in state if k in own}
            missing = [k for k in res.missing_keys if not k.startswith(fresh) and own[k].data_ptr() not in loaded]
            if missing or res.unexpected_keys:  # tied weights are saved once: an alias of a loaded one is fine
                bad = (missing + res.unexpected_keys)[:3]
                raise ConfigError(f"{source.run}: its checkpoint's weights do not fit this model ({', '.join(bad)})")
            info["update"] = meta["state"]["update"]
        self.folder.write_json("init_from.json", info)
        self.log(f"initialized from {source.checkpoint} ({self.cfg.train.init_weights} weights)")

    def _data_dependent_init(self) -> None:
        """The placement's hook on fresh weights (``model.init_from_data``; Admin's profiling pass)
        on the first training batch, in eval mode (no dropout, no RNG drawn); what it measured is
        kept in the run folder as ``<name>_profile.json``."""
        batch = self.data.batch("train", 1, 0).to(self.device)
        self.module.eval()
        profiles = init_from_data(self.module, lambda: self.task.loss(self.module, batch, 0.0))
        self.module.train()
        for name, profile in profiles.items():
            self.folder.write_json(f"{name}_profile.json", profile)
            self.log(
                f"{name}: initialized from a profiling pass on {batch.ntokens} target tokens ({name}_profile.json)"
            )

    def _resume(self, path: Path) -> None:
        checkpoint.check_vocabulary(path, self.tok.sha256(), self.tok.path)
        model_state, opt_state, meta = checkpoint.load(path)
        self._check_update_size(path, meta.get("batches_per_update"))
        if model_state is None:  # sharded: read at this world size, whatever it was written at
            distributed.load_shards(self.module, self.opt, path / checkpoint.SHARDS)
        else:
            distributed.load_full_state(self.module, self.opt, model_state, opt_state)
        rng = meta["tensors"].get(f"rng.rank{self.dist.rank}")
        if rng is not None and self.dist.active:
            torch.set_rng_state(rng)
        self.state = State.from_dict(meta["state"])
        self.folder.truncate_metrics(self.state.update)
        self._check_logs()
        self.log(f"resumed from {path} (update {self.state.update})")

    def _check_update_size(self, path: Path, made: int | None) -> None:
        """A resume at another number of processes must keep the batches an update takes
        (processes x ``train.update_freq``): the same updates, on another machine."""
        if made is None:  # written before it was recorded: the run's update_freq may not change
            before = self.folder.resumed_update_freq or self.cfg.train.update_freq
            made = self.batches_per_update // self.cfg.train.update_freq * before
        if made != self.batches_per_update:
            raise ConfigError(
                f"{path}: this run's updates are {made} batches (processes x train.update_freq); "
                f"here they would be {self.batches_per_update}: with {self.dist.world} process(es) set "
                f"train.update_freq={made / self.dist.world:g}"
            )

    def _check_logs(self) -> None:
        """Warn (and note in history.jsonl) when a log lost lines the checkpoint covers: the weights
        are whole, so training goes on; the lost part of the curve cannot be redone."""
        t = self.cfg.train
        for name, every in (("metrics.jsonl", t.log_every), ("telemetry.jsonl", t.telemetry_every)):
            gap = self.folder.log_gap(name, self.state.update, every)
            if gap:
                self.log(f"warning: {self.folder.path / name}: damaged or removed ({gap}); its earlier lines are lost")
                self.folder.write_metrics({"log_damaged": name, "detail": gap}, "history.jsonl")

    # ------------------------------------------------------------------ logging

    def log(self, msg: str) -> None:
        if self.dist.main:
            tqdm.write(f"[preln] {msg}", file=sys.stderr)

    def write_status(self, status: str, **extra) -> None:
        self.folder.write_status(
            status, update=self.state.update, epoch=self.state.epoch, fp16_skipped=self.state.fp16_skipped, **extra
        )

    # ------------------------------------------------------------------ steps

    def _backward(self, batches: list[Batch], ntok: int) -> Tensor:
        """Forward/backward of this rank's share of ``batches``; gradients are the mean over all
        ``ntok`` target tokens of the update (DDP/FSDP average over ranks, hence the factor world).
        Returns this rank's summed (loss, nll) as a float64 device tensor: no host sync."""
        mine = batches[self.dist.rank :: self.dist.world]
        weight = self.dist.world / ntok
        if not mine:  # no batch left for this rank at the epoch's end: join the collectives with zeros
            mine, weight = batches[:1], 0.0
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        for i, b in enumerate(mine):
            with distributed.sync_grads(self.model, i == len(mine) - 1):
                with _autocast(self.device, self.cfg.train.precision):
                    loss, nll = self.task.loss(self.model, b.to(self.device), self.cfg.train.label_smoothing)
                self.scaler.scale(loss * weight).backward()
            if weight:
                sums += torch.stack([loss.detach(), nll]).double()
        return sums

    def train_step(self, batches: list[Batch], lr: float, probe=None) -> Step:
        """One optimizer update over ``batches`` (all ranks' share). Its sums stay on the device
        (``Step``): nothing here waits for the GPU. A non-finite loss or gradient norm is noted on
        the device with its update and raised as ``Diverged`` by ``check_finite`` (which the loop
        calls at its log, validation and save points). ``probe`` (a ``telemetry.Telemetry``) sees
        the final gradients before the optimizer step and the weights after it."""
        self.model.train()
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        ntok = sum(b.ntokens for b in batches)
        sums = self.dist.sum_tensor(self._backward(batches, ntok))  # (loss, nll) over all ranks
        self.scaler.unscale_(self.opt)
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = self.cfg.optim.clip_norm
        gnorm = nn.utils.clip_grad_norm_(params, clip) if clip else nn.utils.get_total_norm([p.grad for p in params])
        gnorm = (gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm).detach().double()
        self._note_nonfinite(sums[0], gnorm)
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else None
        if probe is not None:
            probe.before_step()
        self.scaler.step(self.opt)
        self.scaler.update()
        if probe is not None:
            probe.after_step()
        if scale is not None and self.scaler.get_scale() < scale:
            self.state.fp16_skipped += 1  # fp16 overflow: the step was skipped; not divergence
        return Step(sums[0], sums[1], ntok, gnorm)

    def _note_nonfinite(self, loss: Tensor, gnorm: Tensor) -> None:
        """Keep (update, loss, grad norm) of the first update with a non-finite loss (or gradient
        norm, unless fp16's scaler handles overflows), on the device."""
        bad = ~torch.isfinite(loss)
        if not self.scaler.is_enabled():
            bad = bad | ~torch.isfinite(gnorm)
        # full_like fills on the device: a tensor built from the host value would be a (syncing) copy
        now = torch.stack([torch.full_like(loss, self.state.update + 1.0), loss, gnorm])
        self._first_bad = torch.where(bad & (self._first_bad[0] == 0), now, self._first_bad)

    def check_finite(self) -> None:
        """Raise ``Diverged`` for the first non-finite update since the last check (a host sync)."""
        update, loss, gnorm = self._first_bad.tolist()
        if update:
            what = f"loss ({loss})" if not math.isfinite(loss) else f"gradient norm ({gnorm})"
            raise Diverged(f"non-finite {what} at update {int(update)}", int(update))

    def validate(self) -> dict:
        """Validation loss over the whole valid split, with the task's scores from the same
        forwards (classification: accuracy, F1); keys ``valid_loss``, ``valid_nll``, ..."""
        res = self.evaluate("valid")
        if not math.isfinite(res["loss"]):
            raise Diverged(f"non-finite validation loss at update {self.state.update}", self.state.update)
        self.last_valid = (self.state.update, res)
        return {f"valid_{k}": v for k, v in res.items() if k != "n"}

    def split_scores(self, split: str) -> dict:
        """The task's scores (with ``n``) of the current model on a split; the valid split's are
        those of the validation at this update when there was one (the same forwards)."""
        last = self.last_valid
        res = last[1] if split == "valid" and last and last[0] == self.state.update else self.evaluate(split)
        return {k: v for k, v in res.items() if k not in ("loss", "nll", "ppl")}

    @torch.no_grad()
    def evaluate(self, split: str) -> dict:
        """Loss, nll, ppl and the task's scores (``Task.scores``, with ``n``) of the model over a
        split, its batches shared out across ranks."""
        self.model.eval()
        sums, counts = [0.0, 0.0, 0.0], None  # loss, nll, tokens; the task's counts
        nb, w = self.data.num_batches(split), self.dist.world
        for k in range(self.dist.rank, math.ceil(nb / w) * w, w):  # equal forwards on every rank (FSDP)
            b = self.data.batch(split, 0, k if k < nb else 0)
            with _autocast(self.device, self.cfg.train.precision):
                lv, nv, cv = self.task.counted_loss(self.model, b.to(self.device), self.cfg.train.label_smoothing)
            if k < nb:
                sums = [sums[0] + float(lv), sums[1] + float(nv), sums[2] + b.ntokens]
            if cv is not None:  # a padding forward's counts as zeros: every rank sums as many
                cv = cv.double().cpu() * (k < nb)
                counts = cv if counts is None else counts + cv
        loss, nll, ntok, *total = self.dist.sum(sums + (counts.tolist() if counts is not None else []))
        res = {"loss": loss / ntok, "nll": nll / ntok, "ppl": math.exp(min(nll / ntok, 50))}
        return {**res, **(self.task.scores(total) if total else {})}

    def save(self, name: str | None = None) -> None:
        """Checkpoint. A collective under torchrun: every rank's RNG state goes in; under FSDP
        each rank writes its own shards of the weights and optimizer state (nothing is gathered),
        rank 0 the rest; else rank 0 writes the whole state."""
        folder, rng = self.folder.path / "checkpoints", self.dist.gather_rng()
        meta = {"state": vars(self.state), "tokenizer_sha256": self.tok.sha256()}
        meta["batches_per_update"] = self.batches_per_update
        if distributed.sharded(self.module):
            tmp = self.dist.broadcast(checkpoint.begin(folder) if self.dist.main else None)
            distributed.save_shards(self.module, self.opt, tmp / checkpoint.SHARDS)
            if self.dist.main:
                checkpoint.finish(folder, tmp, self.state.update, meta, self.cfg.train.keep_last, name, rng)
        elif self.dist.main:
            full = distributed.full_state(self.module, self.opt)
            checkpoint.save(folder, self.state.update, *full, meta, self.cfg.train.keep_last, name, rng)
        self.dist.barrier()

    def begin_epoch(self) -> None:
        """Move the data cursor to the next epoch's start if this one is finished."""
        if self.state.next_batch >= self.data.num_batches():
            self.state.epoch, self.state.next_batch = self.state.epoch + 1, 0

    @property
    def epoch_done(self) -> bool:
        return self.state.next_batch >= self.data.num_batches()

    def next_update(self) -> tuple[Step, float, dict | None]:
        """One update at the data cursor, which then moves on: its ``Step``, its lr, and the
        telemetry record when this update is one to measure (every ``train.telemetry_every``)."""
        probe = self.telemetry
        if probe is not None and (self.state.update + 1) % self.cfg.train.telemetry_every:
            probe = None
        if probe is not None:
            probe.arm()
        lr = self.lr(self.state.update + 1)
        step = self.train_step(self.update_batches(), lr, probe)
        self.state.update, self.state.next_batch = (
            self.state.update + 1,
            self.state.next_batch + self.batches_per_update,
        )
        return step, lr, probe.take() if probe is not None else None

    def diverged_at(self, update: int) -> None:
        """The run ends diverged: its status names the update where the non-finite value arose."""
        self.state.update = update

    def note_valid(self, loss: float) -> bool:
        """Record a validation loss; True when it is the best so far."""
        improved = self.state.best_valid is None or loss < self.state.best_valid
        if improved:
            self.state.best_valid = loss
        return improved

    def update_batches(self) -> list[Batch]:
        """The batches of the next update: this epoch's order from ``state.next_batch`` on; those of
        the update after it are prepared meanwhile (``Prefetch``), pinned for a GPU."""
        k, nb = self.state.next_batch, self.data.num_batches()
        after = k + self.batches_per_update
        following = (self.state.epoch, after) if after < nb else (self.state.epoch + 1, 0)
        return self.prefetch.get((self.state.epoch, k), following)

    def _build_batches(self, key: tuple[int, int]) -> list[Batch]:
        """This rank's share of the update's batches (``_backward`` takes every world-th from its
        rank on; the first also stands in when none is left for it); of the others' only their token
        counts, which the loss's denominator needs."""
        (epoch, k), nb = key, self.data.num_batches()
        out = []
        for i, j in enumerate(range(k, min(k + self.batches_per_update, nb))):
            if i % self.dist.world == self.dist.rank or i == 0:
                b = self.data.batch("train", epoch, j)
                out.append(b.pinned() if self.device.type == "cuda" else b)
            else:
                out.append(Batch({}, self.data.ntokens("train", epoch, j)))
        return out

    def describe(self) -> str:
        c = self.cfg
        n_params = sum(p.numel() for p in self.module.parameters())
        return (
            f"{c.model.task} model, norm={c.model.norm}, {n_params / 1e6:.2f}M parameters, vocab "
            f"{len(self.tok)}, {self.data.num_batches()} batches/epoch, device {self.device}"
            + (f" ({_threads(torch.get_num_threads())})" if self.device.type == "cpu" else "")
            + (f", {self.dist.world} processes ({c.train.parallel})" if self.dist.active else "")
        )


def _threads(n: int) -> str:
    return f"{n} thread" + ("s" if n != 1 else "")
