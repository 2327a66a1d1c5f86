"""The training loop's policy: epochs, when to validate, save and log, the run's status, a
graceful stop, greedy BLEU at epoch ends. The mechanics it drives (one update, validation,
checkpoints) are the ``Trainer``'s (``trainer.py``).

``train(cfg, out)`` is the library's one call to train a run folder (resuming it if it holds a
checkpoint); ``preln train`` calls it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .config import RunConfig
from .loggers import check as check_loggers
from .loggers import open_loggers
from .process import Interrupts
from .trainer import Diverged, Step, Trainer


class StopRequested(Exception):
    """Ctrl-C or SIGTERM arrived; raised between updates so the checkpoint is consistent."""


@dataclass
class Meter:
    """Sums over the updates since the last log line; the losses and gradient norms stay on the
    device until ``read`` (a host sync, at log points only)."""

    sums: torch.Tensor | None = None  # (loss, nll, grad norm) summed over updates, float64
    ntokens: int = 0
    updates: int = 0
    seconds: float = 0.0  # in training steps (batching included; validation, checkpoints excluded)

    def add(self, step: Step) -> None:
        v = torch.stack([step.loss, step.nll, step.grad_norm])
        self.sums = v if self.sums is None else self.sums + v
        self.ntokens, self.updates = self.ntokens + step.ntokens, self.updates + 1

    def read(self) -> tuple[float, float, float]:
        """(loss per token, nll per token, mean gradient norm)."""
        loss, nll, gnorm = self.sums.tolist()
        return loss / self.ntokens, nll / self.ntokens, gnorm / self.updates


def train(cfg: RunConfig, out: str | Path, allow_data_change: bool = False) -> dict:
    """Train ``cfg`` into run folder ``out`` (resuming if it holds a checkpoint; on a corpus that
    changed since only with ``allow_data_change``); returns the final status:
    {"status": "completed", "valid_loss", ...} or {"status": "diverged", "reason"}."""
    check_loggers(cfg)  # a missing tracker package before the run folder is touched
    with Trainer(cfg, Path(out), allow_data_change) as trainer:
        return fit(trainer)


def fit(t: Trainer) -> dict:
    """Train to max_updates / max_epochs; returns the final validation results."""
    t.log(t.describe())
    for note in t.data.notes:
        t.log(note)
    done = t.folder.status()
    if t.state.update >= t.max_updates and done and done["status"] == "completed":
        t.log(f"{t.folder.path} is already complete (update {t.state.update})")
        return done
    t.write_status("running")
    loop = _Loop(t)
    if t.state.update == 0:  # what the validation loss is read against (masked LM: the unigram model's NLL)
        for name, value in t.data.baselines().items():
            loop.record({"kind": "baseline", "update": 0, name: value})
            t.log(f"{name.replace('_', ' ')} of the valid split: {value:.4f} nats")
    try:
        ended = loop.train()
        if ended is not None:
            return ended
        res = loop.validate_and_log(with_bleu=True)
        res.update(test_scores(t))
        loop.ended = ("completed", res)
    finally:
        loop.close()
    t.save()
    t.write_status("completed", **res)
    t.log(f"done: update {t.state.update}, {final_scores(res)}")
    return {"status": "completed", **res}


def final_scores(res: dict) -> str:
    """The end-of-run line's scores: validation loss, and what the run's end just computed."""
    parts = [f"valid loss {res['valid_loss']:.4f}", f"valid nll {res['valid_nll']:.4f} (ppl {res['valid_ppl']:.2f})"]
    if "valid_bleu_greedy" in res:
        parts.append(f"valid BLEU (greedy, sacreBLEU) {res['valid_bleu_greedy']:.2f}")
    if "valid_bleu_greedy_tok_lc" in res:
        parts.append(f"valid BLEU (greedy, tok-lc) {res['valid_bleu_greedy_tok_lc']:.2f}")
    parts += [f"test {k.removeprefix('test_')} {v:.2f}" for k, v in res.items() if k.startswith("test_")]
    return ", ".join(parts)


class _Loop:
    """One ``fit``: the trainer, its progress bar, and where the logs go (the run folder's JSON
    lines, and the trackers of ``train.loggers``)."""

    def __init__(self, t: Trainer) -> None:
        c = t.cfg
        self.t = t
        # a bar on a terminal; in a file (or with train.progress = false) a plain line per log point
        self.lines = not (c.train.progress and sys.stderr.isatty())
        self.bar = tqdm(
            total=t.max_updates,
            initial=t.state.update,
            disable=self.lines or not t.dist.main,
            desc=f"{c.model.norm}-LN",
            unit="upd",
            dynamic_ncols=True,
            mininterval=0.5,
        )
        self.loggers = open_loggers(c, t.folder.path, t.state.update) if t.dist.main else []
        self.ended: tuple[str, dict] = ("interrupted", {})  # what the trackers are told at close()

    def close(self) -> None:
        self.bar.close()
        for logger in self.loggers:
            logger.finish(*self.ended)

    def record(self, rec: dict, log: str = "metrics") -> None:
        """One line of ``<log>.jsonl`` (and its numbers in each tracker, under the line's kind)."""
        self.t.folder.write_metrics(rec, f"{log}.jsonl")
        for logger in self.loggers:
            logger.log(rec.get("kind", log), rec, rec["update"])

    def train(self) -> dict | None:
        """The loop with its endings: None when it ran to the end, else the final result."""
        t = self.t
        stop = Interrupts(lambda signum: t.log("stopping after this update (again to abort without a checkpoint)"))
        try:
            with stop:
                while t.state.update < t.max_updates and not self.run_epoch(stop):
                    pass
        except Diverged as e:
            t.log(f"diverged: {e}")
            self.record({"kind": "diverged", "update": e.update, "epoch": t.state.epoch})
            t.diverged_at(e.update)
            t.write_status("diverged", reason=str(e))
            self.ended = ("diverged", {"update": e.update})
            return {"status": "diverged", "reason": str(e)}
        except StopRequested:
            t.save()
            t.write_status("interrupted")
            t.log(f"checkpoint saved at update {t.state.update}")
            raise KeyboardInterrupt from None
        except KeyboardInterrupt:
            t.write_status("interrupted")
            raise
        except Exception as e:  # a crash must not leave "running" behind
            t.write_status("failed", reason=f"{type(e).__name__}: {e}"[:500])
            raise
        return None

    def run_epoch(self, stop: Interrupts) -> bool:
        """Train from the current position to the epoch's end or max_updates; True when done."""
        t = self.t
        t.begin_epoch()
        m = Meter()
        while not t.epoch_done:
            start = time.perf_counter()
            step, lr, telemetry = t.next_update()
            m.add(step)
            at_log = t.state.update % t.cfg.train.log_every == 0
            if at_log:
                t.check_finite()  # the host waits for the device here, inside the timed interval
                means = m.read()
            m.seconds += time.perf_counter() - start
            if telemetry is not None:
                self.record({"update": t.state.update, "epoch": t.state.epoch, **telemetry}, "telemetry")
            self.bar.update(1)
            if at_log:
                self.log_train(m, means, lr)
                m = Meter()
            if t.state.update >= t.max_updates:
                t.check_finite()
                return True
            self.after_update(end_of_epoch=t.epoch_done)
            # under torchrun, agreeing on a stop is a collective the host waits for: only at log points
            if (at_log or not t.dist.active) and t.dist.any(stop.requested):
                t.check_finite()  # the checkpoint the stop writes must not hold a diverged model
                raise StopRequested
        return False

    def after_update(self, end_of_epoch: bool) -> None:
        c, u = self.t.cfg.train, self.t.state.update
        validate = (c.valid_every and u % c.valid_every == 0) or end_of_epoch
        save = (c.save_every and u % c.save_every == 0) or (not c.save_every and end_of_epoch)
        if validate or save:
            self.t.check_finite()  # never validate or checkpoint a diverged model
        if validate:
            self.validate_and_log(with_bleu=end_of_epoch)
        if save:
            self.t.save()

    def validate_and_log(self, with_bleu: bool = False) -> dict:
        """Validate, log the result, keep the best checkpoint as ``checkpoints/best``."""
        t = self.t
        t.check_finite()
        res = t.validate()
        if with_bleu:
            res.update(valid_bleu(t))
        improved = t.note_valid(res["valid_loss"])
        self.record({"kind": "valid", "update": t.state.update, "epoch": t.state.epoch, **res})
        t.log(
            f"update {t.state.update} epoch {t.state.epoch}: valid loss {res['valid_loss']:.4f} "
            f"nll {res['valid_nll']:.4f} ppl {res['valid_ppl']:.2f}" + (" (best)" if improved else "")
        )
        if improved:
            t.save(name="best")
        return res

    def log_train(self, m: Meter, means: tuple[float, float, float], lr: float) -> None:
        t = self.t
        loss, nll, gnorm = means
        rec = {
            "kind": "train",
            "update": t.state.update,
            "epoch": t.state.epoch,
            "loss": loss,
            "nll": nll,
            "lr": lr,
            "grad_norm": gnorm,
            "tokens_per_s": m.ntokens / m.seconds,
            "ntokens": m.ntokens,
        }
        if t.cfg.train.compile:  # recompilations: each distinct graph dynamo compiled so far
            rec["compiled_graphs"] = compiled_graphs()
        self.record(rec)
        self.bar.set_postfix(
            loss=f"{rec['loss']:.3f}", lr=f"{lr:.2e}", tok_s=f"{rec['tokens_per_s']:.0f}", refresh=False
        )
        if self.lines:
            t.log(
                f"update {t.state.update}/{t.max_updates} epoch {t.state.epoch}: loss {loss:.4f} nll {nll:.4f} "
                f"lr {lr:.2e} grad norm {gnorm:.3g} {rec['tokens_per_s']:.0f} tok/s"
            )


def compiled_graphs() -> int:
    """Graphs torch.compile has compiled in this process (dynamo's own counter)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def test_scores(t: Trainer) -> dict:
    """At the end of the run, the task's scores of the final model per split (classification:
    dev and test) into ``scores.json`` (and the run's status)."""
    scores = {s: t.split_scores(s) for s in t.task.scored_splits if s in t.data.examples}  # every rank
    if not scores or not t.dist.main:
        return {}
    t.folder.write_json("scores.json", {"update": t.state.update, "epoch": t.state.epoch, **scores})
    t.log(
        "; ".join(f"{s}: " + ", ".join(f"{k} {v:.2f}" for k, v in sc.items() if k != "n") for s, sc in scores.items())
    )
    return {f"test_{k}": v for k, v in scores.get("test", {}).items() if k != "n"}


def valid_bleu(t: Trainer) -> dict:
    """The task's decoding scores at epoch ends (translation: greedy BLEU on the valid split);
    rank 0 decodes; not under FSDP, whose weights are sharded."""
    if not t.task.decodes_at_epoch_end or not t.cfg.train.valid_bleu:
        return {}
    if t.dist.active and t.cfg.train.parallel == "fsdp":
        return {}
    res = t.task.epoch_scores(t.module, t.tok, t.cfg) if t.dist.main else {}
    t.dist.barrier()
    return res
