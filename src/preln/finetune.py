"""Fine-tuning a pretrained masked-LM run on sentence-pair classification (``preln finetune``).

A fine-tuning run is an ordinary run folder (resumable, crash-safe, same trainer and loop): its
``model`` section is the pretrained run's with ``task = "classify"``, its vocabulary is the
pretrained run's, its weights come from the pretrained run's newest checkpoint
(``train.init_from``), and its data are pair TSVs. The recipe is BERT's (Devlin et al. 2019, Sec.
A.3): AdamW, a small learning rate, 10% warm-up then linear decay to 0, a few epochs; dev accuracy
(and F1) after every epoch, dev and test of the final model in ``scores.json``.
"""

from __future__ import annotations

from pathlib import Path

from . import config, tasks
from .config import ConfigError, RunConfig

TASKS = ("paraphrase", "containment")
"""The constructed pair tasks in ``$PRELN_DATA_ROOT/pairclf`` (``{task}.{train,dev,test}.tsv.gz``)."""

RECIPE = [
    "optim.name='adamw'",
    "optim.lr=1e-4",  # BERT-base uses 2e-5..5e-5; the small CPU models here train best around 1e-4
    "optim.betas=[0.9, 0.999]",
    "optim.eps=1e-6",
    "optim.weight_decay=0.01",
    "optim.clip_norm=1.0",
    "schedule.kind='linear'",
    "schedule.warmup=0",
    "schedule.warmup_fraction=0.1",
    "schedule.total=0",
    "train.max_updates=0",
    "train.max_epochs=3",
    "train.label_smoothing=0.0",
    "train.valid_every=0",
    "train.save_every=0",
    "train.valid_bleu=false",
    "train.telemetry_every=0",
    "data.max_tokens=2048",  # ~20-30 pairs a batch: BERT fine-tunes with batches of 32
    "data.max_train_examples=0",
    "data.max_valid_examples=0",
]
"""What ``preln finetune`` sets on top of the pretrained run's config (``--set`` goes after)."""


def task_data(task: str) -> list[str]:
    """The ``data`` settings of ``--task``: a pairclf task name, or a folder of
    ``{train,dev,test}.tsv`` files (GLUE's layout; columns by ``data.pair_columns``)."""
    if task in TASKS:
        return ["data.corpus='pairs'", "data.path='pairclf'", f"data.pair_prefix='{task}.'"]
    if Path(task).is_dir():
        return [
            "data.corpus='pairs'",
            f"data.path={config.toml_value(str(Path(task).resolve()))}",
            "data.pair_prefix=''",
        ]
    raise ConfigError(f"--task {task!r}: not one of {', '.join(TASKS)} and not a folder of train/dev/test TSV files")


def finetune_config(
    pretrained: str | Path, task: str, overrides: list[str] = (), random_init: bool = False
) -> RunConfig:
    """The fine-tuning run's config: the pretrained run's model (as a classifier) and vocabulary,
    the recipe, the task's data, then ``overrides``."""
    run = Path(pretrained)
    if not (run / "config.toml").is_file():
        raise ConfigError(f"{run}: not a run folder (no config.toml)")
    base = config.load(run / "config.toml")
    if not tasks.get(base.model.task).pretrains:
        raise ConfigError(f"{run} is a {base.model.task} run; fine-tuning needs a masked-LM run")
    raw = config.to_dict(base)
    raw["model"]["task"] = "classify"
    raw["train"] = {k: raw["train"][k] for k in ("seed", "device", "threads", "precision", "progress")}
    sets = RECIPE + task_data(task) + [f"train.init_from={config.toml_value(str(run.resolve()))}"]
    sets += [f"train.init_weights='{'random' if random_init else 'pretrained'}'", *overrides]
    return config.from_dict(config.apply_overrides(raw, sets))


def default_out(pretrained: str | Path, task: str, random_init: bool = False) -> Path:
    """``<pretrained>-ft-<task>`` beside the pretrained run (``-random`` for the control)."""
    run = Path(pretrained)
    name = task if task in TASKS else Path(task).name
    return run.parent / f"{run.name}-ft-{name}{'-random' if random_init else ''}"


def finetune(
    pretrained: str | Path,
    task: str,
    out: str | Path | None = None,
    overrides: list[str] = (),
    random_init: bool = False,
    allow_data_change: bool = False,
) -> dict:
    """Fine-tune ``pretrained`` on ``task`` into ``out`` (resuming it if it holds a checkpoint; on
    task files that changed since only with ``allow_data_change``); returns the final status with
    test accuracy (and F1)."""
    out = Path(out) if out else default_out(pretrained, task, random_init)
    if out.resolve() == Path(pretrained).resolve():
        raise ConfigError(f"--out {out} is the pretrained run itself; fine-tuning writes a run folder of its own")
    from .fit import train  # torch and the trainer only when fine-tuning (the lab names folders here)

    cfg = finetune_config(pretrained, task, list(overrides), random_init)
    return train(cfg, out, allow_data_change)
