"""One training loop for every task (translation, masked-LM).

A run folder holds:
  config.toml        the resolved config (vocabulary size filled in)
  spm.model          the tokenizer, so a checkpoint is never used with another vocabulary
  metrics.jsonl      one JSON object a line: {"kind": "train" | "valid", "update", "epoch", ...}
  status.json        {"status": "running" | "completed" | "diverged" | "interrupted", "update"}
  checkpoints/       see checkpoint.py
Rerunning with the same folder resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from . import checkpoint, config, schedules
from .config import ConfigError, RunConfig
from .data import Batch, load_data
from .data.tokenizer import PAD, Tokenizer
from .losses import label_smoothed_nll
from .model import Seq2Seq, build_model
from .optim import build_optimizer

RESUME_MAY_CHANGE = {"train.progress", "train.threads"}


class Diverged(RuntimeError):
    """Non-finite loss or gradient."""


class StopRequested(Exception):
    """Ctrl-C or SIGTERM arrived; raised between updates so the checkpoint is consistent."""


@contextlib.contextmanager
def _graceful_stop(trainer: Trainer):
    """First Ctrl-C / SIGTERM: finish the current update, checkpoint, stop. Second: abort now."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True
        trainer.log("stopping after this update (again to abort without a checkpoint)")

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


@dataclass
class State:
    """What, besides weights and optimizer, a resumed run needs: the data-order position."""

    update: int = 0
    epoch: int = 1
    k: int = 0  # next batch of this epoch's order
    best_valid: float | None = None
    fp16_skipped: int = 0


@dataclass
class Meter:
    """Sums over the updates since the last log line."""

    loss: float = 0.0
    nll: float = 0.0
    ntokens: int = 0
    grad_norm: float = 0.0
    updates: int = 0
    start: float = field(default_factory=time.perf_counter)


def compute_loss(model: nn.Module, batch: Batch, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed (label-smoothed loss, nll) of one batch; the task is read off the model type."""
    t = batch.tensors
    if isinstance(model, Seq2Seq):
        return label_smoothed_nll(model(t["src"], t["tgt_in"]), t["tgt_out"], eps)
    chosen = t["targets"] != -100  # (B, T) masked positions only
    logits = model.mlm_logits(model(t["ids"]), chosen)
    return label_smoothed_nll(logits, t["targets"][chosen], eps)


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


class Trainer:
    def __init__(self, cfg: RunConfig, out: Path) -> None:
        self.out = out
        self.device = self._device(cfg)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        ckpts = checkpoint.list_checkpoints(out / "checkpoints")
        spm_file = out / "spm.model" if ckpts else None
        self.data, self.tok = load_data(cfg, spm_file)
        self.cfg = config.with_vocab(cfg, len(self.tok))
        self._prepare_folder(ckpts)
        torch.manual_seed(cfg.train.seed)
        self.model = build_model(self.cfg.model, PAD).to(self.device)
        self.opt = build_optimizer(self.model, self.cfg.optim)
        self.updates_per_epoch = math.ceil(self.data.num_batches() / cfg.train.update_freq)
        self.max_updates = cfg.train.max_updates or self.updates_per_epoch * cfg.train.max_epochs
        if cfg.train.max_epochs:
            self.max_updates = min(self.max_updates, self.updates_per_epoch * cfg.train.max_epochs)
        self.lr = schedules.from_config(cfg.schedule, cfg.optim.lr, self.max_updates, self.updates_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.train.precision == "fp16")
        self.state = State()
        self.stop_requested = False
        if ckpts:
            meta = checkpoint.load(ckpts[-1], self.model, self.opt)
            self.state = State(**meta["state"])
            self._truncate_metrics(self.state.update)
            self.log(f"resumed from {ckpts[-1]} (update {self.state.update})")

    # ------------------------------------------------------------------ setup

    @staticmethod
    def _device(cfg: RunConfig) -> torch.device:
        name = cfg.train.device
        dev = torch.device(
            "cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name
        )
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"train.device={name!r} but CUDA is not available")
        if dev.type != "cuda" and cfg.train.precision != "fp32":
            raise ConfigError(f"train.precision={cfg.train.precision!r} needs CUDA; use fp32 on {dev}")
        return dev

    def _prepare_folder(self, ckpts: list[Path]) -> None:
        out = self.out
        out.mkdir(parents=True, exist_ok=True)
        old_cfg = out / "config.toml"
        if old_cfg.is_file() and ckpts:
            changed = [
                d for d in config.diff(config.load(old_cfg), self.cfg) if d.split(":")[0] not in RESUME_MAY_CHANGE
            ]
            if changed:
                raise ConfigError(
                    f"{out} holds a run with another config; cannot resume it with: "
                    + "; ".join(changed)
                    + ". Use another --out folder."
                )
        elif (out / "metrics.jsonl").exists():
            # a run that never reached a checkpoint: keep its log, start over
            (out / "metrics.jsonl").replace(out / "metrics.jsonl.old")
        old_cfg.write_text(config.dumps(self.cfg))
        if self.tok.path.resolve() != (out / "spm.model").resolve():
            shutil.copyfile(self.tok.path, out / "spm.model")

    def _truncate_metrics(self, update: int) -> None:
        """Drop log lines written after the checkpoint we resume from (they will be redone)."""
        path = self.out / "metrics.jsonl"
        if path.exists():
            keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["update"] <= update]
            path.write_text("".join(ln + "\n" for ln in keep))

    # ------------------------------------------------------------------ logging

    def log(self, msg: str) -> None:
        tqdm.write(f"[preln] {msg}", file=sys.stderr)

    def write_metrics(self, record: dict) -> None:
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def write_status(self, status: str, **extra) -> None:
        record = {"status": status, "update": self.state.update, "epoch": self.state.epoch, **extra}
        (self.out / "status.json").write_text(json.dumps(record, indent=1) + "\n")

    # ------------------------------------------------------------------ steps

    def train_step(self, batches: list[Batch], lr: float) -> tuple[float, float, int, float]:
        """One optimizer update over ``batches`` (gradient accumulation); loss per target token."""
        self.model.train()
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        ntok = sum(b.ntokens for b in batches)
        loss_sum = nll_sum = 0.0
        for b in batches:
            with _autocast(self.device, self.cfg.train.precision):
                loss, nll = compute_loss(self.model, b.to(self.device), self.cfg.train.label_smoothing)
            self.scaler.scale(loss / ntok).backward()  # mean over all target tokens of the update
            loss_sum, nll_sum = loss_sum + loss.detach(), nll_sum + nll
        self.scaler.unscale_(self.opt)
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = self.cfg.optim.clip_norm
        gnorm = nn.utils.clip_grad_norm_(params, clip) if clip else nn.utils.get_total_norm([p.grad for p in params])
        loss_v, nll_v, gnorm_v = float(loss_sum), float(nll_sum), float(gnorm)
        if not math.isfinite(loss_v):
            raise Diverged(f"non-finite loss ({loss_v}) at update {self.state.update + 1}")
        if not math.isfinite(gnorm_v) and not self.scaler.is_enabled():
            raise Diverged(f"non-finite gradient norm ({gnorm_v}) at update {self.state.update + 1}")
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else None
        self.scaler.step(self.opt)
        self.scaler.update()
        if scale is not None and self.scaler.get_scale() < scale:
            self.state.fp16_skipped += 1  # fp16 overflow: step skipped, not divergence
        return loss_v / ntok, nll_v / ntok, ntok, gnorm_v

    @torch.no_grad()
    def validate(self) -> dict:
        self.model.eval()
        loss = nll = 0.0
        ntok = 0
        for k in range(self.data.num_batches("valid")):
            b = self.data.batch("valid", 0, k)
            with _autocast(self.device, self.cfg.train.precision):
                lv, nv = compute_loss(self.model, b.to(self.device), self.cfg.train.label_smoothing)
            loss, nll, ntok = loss + float(lv), nll + float(nv), ntok + b.ntokens
        res = {"valid_loss": loss / ntok, "valid_nll": nll / ntok, "valid_ppl": math.exp(min(nll / ntok, 50))}
        if not math.isfinite(res["valid_loss"]):
            raise Diverged(f"non-finite validation loss at update {self.state.update}")
        return res

    # ------------------------------------------------------------------ loop

    def _valid_and_save(self, end_of_epoch: bool, force: bool = False) -> None:
        t, u = self.cfg.train, self.state.update
        if force or (t.valid_every and u % t.valid_every == 0) or (not t.valid_every and end_of_epoch):
            res = self.validate()
            best = self.state.best_valid
            self.state.best_valid = res["valid_loss"] if best is None else min(best, res["valid_loss"])
            self.write_metrics({"kind": "valid", "update": u, "epoch": self.state.epoch, **res})
            self.log(
                f"update {u} epoch {self.state.epoch}: valid loss {res['valid_loss']:.4f} "
                f"nll {res['valid_nll']:.4f} ppl {res['valid_ppl']:.2f}"
            )
        if force or (t.save_every and u % t.save_every == 0) or (not t.save_every and end_of_epoch):
            self.save()

    def save(self) -> None:
        meta = {"state": vars(self.state), "tokenizer_sha256": self.tok.sha256()}
        checkpoint.save(
            self.out / "checkpoints", self.state.update, self.model, self.opt, meta, self.cfg.train.keep_last
        )

    def _log_train(self, m: Meter, lr: float, bar: tqdm) -> None:
        dt = time.perf_counter() - m.start
        rec = {
            "kind": "train",
            "update": self.state.update,
            "epoch": self.state.epoch,
            "loss": m.loss / m.ntokens,
            "nll": m.nll / m.ntokens,
            "lr": lr,
            "grad_norm": m.grad_norm / m.updates,
            "tokens_per_s": m.ntokens / dt,
            "ntokens": m.ntokens,
        }
        self.write_metrics(rec)
        bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{lr:.2e}", tok_s=f"{rec['tokens_per_s']:.0f}", refresh=False)

    def _run_epoch(self, bar: tqdm) -> bool:
        """Train from the current position to the epoch's end or max_updates; True when done."""
        uf, nb = self.cfg.train.update_freq, self.data.num_batches()
        if self.state.k >= nb:  # the previous epoch is finished: start the next one
            self.state.epoch, self.state.k = self.state.epoch + 1, 0
        m = Meter()
        while self.state.k < nb:
            k = self.state.k
            batches = [self.data.batch("train", self.state.epoch, j) for j in range(k, min(k + uf, nb))]
            lr = self.lr(self.state.update + 1)
            loss, nll, ntok, gnorm = self.train_step(batches, lr)
            self.state.update, self.state.k = self.state.update + 1, k + uf
            m.loss, m.nll, m.ntokens = m.loss + loss * ntok, m.nll + nll * ntok, m.ntokens + ntok
            m.grad_norm, m.updates = m.grad_norm + gnorm, m.updates + 1
            bar.update(1)
            if self.state.update % self.cfg.train.log_every == 0:
                self._log_train(m, lr, bar)
                m = Meter()
            if self.state.update >= self.max_updates:
                return True
            self._valid_and_save(end_of_epoch=self.state.k >= nb)
            if self.stop_requested:
                raise StopRequested
        return False

    def run(self) -> dict:
        """Train to max_updates / max_epochs; returns the final validation results."""
        c = self.cfg
        n_params = sum(p.numel() for p in self.model.parameters())
        self.log(
            f"{c.model.task} model, norm={c.model.norm}, {n_params / 1e6:.2f}M parameters, "
            f"vocab {len(self.tok)}, {self.data.num_batches()} batches/epoch, device {self.device}"
        )
        for note in self.data.notes:
            self.log(note)
        status = self.out / "status.json"
        if self.state.update >= self.max_updates and status.is_file():
            done = json.loads(status.read_text())
            if done["status"] == "completed":
                self.log(f"{self.out} is already complete (update {self.state.update})")
                return done
        self.write_status("running")
        bar = tqdm(
            total=self.max_updates,
            initial=self.state.update,
            disable=not c.train.progress,
            desc=f"{c.model.norm}-LN",
            unit="upd",
            dynamic_ncols=True,
            mininterval=0.5 if sys.stderr.isatty() else 15,
        )
        try:
            with _graceful_stop(self):
                while self.state.update < self.max_updates and not self._run_epoch(bar):
                    pass
        except Diverged as e:
            bar.close()
            self.log(f"diverged: {e}")
            self.write_metrics({"kind": "diverged", "update": self.state.update + 1, "epoch": self.state.epoch})
            self.write_status("diverged", reason=str(e))
            return {"status": "diverged"}
        except StopRequested:
            bar.close()
            self.save()
            self.write_status("interrupted")
            self.log(f"checkpoint saved at update {self.state.update}")
            raise KeyboardInterrupt from None
        except KeyboardInterrupt:
            bar.close()
            self.write_status("interrupted")
            raise
        bar.close()
        res = self.validate()
        self.write_metrics({"kind": "valid", "update": self.state.update, "epoch": self.state.epoch, **res})
        self.save()
        self.write_status("completed", **res)
        self.log(
            f"done: update {self.state.update}, valid loss {res['valid_loss']:.4f}, "
            f"valid nll {res['valid_nll']:.4f} (ppl {res['valid_ppl']:.2f})"
        )
        return {"status": "completed", **res}


def train(cfg: RunConfig, out: str | Path) -> dict:
    """Train ``cfg`` into run folder ``out`` (resuming if it holds a checkpoint)."""
    return Trainer(cfg, Path(out)).run()


def load_run(run_dir: str | Path, which: str = "last") -> tuple[RunConfig, nn.Module, Tokenizer]:
    """A finished run's config, model (weights of its last checkpoint) and tokenizer."""
    run = Path(run_dir)
    cfg = config.load(run / "config.toml")
    ckpts = checkpoint.list_checkpoints(run / "checkpoints")
    if not ckpts:
        raise FileNotFoundError(f"{run}: no checkpoint")
    tok = Tokenizer(run / "spm.model")
    if len(tok) != cfg.model.vocab_size:
        raise ValueError(f"{run}: tokenizer has {len(tok)} pieces but the model {cfg.model.vocab_size}")
    model = build_model(cfg.model, PAD)
    checkpoint.load_weights(ckpts[-1], model)
    return cfg, model, tok
