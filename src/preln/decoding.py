"""Decoding settings, as values (no torch here: the CLI's parsers and the study planner read them).

fairseq-generate's defaults, which the paper used: beam 5, length penalty 1, at most
``max_len_a * source length + max_len_b`` tokens (a = 0, b = 200), then </s> is forced; at least
``MIN_LEN`` token before </s>.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

from .errors import UsageError

MIN_LEN = 1  # fairseq-generate --min-len: </s> is banned before this many tokens
MAX_LEN_A, MAX_LEN_B = 0.0, 200  # fairseq-generate --max-len-a / --max-len-b
LENPEN = 1.0  # fairseq-generate --lenpen
BEAM = 5  # fairseq-generate --beam

Precision = Literal["auto", "bf16", "fp32"]


@dataclass(frozen=True)
class Decoding:
    """How to decode: from the CLI (or a study file) to beam search, and into ``bleu.json``.
    Checked when made: a bad value is a one-line ``UsageError`` naming its flag."""

    beam: int = BEAM
    """Beam size; 1 = greedy search."""
    lenpen: float = LENPEN
    """Length penalty: a hypothesis scores log-probability / length ** lenpen (fairseq's)."""
    max_len_a: float = MAX_LEN_A
    """At most ``max_len_a * source length + max_len_b`` tokens, then </s> is forced."""
    max_len_b: int = MAX_LEN_B
    nbest: int = 1
    """Hypotheses kept per sentence (1..beam), best first."""
    precision: Precision = "auto"
    """``auto``: bf16 autocast on a GPU, fp32 on a CPU; ``fp32`` everywhere; ``bf16`` asks for it."""
    max_tokens: int = 4000
    """Source tokens per batch, beams included (a batch holds ``max_tokens / beam`` tokens)."""

    def __post_init__(self) -> None:
        if self.beam < 1:
            raise UsageError(f"--beam must be >= 1, got {self.beam}")
        if not math.isfinite(self.lenpen):
            raise UsageError(f"--lenpen must be a finite number, got {self.lenpen}")
        if not (math.isfinite(self.max_len_a) and self.max_len_a >= 0) or self.max_len_b < 1:
            raise UsageError(f"--max-len-a must be >= 0 and --max-len-b >= 1, got {self.max_len_a}, {self.max_len_b}")
        if not 1 <= self.nbest <= self.beam:
            raise UsageError(f"--nbest must be in 1..--beam ({self.beam}), got {self.nbest}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise UsageError(f"--precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.max_tokens < 1:
            raise UsageError(f"--max-tokens must be >= 1, got {self.max_tokens}")

    def record(self) -> dict:
        """What a scored result records of its decoding (``bleu.json``'s keys)."""
        return {k: v for k, v in asdict(self).items() if k in SCORED}

    def flags(self) -> list[str]:
        """The ``preln evaluate`` options that give this setting (for a planned command line)."""
        return [x for k, v in self.record().items() for x in ("--" + k.replace("_", "-"), str(v))]


SCORED = ("beam", "lenpen", "max_len_a", "max_len_b")
"""The settings that change a hypothesis, hence a score: part of ``bleu.json`` and of the key
under which an evaluation is kept."""

FAIRSEQ = Decoding()
"""fairseq-generate's defaults (frozen: safe as a default argument)."""
