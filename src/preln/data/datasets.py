"""Tokenized datasets that hand the trainer deterministic, resumable batches.

A batch is addressed by (split, epoch, k): the k-th batch of that epoch's shuffled order. The
trainer's data-order state is therefore just (epoch, k), which makes resuming exact.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from .. import atomic
from ..config import RunConfig
from .batching import Batch, Batches, mask_tokens, pad, token_batches
from .corpus import CorpusError, find_file, read_parallel, read_tsv, resolve_path
from .digests import file_sha256, remember
from .idcache import CachedCorpus, load_corpus, load_text_corpus
from .segments import Columns, Segments
from .sources import pair_source, read_text_source, translation_source
from .tokenizer import BOS, EOS, MASK, PAD, Tokenizer

SPLITS = {
    "multi30k": ("train", "val", "test_2016_flickr"),
    "parallel": ("train", "valid", "test"),
    "tsv": ("train", "valid", "test"),
}


class _Data:
    """Examples per split, their token-budget batches, and a seeded per-epoch batch order."""

    def __init__(self, examples: dict[str, list], max_tokens: int, seed: int, multiple: int = 8) -> None:
        self.examples, self.seed, self.multiple, self.max_tokens = examples, seed, multiple, max_tokens
        self.pad_multiple = 1  # data.pad_to_multiple: sequence lengths rounded up (load_data sets it)
        self.notes: list[str] = []
        self.token_ids: dict[str, str] = {}  # the token-id cache entry (idcache.CachedCorpus.provenance)
        self.counts: np.ndarray | None = None  # the train split's token frequencies, as the cache holds them
        self.entry: Path | None = None  # the token-id cache entry: batches are cached beside it
        self._batches: dict[str, Batches] | None = None
        self._order: tuple[int, list[int]] = (-1, [])

    @property
    def batches(self) -> dict[str, Batches]:
        """Each split's token-budget batches, built on first use (or mapped from beside the cache
        entry, where the first run that needed them left them)."""
        if self._batches is None:
            self._batches = {s: self._batches_of(s, ex) for s, ex in self.examples.items()}
        return self._batches

    def _batches_of(self, split: str, examples) -> Batches:
        def build() -> Batches:
            return token_batches(self.sizes(examples), self.max_tokens, self.multiple)

        if self.entry is None:
            return build()
        return cached_batches(self.entry, f"{split}-{self.max_tokens}-{self.multiple}", build)

    def size(self, example) -> tuple[int, ...]:
        raise NotImplementedError

    def sizes(self, examples) -> np.ndarray:
        """(N, sides) lengths; of memory-mapped examples without reading their ids."""
        if isinstance(examples, Segments):
            return examples.lengths()[:, None]
        if isinstance(examples, Columns):
            return self.column_sizes(examples)
        return np.array([self.size(e) for e in examples], np.int64).reshape(len(examples), -1)

    def column_sizes(self, examples: Columns) -> np.ndarray:
        return examples.columns[0].lengths()[:, None]

    def num_batches(self, split: str = "train") -> int:
        return len(self.batches[split])

    def order(self, epoch: int) -> list[int]:
        """The training batches' order in ``epoch`` (1-based), from (seed, epoch) only."""
        cached = self._order  # one read: the prefetch thread may be replacing it with the next epoch's
        if cached[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            cached = (epoch, torch.randperm(len(self.batches["train"]), generator=g).tolist())
            self._order = cached
        return cached[1]

    def batch(self, split: str, epoch: int, k: int) -> Batch:
        """The k-th batch of ``split`` (in ``epoch``'s shuffled order for train)."""
        return self.collate(self.batch_examples(split, epoch, k), epoch * 1_000_003 + k)

    def batch_examples(self, split: str, epoch: int, k: int) -> list:
        return [self.examples[split][i] for i in self.batch_indices(split, epoch, k)]

    def batch_indices(self, split: str, epoch: int, k: int) -> list[int]:
        """The examples (their indices) of the k-th batch of ``split``."""
        return self.batches[split][self.order(epoch)[k] if split == "train" else k]

    def ntokens(self, split: str, epoch: int, k: int) -> int:
        """The k-th batch's ``ntokens`` (what its loss is divided by); datasets that can count them
        from the examples do so without collating (another rank's batch under torchrun)."""
        return self.batch(split, epoch, k).ntokens

    def baselines(self) -> dict[str, float]:
        """Reference losses of trivial models on this data, to read the validation loss against."""
        return {}

    def train_counts(self) -> np.ndarray:
        """The train split's token frequencies (from the cache entry, else counted now)."""
        if self.counts is not None:
            return self.counts
        return token_counts(self.examples["train"], self.vocab)

    def collate(self, examples: list, seed: int) -> Batch:
        raise NotImplementedError


class TranslationData(_Data):
    """Examples are (source ids + </s>, target ids)."""

    def size(self, example) -> tuple[int, ...]:
        return (len(example[0]), len(example[1]) + 1)

    def column_sizes(self, examples: Columns) -> np.ndarray:
        src, tgt = examples.columns
        return np.stack([src.lengths(), tgt.lengths() + 1], 1)

    def collate(self, examples: list, seed: int) -> Batch:
        m = self.pad_multiple
        src = pad([s for s, _ in examples], PAD, m)
        tgt_in = pad([[BOS] + t for _, t in examples], PAD, m)  # (B, T) decoder input
        tgt_out = pad([t + [EOS] for _, t in examples], -100, m)  # (B, T) next-token targets
        return Batch({"src": src, "tgt_in": tgt_in, "tgt_out": tgt_out}, self.count(examples))

    @staticmethod
    def count(examples: list) -> int:
        return sum(len(t) + 1 for _, t in examples)  # target tokens and </s>

    def ntokens(self, split: str, epoch: int, k: int) -> int:
        return self.count(self.batch_examples(split, epoch, k))


class MLMData(_Data):
    """Examples are <cls> ids <sep> (or, with ``pairs``, <cls> A <sep> B <sep>: the batch carries
    segment ids, 1 from the token after the first <sep>); masking is drawn per batch from (seed,
    epoch, k)."""

    def __init__(
        self,
        examples: dict[str, list],
        max_tokens: int,
        seed: int,
        mask_prob: float,
        vocab: int,
        multiple: int = 8,
        pairs: bool = False,
    ):
        super().__init__(examples, max_tokens, seed, multiple)
        self.mask_prob, self.vocab, self.pairs = mask_prob, vocab, pairs

    def size(self, example) -> tuple[int, ...]:
        return (len(example),)

    def baselines(self) -> dict[str, float]:
        """``unigram_nll``: the valid split's cross-entropy under the training split's token
        frequencies (add-one smoothed), over the tokens masking chooses from (not <cls>/<sep>): a
        model whose masked-token NLL is not clearly below it has not learned context."""
        return unigram_nll(self.train_counts(), self.examples["valid"], self.vocab, (PAD, BOS, EOS))

    def collate(self, examples: list, seed: int) -> Batch:
        ids = pad(examples, PAD, self.pad_multiple)
        special = (ids == PAD) | (ids == BOS) | (ids == EOS)
        g = torch.Generator().manual_seed(self.seed * 7919 + seed)
        inputs, targets = mask_tokens(ids, self.mask_prob, special, MASK, self.vocab, MASK + 1, g)
        tensors = {"ids": inputs, "targets": targets}
        if self.pairs:  # segment B starts after the first <sep>
            first = (ids == EOS).int().argmax(1)  # (B,)
            tensors["segments"] = (torch.arange(ids.shape[1])[None, :] > first[:, None]).long()  # (B, T)
        return Batch(tensors, int((targets != -100).sum()))


def cached_batches(entry: Path, name: str, build) -> Batches:
    """``build()``'s batches, stored beside the token-id cache ``entry`` (``<entry>.batches/``) and
    memory-mapped by later runs: a start from a built cache neither sorts nor holds every
    example's length. Files are checked against the SHA-256 recorded with them; anything off
    (missing, damaged) is built again."""
    folder, memo = entry.with_name(f"{entry.name}.batches"), entry.parent.parent / "digests"
    files = {k: folder / f"{name}.{k}.npy" for k in ("order", "bounds")}
    record = folder / f"{name}.json"
    if record.exists():
        try:
            recorded = json.loads(record.read_text())
            if all(file_sha256(f, memo) == recorded[f.name] for f in files.values()):
                return Batches(np.load(files["order"], mmap_mode="r"), np.load(files["bounds"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # damaged: built again, below
            pass
        print(f"[preln] warning: token-id cache {folder / name}.* is damaged; rebuilding the batches", file=sys.stderr)
    batches = build()
    folder.mkdir(parents=True, exist_ok=True)
    digests = {}
    for k, values in (("order", batches.order), ("bounds", batches.bounds)):
        tmp = folder / f".{name}.{k}.{os.getpid()}.npy"
        np.save(tmp, values)
        digests[files[k].name] = file_sha256(tmp)
        os.replace(tmp, files[k])  # another run writing the same name writes the same values
        remember(files[k], digests[files[k].name], memo)
    atomic.write_text(folder / f"{name}.json", json.dumps(digests))
    return batches


def token_counts(segments: Segments, vocab: int) -> np.ndarray:
    return np.bincount(np.asarray(segments.ids[segments.offsets[0] : segments.offsets[-1]]), minlength=vocab)


def unigram_nll(counts: np.ndarray, valid: Segments, vocab: int, excluded: tuple[int, ...]) -> dict[str, float]:
    """``unigram_nll``: the valid split's cross-entropy under the training split's token
    frequencies ``counts`` (add-one smoothed), over the tokens that are not ``excluded``."""
    counts = np.array(counts[:vocab], np.float64)
    counts[list(excluded)] = 0
    logp = np.log((counts + 1) / (counts.sum() + vocab))
    ids = np.asarray(valid.ids[valid.offsets[0] : valid.offsets[-1]])
    ids = ids[~np.isin(ids, excluded)]
    return {"unigram_nll": float(-logp[ids].mean())} if len(ids) else {}


class CausalData(_Data):
    """Next-token prediction on text: examples are ``<s> ids </s>``; the model reads all but the
    last token and predicts all but the first (``</s>`` included: where a text ends)."""

    def __init__(self, examples: dict[str, list], max_tokens: int, seed: int, vocab: int, multiple: int = 8):
        super().__init__(examples, max_tokens, seed, multiple)
        self.vocab = vocab

    def size(self, example) -> tuple[int, ...]:
        return (len(example),)

    def baselines(self) -> dict[str, float]:
        """The unigram model's NLL of the predicted tokens (every token after ``<s>``)."""
        return unigram_nll(self.train_counts(), self.examples["valid"], self.vocab, (PAD, BOS))

    def collate(self, examples: list, seed: int) -> Batch:
        m = self.pad_multiple
        ids = pad([e[:-1] for e in examples], PAD, m)  # (B, T) inputs
        targets = pad([e[1:] for e in examples], -100, m)  # (B, T) the next tokens
        return Batch({"ids": ids, "targets": targets}, self.count(examples))

    @staticmethod
    def count(examples: list) -> int:
        return sum(len(e) - 1 for e in examples)

    def ntokens(self, split: str, epoch: int, k: int) -> int:
        return self.count(self.batch_examples(split, epoch, k))


class PairData(_Data):
    """Sentence-pair classification: examples are (``<cls> s1 <sep> s2 <sep>`` ids, the length of
    segment A (``<cls> s1 <sep>``), class id). A batch's ``ntokens`` counts examples, so losses are
    per example."""

    def size(self, example) -> tuple[int, ...]:
        return (len(example[0]),)

    def collate(self, examples: list, seed: int) -> Batch:
        ids, segments = pair_tensors([e[:2] for e in examples], self.pad_multiple)
        labels = torch.tensor([e[2] for e in examples])  # (B,)
        return Batch({"ids": ids, "segments": segments, "labels": labels}, len(examples))

    def ntokens(self, split: str, epoch: int, k: int) -> int:
        return len(self.batch_indices(split, epoch, k))  # one per example


def pair_tensors(encoded: list[tuple[list[int], int]], pad_multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded ids (B, T) and segment ids (B, T: 0 for ``<cls> A <sep>``, 1 after) of pairs encoded
    by ``batching.encode_pair`` as (ids, length of segment A)."""
    ids = pad([e[0] for e in encoded], PAD, pad_multiple)  # (B, T)
    first = torch.tensor([e[1] for e in encoded])  # (B,)
    return ids, (torch.arange(ids.shape[1])[None, :] >= first[:, None]).long()


def pair_file(cfg: RunConfig, split: str) -> Path:
    """The TSV of ``split`` (train, valid or test) of a pair-classification folder."""
    d = cfg.data
    folder = resolve_path(d.path)
    if not folder.is_dir():
        raise CorpusError(f"{folder}: a pairs corpus is a folder of {d.pair_prefix}{{train,dev,test}}.tsv[.gz] files")
    return find_file(folder, f"{d.pair_prefix}{ {'valid': 'dev'}.get(split, split) }.tsv")


def read_pair_examples(cfg: RunConfig, tok: Tokenizer) -> tuple[dict[str, Columns], list[str], CachedCorpus]:
    """The splits' examples as (ids, length of segment A, label) columns, from the token-id cache
    (built on first use), the notes on them, and the cache entry."""
    files, notes = {}, []
    for split in ("train", "valid", "test"):
        try:
            files[split] = pair_file(cfg, split)
        except CorpusError:
            if split != "test":
                raise
            notes.append("no test file: test scores are left out")
    d = cfg.data
    settings = (
        "pairs",
        *files,
        d.pair_prefix,
        d.pair_columns,
        d.pair_labels,
        d.max_train_examples,
        d.max_valid_examples,
    )
    got = load_corpus(list(files.values()), settings, d, tok.path, lambda: pair_source(files, cfg))
    splits = [s for s in files if f"{s}.ids" in got.segments]
    out = {s: Columns(got.segments[f"{s}.ids"], got.arrays[f"{s}.first"], got.arrays[f"{s}.labels"]) for s in splits}
    return out, [*notes, *got.notes], got


def read_translation_examples(cfg: RunConfig, tokenizer_file: Path | None) -> tuple[dict[str, Columns], CachedCorpus]:
    """The train and valid splits' (source ids + </s>, target ids) columns from the token-id
    cache (built on first use: the corpus read, a vocabulary trained unless given, encoded)."""
    d = cfg.data
    files = [f for split in ("train", "valid") for f in corpus_files(cfg).get(split, [])]
    settings = (
        "translation",
        d.corpus,
        d.src_lang,
        d.tgt_lang,
        d.tsv_langs,
        d.max_train_examples,
        d.max_valid_examples,
    )

    def read():
        text, notes = read_translation(cfg)
        return translation_source(text, d.max_len, notes)

    got = load_corpus(files, settings, d, tokenizer_file, read)
    return {s: Columns(got.segments[f"{s}.src"], got.segments[f"{s}.tgt"]) for s in ("train", "valid")}, got


def _limit(xs: list, n: int) -> list:
    return xs[:n] if n > 0 else xs


def read_pairs(cfg: RunConfig, split: str) -> tuple[list[str], list[str], int]:
    """Raw (untokenized) pairs of ``split`` (train, valid or test) and the number dropped empty."""
    d = cfg.data
    folder = resolve_path(d.path)
    if not folder.is_dir():
        raise CorpusError(f"{folder}: a {d.corpus} corpus is a folder")
    name = SPLITS[d.corpus][("train", "valid", "test").index(split)]
    if d.corpus == "tsv":
        return read_tsv(find_file(folder, f"{name}.tsv"), d.tsv_langs, d.src_lang, d.tgt_lang)
    return read_parallel(find_file(folder, f"{name}.{d.src_lang}"), find_file(folder, f"{name}.{d.tgt_lang}"))


def corpus_files(cfg: RunConfig) -> dict[str, list[Path]]:
    """The files each split of ``cfg``'s corpus is read from (train, valid, test; a split whose
    files are absent is left out): what a run's provenance record covers."""
    d = cfg.data
    if d.corpus == "text":
        return {"train": [resolve_path(d.path)], "valid": [resolve_path(d.path)]}  # one file, split by a seed
    out: dict[str, list[Path]] = {}
    for split in ("train", "valid", "test"):
        try:
            if d.corpus == "pairs":
                out[split] = [pair_file(cfg, split)]
                continue
            folder, name = resolve_path(d.path), SPLITS[d.corpus][("train", "valid", "test").index(split)]
            stems = [f"{name}.tsv"] if d.corpus == "tsv" else [f"{name}.{d.src_lang}", f"{name}.{d.tgt_lang}"]
            out[split] = [find_file(folder, stem) for stem in stems]
        except CorpusError:
            continue  # reading the split says what is missing, when a command needs it
    return out


def read_translation(cfg: RunConfig) -> tuple[dict[str, tuple[list[str], list[str]]], list[str]]:
    out, notes = {}, []
    for split in ("train", "valid"):
        src, tgt, dropped = read_pairs(cfg, split)
        if not src:
            raise CorpusError(
                f"the {split} split of {resolve_path(cfg.data.path)} has no pairs (empty files, "
                f"or {dropped} pairs all with an empty side)"
            )
        if dropped:
            notes.append(f"{split}: dropped {dropped} pairs with an empty side")
        n = cfg.data.max_train_examples if split == "train" else cfg.data.max_valid_examples
        out[split] = (_limit(src, n), _limit(tgt, n))
    return out, notes


def read_text_corpus(cfg: RunConfig, tokenizer_file: Path | None, what: str) -> tuple[CachedCorpus, list[str]]:
    """A text corpus's token ids (from the cache, or built and cached) and the notes on them;
    ``what`` (the task, in words) names what needs ``data.corpus = "text"``."""
    if cfg.data.corpus != "text":
        raise CorpusError(f"{what} needs a text corpus (data.corpus = text)")
    path = resolve_path(cfg.data.path)
    text = load_text_corpus(path, cfg.data, tokenizer_file, lambda: read_text_source(path, cfg.data))
    return text, cached_notes(text)


def cached_notes(got: CachedCorpus) -> list[str]:
    return [*got.notes, "token ids from the cache" if got.cached else "token ids cached for the next run"]


def finish(data: _Data, notes: list[str], cfg: RunConfig) -> _Data:
    """Every task's dataset, once built: no split without examples; its notes and padding."""
    for split, ex in data.examples.items():
        if not ex:
            raise CorpusError(f"the {split} split of {cfg.data.path} has no usable examples")
    data.notes, data.pad_multiple = notes, cfg.data.pad_to_multiple
    return data
