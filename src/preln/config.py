"""Run configuration: frozen dataclasses loaded from TOML.

Every field is documented where it is declared. Closed choices are ``Literal`` types and are
checked on load; unknown keys and ill-typed values raise :class:`ConfigError` naming the key
path (``model.norm``), never a traceback from deep inside the trainer.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError  # also preln.config.ConfigError, as before
from .toml_records import apply_overrides, build, did_you_mean, to_dict, toml_value
from .toml_records import toml_literal as toml_literal  # re-exported: the command line's --set values

Placement = Literal["post", "pre", "sandwich", "deepnorm", "admin", "rezero", "mix"]
NormType = Literal["layernorm", "rmsnorm"]
Task = Literal["translation", "mlm", "classify", "causal"]


@dataclass(frozen=True)
class ModelConfig:
    task: Task = "translation"
    """``translation``: encoder-decoder; ``mlm``: encoder-only masked LM (BERT-style);
    ``classify``: the same encoder, trained on sentence pairs through its pooled classifier head
    (fine-tuning, ``preln finetune``; ``data.corpus = "pairs"``); ``causal``: decoder-only causal
    language model of ``encoder_layers`` layers (``data.corpus = "text"``; ``preln generate``)."""
    norm: Placement = "pre"
    """Where the normalization sits around each sub-layer F (``model.py`` has the equations):
    ``post``: x = LN(x + F(x)) (Vaswani et al. 2017); ``pre``: x = x + F(LN(x)) and one final
    LN per stack (Xiong et al. 2020); ``sandwich``: x = x + LN(F(LN(x))), final LN (Ding et al.
    2021; Peri-LN, Kim et al. 2025); ``deepnorm``: x = LN(alpha x + F(x)) with value, output and
    FFN weights scaled by beta at init (Wang et al. 2022); ``admin``: x = LN(omega * x + F(x)),
    omega from a profiling pass at init (Liu et al. 2020); ``rezero``: x = x + a F(x), a = 0 at
    init, no norm (Bachlechner et al. 2020); ``mix``: Post-LN in the first ceil(mix_ratio * L)
    layers of each stack, Pre-LN in the rest, final LN (Li et al. 2024)."""
    norm_type: NormType = "layernorm"
    """``layernorm``, or ``rmsnorm`` (x / rms(x) * g, no centring, no bias: Zhang & Sennrich 2019,
    LLaMA); for every placement that has a norm (not ``rezero``)."""
    mix_ratio: float = 0.25
    """``mix``: share of each stack's layers (rounded up) that are Post-LN."""
    d_model: int = 512
    n_heads: int = 4
    d_ffn: int = 1024
    encoder_layers: int = 6
    decoder_layers: int = 6
    """Ignored for ``mlm`` and ``classify``."""
    dropout: float = 0.3
    """Dropout on sub-layer outputs and embeddings (fairseq ``--dropout``)."""
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    activation: Literal["relu", "gelu"] = "relu"
    positions: Literal["sinusoidal", "learned"] = "sinusoidal"
    max_positions: int = 1024
    embed_layernorm: bool = False
    """LayerNorm right after the embeddings (BERT has one; the paper's MT models do not)."""
    embed_scale: bool = True
    """Multiply token embeddings by sqrt(d_model) (fairseq/Vaswani). BERT presets set False."""
    init: Literal["xavier", "bert"] = "xavier"
    """``xavier``: Xavier-uniform weights, zero biases, N(0, d^-1/2) embeddings (fairseq; the
    paper's analysis assumes Xavier). ``bert``: N(0, 0.02) weights and embeddings."""
    vocab_size: int = 0
    """0 = take it from the tokenizer; the resolved config records the real size."""
    type_vocab_size: int = 2
    """Segment (sentence A/B) embeddings for ``mlm`` and ``classify``; 0 disables them."""
    num_classes: int = 2
    """Outputs of the pooled sentence-pair classification head (``mlm`` and ``classify``)."""


@dataclass(frozen=True)
class DataConfig:
    corpus: Literal["multi30k", "parallel", "tsv", "text", "pairs"] = "multi30k"
    """``multi30k``: a folder with ``{train,val,test_2016_flickr}.{de,en}[.gz]``;
    ``parallel``: a folder with ``{train,valid,test}.{src_lang,tgt_lang}[.gz]`` line-aligned files
    (what ``preln prepare iwslt14`` writes); ``tsv``: a folder with ``{train,valid,test}.tsv[.gz]``
    whose last two columns are ``tsv_langs``; ``text``: one segment per line (masked LM), valid
    held out by a seeded split; ``pairs``: sentence-pair classification, a folder with
    ``{pair_prefix}{train,dev,test}.tsv[.gz]`` (test optional), a header row naming the columns
    (``pair_columns``)."""
    tsv_langs: tuple[str, str] = ("de", "en")
    """Languages of a TSV corpus's last two columns (debdocs-de-en: source, de, en)."""
    path: str = "multi30k"
    """Corpus folder or file. A relative path that does not exist from the working directory
    is looked up under ``$PRELN_DATA_ROOT`` (default ``../shared/data``). ``--data`` overrides."""
    src_lang: str = "de"
    tgt_lang: str = "en"
    pretokenized: bool = False
    """The corpus text is already Moses-tokenized (and lowercased, XML-escaped), as ``preln prepare
    iwslt14`` writes it: BLEU scores it as it stands (tokenized BLEU, the IWSLT14 convention) and
    reports no detokenized sacreBLEU. False for raw text (Multi30k, TSV)."""
    vocab_size: int = 8000
    """Joint sentencepiece vocabulary size (trained on the training side, cached)."""
    spm_model: Literal["bpe", "unigram"] = "bpe"
    max_len: int = 128
    """Longest sequence in tokens; longer training pairs are dropped (translation) or
    truncated (mlm), and the number dropped is reported."""
    max_tokens: int = 4096
    """Token budget per batch, fairseq's ``--max-tokens`` rule (v0.9, the paper's code): an example
    counts as its longer side (source or target, each with its </s>; the segment for mlm), a batch
    of n examples as n x its longest example. On Multi30k, 4096 gives ~2,800 target tokens a batch."""
    batch_size_multiple: int = 8
    """A full batch is cut to a multiple of this many examples (fairseq
    ``--required-batch-size-multiple``, default 8); 1 = no rounding."""
    pad_to_multiple: int = 1
    """Pad every batch's sequence length up to a multiple of this (8 or 16 with ``train.compile``:
    shapes repeat, so recompilations stay few); 1 = to the longest sequence. Padding is masked
    everywhere; with masked LM the masks drawn differ from an unpadded run's."""
    max_train_examples: int = 0
    """Use only the first N training examples (0 = all): CPU-sized and test runs."""
    max_valid_examples: int = 0
    valid_fraction: float = 0.01
    """``text`` corpora only: share held out for validation."""
    mask_prob: float = 0.15
    """Masked-LM: share of tokens chosen; of those 80% -> <mask>, 10% random, 10% kept."""
    mlm_pairs: bool = False
    """Masked-LM on BERT's input: each example two consecutive segments of the corpus (lines 2i
    and 2i + 1, paired before the shuffle), ``<cls> A <sep> B <sep>`` with segment ids 0 and 1, the
    longer segment cut first to ``max_len``; fine-tuning on sentence pairs then starts from trained
    segment embeddings and a trained middle ``<sep>``. False: one segment an example, no segment
    ids."""
    cache_dir: str = ""
    """Where tokenizers and masked-LM token ids are cached; empty = ``$PRELN_CACHE`` or
    ``~/.cache/preln``."""
    pair_prefix: str = ""
    """``pairs``: file-name prefix of the task's files (``paraphrase.`` in ``pairclf/``)."""
    pair_columns: tuple[str, str, str] = ("label", "s1", "s2")
    """``pairs``: header names of the label, first-sentence and second-sentence columns. GLUE's
    MRPC: ``["Quality", "#1 String", "#2 String"]``; RTE: ``["label", "sentence1", "sentence2"]``."""
    pair_labels: tuple[str, ...] = ("0", "1")
    """``pairs``: the label column's values in class order (class 1 is the positive class of F1).
    RTE: ``["not_entailment", "entailment"]``."""


@dataclass(frozen=True)
class OptimConfig:
    name: Literal["adam", "adamw", "sgd", "radam"] = "adam"
    lr: float = 5e-4
    """Peak learning rate (the schedule scales it)."""
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    weight_decay: float = 0.0
    """Never applied to LayerNorm parameters and biases."""
    momentum: float = 0.0
    """SGD only."""
    clip_norm: float = 0.0
    """Clip the global gradient norm to this value; 0 = off (as in the paper)."""


@dataclass(frozen=True)
class ScheduleConfig:
    kind: Literal["constant", "inverse_sqrt", "linear", "step"] = "inverse_sqrt"
    """``constant``; ``inverse_sqrt`` (fairseq); ``linear`` decay to 0 at ``total`` (BERT);
    ``step``: multiply by ``gamma`` at each milestone. All start with the linear warm-up."""
    warmup: int = 4000
    """Linear warm-up updates; 0 = none (the first update runs at the peak lr)."""
    warmup_fraction: float = 0.0
    """Warm-up as a share of the run's updates (BERT fine-tuning: 0.1); > 0 overrides ``warmup``."""
    warmup_init_lr: float = 0.0
    """lr the warm-up ramps from (update 0); update 1 runs at init + (peak - init) / warmup."""
    timescale: int = 0
    """inverse_sqrt: lr = peak * sqrt(timescale / step) once step > timescale; 0 = warmup.
    Must be set (> 0) when warmup is 0."""
    total: int = 0
    """linear: update at which lr reaches 0; 0 = train.max_updates."""
    milestones: tuple[int, ...] = ()
    """step: updates (or epochs, see ``unit``) at which lr is multiplied by ``gamma``."""
    unit: Literal["update", "epoch"] = "update"
    gamma: float = 0.1


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 1
    max_updates: int = 1000
    """Stop after this many optimizer updates (0 = no limit; then max_epochs must be set)."""
    max_epochs: int = 0
    update_freq: int = 1
    """Gradient accumulation: batches per optimizer update."""
    label_smoothing: float = 0.1
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    """bf16/fp16 autocast on CUDA; CPU runs must use fp32. ``auto``: bf16 on CUDA, fp32 elsewhere
    (the GPU presets); the run's config.toml records what it resolved to."""
    device: str = "auto"
    """``auto`` (CUDA if available), ``cpu``, ``cuda``, ``cuda:1``..."""
    log_every: int = 10
    valid_every: int = 0
    """Validate every N updates (0: never mid-epoch). The end of every epoch and of the run always
    validate (with BLEU for translation, see ``valid_bleu``)."""
    save_every: int = 0
    """Checkpoint every N updates; 0 = at the end of each epoch. The run always ends with one."""
    keep_last: int = 2
    """Checkpoints kept (the newest N); older ones are deleted."""
    threads: int = 0
    """torch CPU threads; 0 = torch's default (a thread per core: runs side by side need fewer)."""
    progress: bool = True
    """A progress bar when stderr is a terminal; in a file, or with false, a plain line with the
    training loss, lr, gradient norm and speed every ``log_every`` updates instead."""
    valid_bleu: bool = True
    """Translation: also greedy-decode the valid split and report BLEU at each epoch's end and at
    the end of the run (``preln evaluate`` gives beam-search BLEU)."""
    tensorboard: bool = False
    """Also write TensorBoard event files into ``RUN/tensorboard/`` (losses, lr, grad norm, tokens/s,
    validation, BLEU, telemetry): ``tensorboard --logdir runs/``. Needs ``preln[tensorboard]``.
    The same as "tensorboard" in ``loggers``."""
    loggers: tuple[Literal["tensorboard", "wandb", "mlflow"], ...] = ()
    """Trackers that get the run's config and numbers besides its JSON logs (``loggers.py``):
    TensorBoard (with HParams), Weights & Biases (offline unless ``WANDB_MODE``), MLflow (a local
    store in the run folder unless ``MLFLOW_TRACKING_URI``); each an optional package."""
    telemetry_every: int = 0
    """Every N updates, per layer and weight matrix: gradient norm and update-to-weight ratio, and
    the residual stream's RMS per layer, into ``telemetry.jsonl`` (``telemetry.py``); 0 = off.
    Not under FSDP (sharded weights)."""
    compile: bool = False
    """``torch.compile`` the model (in place; CUDA is where it pays: see README, GPU). With
    ``data.pad_to_multiple`` = 8 or 16; the number of compiled graphs is logged."""
    init_from: str = ""
    """A run folder (a masked-LM run) whose newest checkpoint initializes the encoder and whose
    vocabulary this run uses: fine-tuning (``preln finetune``). The pooler and classifier are
    drawn afresh from ``seed``. Its architecture must equal this run's ``model`` section."""
    init_weights: Literal["pretrained", "random"] = "pretrained"
    """With ``init_from``: ``random`` keeps its vocabulary and architecture but not its weights (the
    control that shows what pretraining gave)."""
    parallel: Literal["ddp", "fsdp"] = "ddp"
    """Under ``torchrun`` (WORLD_SIZE > 1): DDP (replicated weights) or FSDP (sharded weights)."""


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------- loading


def from_dict(data: dict) -> RunConfig:
    cfg = build(RunConfig, data, "")
    validate(cfg)
    return cfg


def override(obj: Any, items: list[str]) -> Any:
    """A copy of the config dataclass ``obj`` (a RunConfig, an AnalysisConfig, ...) with
    ``section.key=value`` items applied, type-checked like a loaded file; a RunConfig is validated."""
    new = build(type(obj), apply_overrides(to_dict(obj), list(items)), "")
    if isinstance(new, RunConfig):
        validate(new)
    return new


PRESETS = Path(__file__).resolve().parent / "configs"
"""The shipped presets (``configs/*.toml`` in the package): ``preln train cpu-multi30k-pre``."""


def find(path: str | Path) -> Path:
    """A config file: ``path`` as given, else a shipped preset of that name (``cpu-multi30k-pre``)."""
    p = Path(path)
    if p.is_file():
        return p
    preset = PRESETS / f"{p.name.removesuffix('.toml')}.toml"
    if p.parent in (Path("."), Path("configs")):
        if preset.is_file():
            return preset
    stems = sorted(q.stem for q in PRESETS.glob("*.toml"))
    hint = did_you_mean(p.name.removesuffix(".toml"), stems)
    raise ConfigError(f"config file not found: {p}{hint} (shipped presets, usable by name: {', '.join(stems)})")


def load(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load a TOML config file (or a shipped preset by name), apply ``--set`` overrides, validate."""
    p = find(path)
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text (a damaged or binary file)") from None
    if not data:  # every default: never what a config file (or a run's config.toml) means
        raise ConfigError(f"{p}: empty (a config sets at least its [model] and [data])")
    return from_dict(apply_overrides(data, overrides or []))


def validate(cfg: RunConfig) -> None:
    """Value checks that types cannot express."""
    for ok, msg in _model_checks(cfg) + _training_checks(cfg):
        if not ok:
            raise ConfigError(msg)


def _model_checks(cfg: RunConfig) -> list[tuple[bool, str]]:
    m, d = cfg.model, cfg.data  # d: the data section
    return [
        (m.d_model > 0, "model.d_model must be > 0"),
        (m.n_heads > 0 and m.d_model % m.n_heads == 0, "model.d_model must divide by n_heads"),
        (m.d_ffn > 0, "model.d_ffn must be > 0"),
        (m.encoder_layers > 0, "model.encoder_layers must be > 0"),
        (
            all(0 <= p < 1 for p in (m.dropout, m.attention_dropout, m.activation_dropout)),
            "model dropouts must be in [0, 1)",
        ),
        (m.vocab_size >= 0, "model.vocab_size must be >= 0"),
        (0 <= m.mix_ratio <= 1, f"model.mix_ratio must be in [0, 1], got {m.mix_ratio}"),
        (
            m.norm != "rezero" or m.norm_type == "layernorm",
            "model.norm_type does not apply to norm='rezero' (it has no norm); leave it at 'layernorm'",
        ),
        (m.type_vocab_size >= 0 and m.num_classes >= 1, "model.type_vocab_size must be >= 0, num_classes >= 1"),
        (
            m.max_positions >= d.max_len,
            f"model.max_positions ({m.max_positions}) must be >= data.max_len ({d.max_len}): every token "
            "of the longest example needs a position",
        ),
    ]


def _training_checks(cfg: RunConfig) -> list[tuple[bool, str]]:
    d, o, s, t = cfg.data, cfg.optim, cfg.schedule, cfg.train
    return [
        (d.vocab_size > 0, "data.vocab_size must be > 0"),
        (d.max_len > 1, "data.max_len must be > 1"),
        (
            len(set(d.pair_columns)) == 3 and len(set(d.pair_labels)) == len(d.pair_labels) >= 2,
            f"data.pair_columns must name three different columns and data.pair_labels at least two different "
            f"values, got {list(d.pair_columns)} and {list(d.pair_labels)}",
        ),
        (
            d.max_tokens >= d.max_len,
            f"data.max_tokens must hold at least one longest example (>= data.max_len={d.max_len})",
        ),
        (d.batch_size_multiple >= 1, "data.batch_size_multiple must be >= 1"),
        (d.pad_to_multiple >= 1, "data.pad_to_multiple must be >= 1 (1 = no rounding)"),
        (
            d.max_train_examples >= 0 and d.max_valid_examples >= 0,
            "data.max_train_examples / max_valid_examples must be >= 0 (0 = all)",
        ),
        (0 < d.mask_prob < 1, "data.mask_prob must be in (0, 1)"),
        (0 < d.valid_fraction < 1, "data.valid_fraction must be in (0, 1)"),
        (o.lr > 0, "optim.lr must be > 0"),
        (s.warmup_init_lr >= 0 and s.gamma > 0, "schedule.warmup_init_lr must be >= 0 and schedule.gamma > 0"),
        (all(0 <= b < 1 for b in o.betas), "optim.betas must be in [0, 1)"),
        (
            o.eps > 0 and o.weight_decay >= 0 and o.momentum >= 0 and o.clip_norm >= 0,
            "optim.eps must be > 0; weight_decay, momentum, clip_norm >= 0",
        ),
        (s.warmup >= 0 and s.timescale >= 0 and s.total >= 0, "schedule counts must be >= 0"),
        (0 <= s.warmup_fraction < 1, "schedule.warmup_fraction must be in [0, 1)"),
        (
            s.kind != "inverse_sqrt" or s.warmup > 0 or s.timescale > 0,
            "schedule.timescale must be > 0 for inverse_sqrt without warm-up",
        ),
        (
            s.kind != "linear" or s.total > 0 or t.max_updates > 0 or t.max_epochs > 0,
            "schedule.total (or train.max_updates or max_epochs) must be > 0 for the linear schedule",
        ),
        (
            list(s.milestones) == sorted(s.milestones) and all(x > 0 for x in s.milestones),
            "schedule.milestones must be positive and increasing",
        ),
        (t.max_updates >= 0 and t.max_epochs >= 0, "train.max_updates/max_epochs must be >= 0"),
        (t.max_updates > 0 or t.max_epochs > 0, "set train.max_updates or train.max_epochs"),
        (t.update_freq >= 1, "train.update_freq must be >= 1"),
        (t.threads >= 0, "train.threads must be >= 0 (0 = torch's default)"),
        (t.telemetry_every >= 0, "train.telemetry_every must be >= 0 (0 = off)"),
        (
            re.fullmatch(r"auto|cpu|cuda(:\d+)?", t.device) is not None,
            f"train.device: {t.device!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N'",
        ),
        (0 <= t.label_smoothing < 1, "train.label_smoothing must be in [0, 1)"),
        (
            t.log_every > 0 and t.valid_every >= 0 and t.save_every >= 0 and t.keep_last >= 1,
            "train.log_every/keep_last must be > 0; valid_every/save_every >= 0",
        ),
    ]


def dumps(cfg: RunConfig) -> str:
    """TOML text of a config; ``load`` of it gives the same config back."""
    lines = []
    for section, values in to_dict(cfg).items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
        lines.append("")
    return "\n".join(lines)


def with_vocab(cfg: RunConfig, vocab_size: int) -> RunConfig:
    return replace(cfg, model=replace(cfg.model, vocab_size=vocab_size))


def diff(a: RunConfig, b: RunConfig) -> list[str]:
    """Key paths whose values differ between two configs."""
    da, db = to_dict(a), to_dict(b)
    return [f"{s}.{k}: {da[s][k]!r} -> {db[s][k]!r}" for s in da for k in da[s] if da[s][k] != db[s][k]]
