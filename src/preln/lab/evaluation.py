"""A study's test-set evaluation as values: the study file's ``evaluate = [...]`` flags parsed
once, the beam of ``reproduce --beam``, what ``bleu.json`` must record to count, and the options
of the planned ``preln evaluate`` command."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..config import ConfigError
from ..decoding import FAIRSEQ, Decoding


@dataclass(frozen=True)
class Evaluation:
    """A study's test-set evaluation as values: parsed once from the study file's flags."""

    decoding: Decoding = FAIRSEQ
    """Beam search's settings; the beam is ``reproduce --beam``'s (``with_beam``)."""
    limit: int = 0
    """Sentences of the test split scored (0 = all)."""

    FLAGS = {"--lenpen": float, "--max-len-a": float, "--max-len-b": int, "--limit": int}

    @classmethod
    def from_flags(cls, flags: list | tuple, where: str) -> Evaluation:
        """A study preset's ``evaluate = [...]``: pairs of --lenpen/--max-len-a/--max-len-b/--limit
        and a value."""
        flags = [str(x) for x in flags]
        bad = ConfigError(f"{where} evaluate: pairs of {'/'.join(cls.FLAGS)} and a value, got {flags}")
        if len(flags) % 2 or not set(flags[::2]) <= set(cls.FLAGS):
            raise bad
        try:
            values = {f.lstrip("-").replace("-", "_"): cls.FLAGS[f](v) for f, v in zip(flags[::2], flags[1::2])}
            limit = values.pop("limit", 0)
            return cls(Decoding(**values), limit)
        except ValueError as e:  # not a number, or out of range (UsageError)
            raise ConfigError(f"{where} evaluate: {e}") from None

    def with_beam(self, beam: int) -> Evaluation:
        return replace(self, decoding=replace(self.decoding, beam=beam))

    def expected(self) -> dict:
        """What ``bleu.json`` must record for an evaluation to count as this one."""
        return self.decoding.record() | {"limit": self.limit}

    def flags(self) -> list[str]:
        """The ``preln evaluate`` options of this evaluation."""
        return self.decoding.flags() + (["--limit", str(self.limit)] if self.limit else [])

    def to_dict(self) -> dict:
        return {k: v for k, v in self.expected().items() if k != "beam"}


def evaluation_of(meta: dict) -> Evaluation:
    """A study.json's evaluation: a table since 0.3, a list of flags before."""
    if isinstance(meta.get("evaluate"), dict):
        e = dict(meta["evaluate"])
        return Evaluation(Decoding(**{k: v for k, v in e.items() if k != "limit"}), int(e.get("limit", 0)))
    return Evaluation.from_flags(meta.get("decode", []), "study.json")
