"""One training loop for every task (translation, masked-LM), alone or under torchrun.

The run folder's layout is in ``runs.py``. Rerunning with the same folder resumes from its last
checkpoint; the data order is a pure function of (seed, epoch) and the position in it is part of
the checkpoint, so a resumed run repeats the uninterrupted one's losses exactly on CPU.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from . import checkpoint, config, distributed, schedules
from .config import ConfigError, RunConfig
from .data import Batch, load_data
from .data.datasets import read_pairs
from .data.tokenizer import PAD
from .losses import label_smoothed_nll
from .model import build_model
from .optim import build_optimizer
from .runs import RunFolder


class Diverged(RuntimeError):
    """Non-finite loss or gradient."""


class StopRequested(Exception):
    """Ctrl-C or SIGTERM arrived; raised between updates so the checkpoint is consistent."""


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
    seconds: float = 0.0  # in training steps (batching included; validation, checkpoints excluded)


def compute_loss(model: nn.Module, batch: Batch, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed (label-smoothed loss, nll) of one batch. Calls ``model(...)`` (never a submodule)
    so that a DDP/FSDP wrapper sees the whole forward."""
    t = batch.tensors
    if "src" in t:
        return label_smoothed_nll(model(t["src"], t["tgt_in"]), t["tgt_out"], eps)
    chosen = t["targets"] != -100  # (B, T) masked positions only
    return label_smoothed_nll(model(t["ids"], mlm_positions=chosen), t["targets"][chosen], eps)


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
    if dev.type != "cuda" and cfg.train.precision != "fp32":
        raise ConfigError(f"train.precision={cfg.train.precision!r} needs CUDA; use fp32 on {dev}")
    return dev


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


class Trainer:
    def __init__(self, cfg: RunConfig, out: Path) -> None:
        self.device = _device(cfg)
        self.dist = distributed.init(self.device.type)
        if self.dist.active and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.run_dir = RunFolder(out, writer=self.dist.main)
        self.run_dir.lock()  # one writer per run folder; released at the end of run()
        try:
            self._setup(cfg, out)
        except BaseException:
            self.run_dir.unlock()
            raise

    def _setup(self, cfg: RunConfig, out: Path) -> None:
        ckpts = self.run_dir.checkpoints
        resume_from = checkpoint.newest_good(self.run_dir.path / "checkpoints", self.log) if ckpts else None
        if not self.dist.main:
            self.dist.barrier()  # rank 0 trains and caches the tokenizer first
        self.data, self.tok = load_data(cfg, out / "spm.model" if ckpts else None)
        if self.dist.main:
            self.dist.barrier()
        self.cfg = config.with_vocab(cfg, len(self.tok))
        self.run_dir.check_resumable(self.cfg)
        self.run_dir.prepare(self.cfg, self.tok.path)
        self.dist.barrier()
        torch.manual_seed(cfg.train.seed)
        self.module = build_model(self.cfg.model, PAD).to(self.device)
        self.model = distributed.wrap(
            self.module, cfg.train.parallel, self.dist, self.device, find_unused=cfg.model.task == "mlm"
        )  # the unused pair classifier
        if self.dist.active:
            torch.manual_seed(cfg.train.seed * 1000 + self.dist.rank)  # distinct dropout masks per rank
        self.opt = build_optimizer(self.model, self.cfg.optim)
        self.group = cfg.train.update_freq * self.dist.world  # batches per update, all ranks together
        self.updates_per_epoch = math.ceil(self.data.num_batches() / self.group)
        self.max_updates = cfg.train.max_updates or self.updates_per_epoch * cfg.train.max_epochs
        if cfg.train.max_epochs:
            self.max_updates = min(self.max_updates, self.updates_per_epoch * cfg.train.max_epochs)
        self.lr = schedules.from_config(cfg.schedule, cfg.optim.lr, self.max_updates, self.updates_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.train.precision == "fp16")
        self.state, self.stop_requested = State(), False
        if cfg.schedule.warmup > self.max_updates:
            self.log(
                f"warning: schedule.warmup={cfg.schedule.warmup} is longer than the run "
                f"({self.max_updates} updates): the peak lr is never reached"
            )
        if resume_from is not None:
            self._resume(resume_from)
        elif ckpts:
            raise ValueError(f"{out}: every checkpoint is damaged; nothing to resume from (move them away to restart)")

    def _resume(self, path: Path) -> None:
        model_state, opt_state, meta = checkpoint.load(path)
        if meta.get("tokenizer_sha256") not in (None, self.tok.sha256()):
            raise ValueError(f"{path}: checkpoint was trained with another vocabulary than {self.tok.path}")
        distributed.load_full_state(self.module, self.opt, model_state, opt_state)
        rng = meta["tensors"].get(f"rng.rank{self.dist.rank}")
        if rng is not None and self.dist.active:
            torch.set_rng_state(rng)
        self.state = State(**meta["state"])
        self.run_dir.truncate_metrics(self.state.update)
        self.log(f"resumed from {path} (update {self.state.update})")

    # ------------------------------------------------------------------ logging

    def log(self, msg: str) -> None:
        if self.dist.main:
            tqdm.write(f"[preln] {msg}", file=sys.stderr)

    def write_status(self, status: str, **extra) -> None:
        self.run_dir.write_status(
            status, update=self.state.update, epoch=self.state.epoch, fp16_skipped=self.state.fp16_skipped, **extra
        )

    # ------------------------------------------------------------------ steps

    def _backward(self, batches: list[Batch], ntok: int) -> tuple[float, float]:
        """Forward/backward of this rank's share of ``batches``; gradients are the mean over all
        ``ntok`` target tokens of the update (DDP/FSDP average over ranks, hence the factor world)."""
        mine = batches[self.dist.rank :: self.dist.world]
        weight = self.dist.world / ntok
        if not mine:  # no batch left for this rank at the epoch's end: join the collectives with zeros
            mine, weight = batches[:1], 0.0
        loss_sum = nll_sum = 0.0
        for i, b in enumerate(mine):
            with distributed.sync_grads(self.model, i == len(mine) - 1):
                with _autocast(self.device, self.cfg.train.precision):
                    loss, nll = compute_loss(self.model, b.to(self.device), self.cfg.train.label_smoothing)
                self.scaler.scale(loss * weight).backward()
            if weight:
                loss_sum, nll_sum = loss_sum + float(loss.detach()), nll_sum + float(nll)
        return loss_sum, nll_sum

    def train_step(self, batches: list[Batch], lr: float) -> tuple[float, float, int, float]:
        """One optimizer update over ``batches`` (all ranks' share); loss per target token."""
        self.model.train()
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        ntok = sum(b.ntokens for b in batches)
        loss_v, nll_v = self.dist.sum(list(self._backward(batches, ntok)))
        self.scaler.unscale_(self.opt)
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = self.cfg.optim.clip_norm
        gnorm = nn.utils.clip_grad_norm_(params, clip) if clip else nn.utils.get_total_norm([p.grad for p in params])
        gnorm_v = float(gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm)
        if not math.isfinite(loss_v):
            raise Diverged(f"non-finite loss ({loss_v}) at update {self.state.update + 1}")
        if not math.isfinite(gnorm_v) and not self.scaler.is_enabled():
            raise Diverged(f"non-finite gradient norm ({gnorm_v}) at update {self.state.update + 1}")
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else None
        self.scaler.step(self.opt)
        self.scaler.update()
        if scale is not None and self.scaler.get_scale() < scale:
            self.state.fp16_skipped += 1  # fp16 overflow: the step was skipped; not divergence
        return loss_v / ntok, nll_v / ntok, ntok, gnorm_v

    @torch.no_grad()
    def validate(self) -> dict:
        """Validation loss over the whole valid split (shared out across ranks)."""
        self.model.eval()
        sums = [0.0, 0.0, 0.0]  # loss, nll, tokens
        nb, w = self.data.num_batches("valid"), self.dist.world
        for k in range(self.dist.rank, math.ceil(nb / w) * w, w):  # equal forwards on every rank (FSDP)
            b = self.data.batch("valid", 0, k if k < nb else 0)
            with _autocast(self.device, self.cfg.train.precision):
                lv, nv = compute_loss(self.model, b.to(self.device), self.cfg.train.label_smoothing)
            if k < nb:
                sums = [sums[0] + float(lv), sums[1] + float(nv), sums[2] + b.ntokens]
        loss, nll, ntok = self.dist.sum(sums)
        res = {"valid_loss": loss / ntok, "valid_nll": nll / ntok, "valid_ppl": math.exp(min(nll / ntok, 50))}
        if not math.isfinite(res["valid_loss"]):
            raise Diverged(f"non-finite validation loss at update {self.state.update}")
        return res

    def save(self, name: str | None = None) -> None:
        """Checkpoint. A collective under torchrun: FSDP gathers the weights and every rank's RNG
        state goes in; rank 0 writes."""
        full = distributed.full_state(self.module, self.opt, self.dist)
        rng = self.dist.gather_rng()
        if self.dist.main:
            meta = {"state": vars(self.state), "tokenizer_sha256": self.tok.sha256()}
            checkpoint.save(
                self.run_dir.path / "checkpoints",
                self.state.update,
                *full,
                meta,
                self.cfg.train.keep_last,
                name=name,
                extra_tensors=rng,
            )
        self.dist.barrier()

    # ------------------------------------------------------------------ loop

    def _after_update(self, end_of_epoch: bool) -> None:
        t, u = self.cfg.train, self.state.update
        if (t.valid_every and u % t.valid_every == 0) or end_of_epoch:
            self._validate_and_log(with_bleu=end_of_epoch)
        if (t.save_every and u % t.save_every == 0) or (not t.save_every and end_of_epoch):
            self.save()

    def _valid_bleu(self) -> dict:
        """Greedy BLEU on the valid split (rank 0 decodes; not under FSDP, whose weights are sharded)."""
        if self.cfg.model.task != "translation" or not self.cfg.train.valid_bleu:
            return {}
        if self.dist.active and self.cfg.train.parallel == "fsdp":
            return {}
        res = {}
        if self.dist.main:
            from .evaluate import bleu, translate  # decoding is only needed here

            src, ref, _ = read_pairs(self.cfg, "valid")
            n = self.cfg.data.max_valid_examples or len(src)
            # a monitoring signal: greedy, at most 1.2 * src + 10 tokens, so that an untrained model's
            # epoch end stays cheap; `preln evaluate` decodes as fairseq-generate does
            hyps = translate(self.module.eval(), self.tok, src[:n], beam=1, max_len_a=1.2, max_len_b=10)
            scores = bleu(hyps, ref[:n], self.cfg.data.tgt_lang, self.cfg.data.pretokenized)
            res = {"valid_bleu_greedy_tok_lc": scores["tok_lc"]}
            if "sacrebleu" in scores:
                res["valid_bleu_greedy"] = scores["sacrebleu"]
        self.dist.barrier()
        return res

    def _validate_and_log(self, with_bleu: bool = False) -> dict:
        res = self.validate()
        if with_bleu:
            res.update(self._valid_bleu())
        improved = self.state.best_valid is None or res["valid_loss"] < self.state.best_valid
        if improved:
            self.state.best_valid = res["valid_loss"]
        self.run_dir.write_metrics({"kind": "valid", "update": self.state.update, "epoch": self.state.epoch, **res})
        self.log(
            f"update {self.state.update} epoch {self.state.epoch}: valid loss {res['valid_loss']:.4f} "
            f"nll {res['valid_nll']:.4f} ppl {res['valid_ppl']:.2f}" + (" (best)" if improved else "")
        )
        if improved:
            self.save(name="best")
        return res

    def _log_train(self, m: Meter, lr: float, bar: tqdm) -> None:
        rec = {
            "kind": "train",
            "update": self.state.update,
            "epoch": self.state.epoch,
            "loss": m.loss / m.ntokens,
            "nll": m.nll / m.ntokens,
            "lr": lr,
            "grad_norm": m.grad_norm / m.updates,
            "tokens_per_s": m.ntokens / m.seconds,
            "ntokens": m.ntokens,
        }
        self.run_dir.write_metrics(rec)
        bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{lr:.2e}", tok_s=f"{rec['tokens_per_s']:.0f}", refresh=False)

    def _run_epoch(self, bar: tqdm) -> bool:
        """Train from the current position to the epoch's end or max_updates; True when done."""
        nb = self.data.num_batches()
        if self.state.k >= nb:  # the previous epoch is finished: start the next one
            self.state.epoch, self.state.k = self.state.epoch + 1, 0
        m = Meter()
        while self.state.k < nb:
            k, start = self.state.k, time.perf_counter()
            batches = [self.data.batch("train", self.state.epoch, j) for j in range(k, min(k + self.group, nb))]
            lr = self.lr(self.state.update + 1)
            loss, nll, ntok, gnorm = self.train_step(batches, lr)
            m.seconds += time.perf_counter() - start
            self.state.update, self.state.k = self.state.update + 1, k + self.group
            m.loss, m.nll, m.ntokens = m.loss + loss * ntok, m.nll + nll * ntok, m.ntokens + ntok
            m.grad_norm, m.updates = m.grad_norm + gnorm, m.updates + 1
            bar.update(1)
            if self.state.update % self.cfg.train.log_every == 0:
                self._log_train(m, lr, bar)
                m = Meter()
            if self.state.update >= self.max_updates:
                return True
            self._after_update(end_of_epoch=self.state.k >= nb)
            if self.dist.any(self.stop_requested):
                raise StopRequested
        return False

    def _train_loop(self, bar: tqdm) -> dict | None:
        """The loop with its endings: None when it ran to the end, else the final result."""
        try:
            with _graceful_stop(self):
                while self.state.update < self.max_updates and not self._run_epoch(bar):
                    pass
        except Diverged as e:
            self.log(f"diverged: {e}")
            self.run_dir.write_metrics({"kind": "diverged", "update": self.state.update + 1, "epoch": self.state.epoch})
            self.write_status("diverged", reason=str(e))
            return {"status": "diverged", "reason": str(e)}
        except StopRequested:
            self.save()
            self.write_status("interrupted")
            self.log(f"checkpoint saved at update {self.state.update}")
            raise KeyboardInterrupt from None
        except KeyboardInterrupt:
            self.write_status("interrupted")
            raise
        except Exception as e:  # a crash must not leave "running" behind
            self.write_status("failed", reason=f"{type(e).__name__}: {e}"[:500])
            raise
        finally:
            bar.close()
        return None

    def _run(self) -> dict:
        c = self.cfg
        n_params = sum(p.numel() for p in self.module.parameters())
        self.log(
            f"{c.model.task} model, norm={c.model.norm}, {n_params / 1e6:.2f}M parameters, vocab "
            f"{len(self.tok)}, {self.data.num_batches()} batches/epoch, device {self.device}"
            + (f", {self.dist.world} processes ({c.train.parallel})" if self.dist.active else "")
        )
        for note in self.data.notes:
            self.log(note)
        done = self.run_dir.status()
        if self.state.update >= self.max_updates and done and done["status"] == "completed":
            self.log(f"{self.run_dir.path} is already complete (update {self.state.update})")
            return done
        self.write_status("running")
        bar = tqdm(
            total=self.max_updates,
            initial=self.state.update,
            disable=not (c.train.progress and self.dist.main),
            desc=f"{c.model.norm}-LN",
            unit="upd",
            dynamic_ncols=True,
            mininterval=0.5 if sys.stderr.isatty() else 15,
        )
        ended = self._train_loop(bar)
        if ended is not None:
            return ended
        res = self._validate_and_log(with_bleu=True)
        self.save()
        self.write_status("completed", **res)
        self.log(
            f"done: update {self.state.update}, valid loss {res['valid_loss']:.4f}, "
            f"valid nll {res['valid_nll']:.4f} (ppl {res['valid_ppl']:.2f})"
        )
        return {"status": "completed", **res}

    def run(self) -> dict:
        """Train to max_updates / max_epochs; returns the final validation results."""
        try:
            return self._run()
        finally:
            self.run_dir.unlock()


def train(cfg: RunConfig, out: str | Path) -> dict:
    """Train ``cfg`` into run folder ``out`` (resuming if it holds a checkpoint)."""
    return Trainer(cfg, Path(out)).run()
