"""What data a run was trained on, so that a resume or an evaluation on other data is noticed.

When a run starts, the SHA-256 and size of every corpus file its config reads (train, valid and,
where present, test) go into the run folder's ``data.json``, with the token-id cache entry the
run trained from. A resume compares the train and valid files, an evaluation the files
of the splits it scores: a file that changed or is gone is refused with one line naming it, or,
with ``--allow-data-change``, allowed and recorded (``history.jsonl``; ``data.json`` then holds
the data the run went on with). Names are relative to the corpus, so a corpus moved elsewhere
(``data.path`` spelled another way) is the same corpus.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..config import RunConfig
from .corpus import CorpusError, display_path, resolve_path
from .digests import file_sha256
from .idcache import cache_root

TRAINING_SPLITS = ("train", "valid")


class DataChanged(CorpusError):
    """A corpus file differs from the one the run was trained on (or is gone)."""


@dataclass(frozen=True)
class FileDigest:
    bytes: int
    sha256: str


@dataclass(frozen=True)
class DataRecord:
    """A run's ``data.json``."""

    corpus: str
    """The corpus as a reader can find it (``$PRELN_DATA_ROOT/...`` where it lies under the root)."""
    splits: dict[str, list[str]]
    """Split -> the names (relative to the corpus) of the files it is read from."""
    files: dict[str, FileDigest]
    """Name -> size and SHA-256, as read when the record was made."""
    token_ids: dict[str, str] = field(default_factory=dict)
    """The token-id cache entry (``entry``) the run trained from and its files' SHA-256."""

    @classmethod
    def from_json(cls, text: str) -> DataRecord:
        raw = json.loads(text)
        files = {k: FileDigest(**v) for k, v in raw["files"].items()}
        return cls(raw["corpus"], {k: list(v) for k, v in raw["splits"].items()}, files, raw.get("token_ids", {}))


def file_digest(path: Path, cfg: RunConfig | None = None) -> FileDigest:
    """Size and SHA-256; with ``cfg``, remembered in its cache by the file's stat (``digests``)."""
    memo = None if cfg is None else cache_root(cfg.data) / "digests"
    try:
        return FileDigest(path.stat().st_size, file_sha256(path, memo))
    except OSError as e:
        raise CorpusError(f"cannot read {path}: {e.strerror or type(e).__name__}") from None


def _name(path: Path, corpus: Path) -> str:
    return path.name if corpus.is_file() else path.relative_to(corpus).as_posix()


def record(cfg: RunConfig, token_ids: dict[str, str] | None = None) -> DataRecord:
    """The digests of the files ``cfg``'s corpus is read from now."""
    from .datasets import corpus_files  # imports torch: not at import time (runs.py is read by the lab)

    corpus = resolve_path(cfg.data.path)
    per_split = corpus_files(cfg)
    splits = {s: [_name(p, corpus) for p in paths] for s, paths in per_split.items()}
    paths = {_name(p, corpus): p for ps in per_split.values() for p in ps}
    files = {name: file_digest(p, cfg) for name, p in sorted(paths.items())}
    return DataRecord(display_path(corpus), splits, files, dict(token_ids or {}))


def changes(before: DataRecord, cfg: RunConfig, splits: tuple[str, ...]) -> list[str]:
    """What differs now in the files of ``splits`` that ``before`` recorded: one phrase a file."""
    corpus = resolve_path(cfg.data.path)
    out = []
    for name in dict.fromkeys(n for s in splits for n in before.splits.get(s, [])):
        was, path = before.files[name], (corpus if corpus.is_file() else corpus / name)
        if not path.is_file():
            out.append(f"{name} is gone")
            continue
        now = file_digest(path, cfg)
        if now != was:
            size = f"{was.bytes:,} -> {now.bytes:,} bytes" if now.bytes != was.bytes else f"{now.bytes:,} bytes"
            out.append(f"{name} changed (SHA-256 {was.sha256[:12]}... -> {now.sha256[:12]}..., {size})")
    return out


def refusal(run: Path, what: str, changed: list[str]) -> DataChanged:
    return DataChanged(
        f"{run}: the corpus differs from the one this run was trained on: {'; '.join(changed)}. "
        f"Restore it, or {what} with --allow-data-change (recorded in the run's history.jsonl)"
    )
