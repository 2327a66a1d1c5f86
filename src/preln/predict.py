"""Use a trained encoder: a masked LM's fillers for each ``<mask>``, a fine-tuned pair classifier's
label and class probabilities (``preln predict``; the same functions from Python)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import RunConfig
from .data.batching import encode_pair
from .data.datasets import pair_tensors
from .data.tokenizer import BOS, EOS, MASK, Tokenizer
from .errors import CorpusError, UsageError


@dataclass(frozen=True)
class Filler:
    """One candidate for a ``<mask>``: the vocabulary piece, its id and its probability."""

    piece: str
    id: int
    prob: float


@dataclass(frozen=True)
class Filled:
    """A text's masks filled: per ``<mask>`` its ``top_k`` fillers, best first, and the text with
    the best filler of each."""

    text: str
    fillers: list[list[Filler]]


@dataclass(frozen=True)
class Prediction:
    """A pair's class: the label (``data.pair_labels``) and every class's probability."""

    label: str
    probs: dict[str, float]


def mask_ids(tok: Tokenizer, text: str) -> list[int]:
    """``<s> text </s>`` with each ``<mask>`` one token standing for a whole word piece, as the
    masked LM saw masks in training (SentencePiece puts a lone word marker before ``<mask>``)."""
    ids = tok.encode([text])[0]
    marker = tok.sp.piece_to_id("▁")
    ids = [t for i, t in enumerate(ids) if not (t == marker and i + 1 < len(ids) and ids[i + 1] == MASK)]
    return [BOS, *ids, EOS]


@torch.no_grad()
def fill_masks(model: nn.Module, tok: Tokenizer, texts: list[str], top_k: int = 5) -> list[Filled]:
    """The ``top_k`` fillers of every ``<mask>`` in each text (a text without one: no fillers)."""
    if top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {top_k}")
    model.eval()
    out = []
    for text in texts:
        ids = torch.tensor([mask_ids(tok, text)])  # (1, T)
        at = ids == MASK
        if not at.any():
            out.append(Filled(text, []))
            continue
        probs = model(ids, mlm_positions=at).float().softmax(-1)  # (masks, V)
        best = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        fillers = [
            [Filler(tok.sp.id_to_piece(i), i, round(p, 6)) for p, i in zip(ps.tolist(), ix.tolist())]
            for ps, ix in zip(best.values, best.indices)
        ]
        filled = ids[0].clone()
        filled[at[0]] = best.indices[:, 0]
        out.append(Filled(tok.decode([filled[1:-1].tolist()])[0], fillers))
    return out


@torch.no_grad()
def classify(model: nn.Module, tok: Tokenizer, cfg: RunConfig, pairs: list[tuple[str, str]]) -> list[Prediction]:
    """Each (sentence 1, sentence 2) pair's label and class probabilities, encoded as the run's
    fine-tuning encoded its pairs (``<s> a </s> b </s>``, longest side cut first to data.max_len)."""
    model.eval()
    labels = cfg.data.pair_labels
    out = []
    for start in range(0, len(pairs), 64):
        chunk = pairs[start : start + 64]
        a, b = tok.encode([p[0] for p in chunk]), tok.encode([p[1] for p in chunk])
        ids, segments = pair_tensors([encode_pair(x, y, cfg.data.max_len) for x, y in zip(a, b)])
        probs = model(ids, segments=segments, classify=True).float().softmax(-1)  # (B, C)
        for row in probs.tolist():
            out.append(Prediction(labels[max(range(len(row)), key=row.__getitem__)], dict(zip(labels, row))))
    return out


def pair_of(line: str, n: int) -> tuple[str, str]:
    """A ``sentence 1 <TAB> sentence 2`` line of input ``n``; one line error otherwise."""
    parts = line.split("\t")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise CorpusError(
            f"input line {n}: expected two non-empty sentences separated by a tab ({len(parts)} field(s))"
        )
    return parts[0].strip(), parts[1].strip()
