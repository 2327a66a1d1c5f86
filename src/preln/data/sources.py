"""Each corpus kind as a token-id cache entry is built from it (``idcache.Source``): read the
files, name the text a vocabulary learns from, and encode the examples into flat arrays a chunk
of lines at a time (the build's memory stays bounded by the text, not by lists of ids)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import DataConfig, RunConfig
from .batching import encode_pair
from .corpus import CorpusError, read_pair_tsv, refuse_subword_count
from .idcache import Encoded, Source
from .segments import Segments, SegmentsWriter
from .textlines import read_stripped, shuffled
from .tokenizer import BOS, EOS, Tokenizer

CHUNK = 20_000  # lines encoded at a time

PAIR = "\t"
"""Joins the two segments of a pair in ``read_text``'s lines (a tab never survives ``strip``-ped
corpus lines as content: the corpus reader keeps one segment a line)."""


def encode_text(tok: Tokenizer, lines: list[str], max_len: int, out: SegmentsWriter) -> tuple[int, np.ndarray]:
    """Append ``<cls> ids <sep>`` per line, or ``<cls> A <sep> B <sep>`` per pair (lines joined by
    ``PAIR``; ``batching.encode_pair``, the longer segment cut first), to ``out``; (the number
    truncated, the ids appended)."""
    if lines and PAIR in lines[0]:  # a pair corpus: every line is a pair
        halves = [ln.split(PAIR, 1) for ln in lines]
        a, b = (tok.encode(list(h)) for h in zip(*halves))
        truncated = sum(len(x) + len(y) + 3 > max_len for x, y in zip(a, b))
        seqs = [encode_pair(x, y, max_len)[0] for x, y in zip(a, b)]
    else:
        enc = tok.encode(lines)
        truncated = sum(len(e) > max_len - 2 for e in enc)
        seqs = [[BOS, *e[: max_len - 2], EOS] for e in enc]
    return truncated, out.add(seqs)


def read_text_source(path: Path, d: DataConfig) -> tuple[Source, str]:
    """A text corpus read once (``textlines``), and the SHA-256 of its bytes: one segment a line
    (or pairs of consecutive lines, ``data.mlm_pairs``), shuffled by a fixed seed (independent of
    the training seed) and split into train and valid (``data.valid_fraction``), each cut to its
    limit. The entry also holds the train split's token frequencies (``train.counts``: the
    unigram baseline without reading every id again)."""
    found, sha = read_stripped(path)
    refuse_subword_count(path, found.joins, found.first_join, found.total)
    store = found.store()
    n = len(store) // 2 if d.mlm_pairs else len(store)  # consecutive segments paired before the shuffle
    if n < 2:
        raise CorpusError(f"{path}: {n} non-empty line(s); a text corpus needs a train and a valid part")
    order = shuffled(n)
    n_valid = max(1, int(n * d.valid_fraction))
    split = {"train": order[n_valid:], "valid": order[:n_valid]}
    for name, limit in (("train", d.max_train_examples), ("valid", d.max_valid_examples)):
        split[name] = split[name][:limit] if limit else split[name]

    def items(indices) -> list[str]:
        if not d.mlm_pairs:
            return store.take(indices)
        return [f"{store[2 * k]}{PAIR}{store[2 * k + 1]}" for k in indices.tolist()]

    def encode(tok: Tokenizer, scratch: Path) -> Encoded:
        segments, out, counts = {}, [], np.zeros(len(tok), np.int64)
        for name, indices in split.items():
            writer, truncated = SegmentsWriter(scratch, name), 0
            for i in range(0, len(indices), CHUNK):
                cut, ids = encode_text(tok, items(indices[i : i + CHUNK]), d.max_len, writer)
                truncated += cut
                if name == "train":
                    counts += np.bincount(ids, minlength=len(tok))
            segments[name] = writer.close()
            if truncated:
                out.append(f"{name}: truncated {truncated} segments to {d.max_len} tokens")
        return Encoded(segments, {"train.counts": counts}, out)

    notes = [f"dropped {found.empty} empty lines"] if found.empty else []
    return Source(lambda: Reiterable(lambda: segments_of(split["train"], items)), encode, notes), sha


class Reiterable:
    """An iterable that can be gone through more than once (hashed, then trained on)."""

    def __init__(self, make) -> None:
        self.make = make

    def __iter__(self):
        return self.make()


def segments_of(indices: np.ndarray, items):
    """The segments of the train split, pairs split in two: what the vocabulary learns from."""
    for i in range(0, len(indices), CHUNK):
        for ln in items(indices[i : i + CHUNK]):
            yield from ln.split(PAIR)


def translation_source(text: dict[str, tuple[list[str], list[str]]], max_len: int, notes: list[str]) -> Source:
    """(source ids + ``</s>``, target ids) per pair; pairs with a side over ``max_len`` dropped."""

    def encode(tok: Tokenizer, scratch: Path) -> Encoded:
        segments, out = {}, []
        for split, (src, tgt) in text.items():
            a_out, b_out, dropped = SegmentsWriter(scratch, f"{split}.src"), SegmentsWriter(scratch, f"{split}.tgt"), 0
            for start in range(0, len(src), CHUNK):
                a, b = tok.encode(src[start : start + CHUNK]), tok.encode(tgt[start : start + CHUNK])
                kept = [(s + [EOS], t) for s, t in zip(a, b) if len(s) + 1 <= max_len and len(t) + 1 <= max_len]
                dropped += len(a) - len(kept)
                a_out.add([s for s, _ in kept])
                b_out.add([t for _, t in kept])
            segments[f"{split}.src"], segments[f"{split}.tgt"] = a_out.close(), b_out.close()
            if dropped:
                out.append(f"{split}: dropped {dropped} pairs longer than {max_len} tokens")
        return Encoded(segments, {}, out)

    return Source(lambda: text["train"][0] + text["train"][1], encode, notes)


def pair_source(files: dict[str, Path], cfg: RunConfig) -> Source:
    """Sentence pairs with class ids: ``<cls> s1 <sep> s2 <sep>`` ids, the length of segment A,
    the label, per split (an unlabelled test file is left out, with a note)."""
    d, text, notes = cfg.data, {}, []
    for split, path in files.items():
        s1, s2, labels = read_pair_tsv(path, d.pair_columns, d.pair_labels, need_label=split != "test")
        if labels is None:
            notes.append(f"{path.name} has no {d.pair_columns[0]!r} column (unlabelled): test scores are left out")
            continue
        n = {"train": d.max_train_examples, "valid": d.max_valid_examples}.get(split, 0)
        text[split] = (s1[:n], s2[:n], labels[:n]) if n > 0 else (s1, s2, labels)

    def encode(tok: Tokenizer, scratch: Path) -> Encoded:
        segments, arrays, out = {}, {}, []
        for split, (s1, s2, labels) in text.items():
            encoded = list(zip(tok.encode(s1), tok.encode(s2)))
            pairs = [encode_pair(a, b, d.max_len) for a, b in encoded]
            cut = sum(len(a) + len(b) + 3 > d.max_len for a, b in encoded)
            if cut:
                out.append(f"{split}: truncated {cut} pairs to {d.max_len} tokens")
            segments[f"{split}.ids"] = Segments.pack([[ids for ids, _ in pairs]])
            arrays[f"{split}.first"] = np.array([first for _, first in pairs], np.int64)
            arrays[f"{split}.labels"] = np.array(labels, np.int64)
        return Encoded(segments, arrays, out)

    def vocab() -> list[str]:
        raise CorpusError("classification uses a pretrained run's vocabulary: set train.init_from")

    return Source(vocab, encode, notes)
