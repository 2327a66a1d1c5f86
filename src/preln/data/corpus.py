"""Reading corpora from disk: line-aligned parallel files and one-segment-a-line text.

Nothing here downloads: corpora are read from a path the user gives (``--data``, the config,
or ``$PRELN_DATA_ROOT``). Every problem is a :class:`CorpusError` naming the file.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

from ..errors import CorpusError  # also preln.data.corpus.CorpusError, as before

DEFAULT_DATA_ROOT = "../shared/data"


def data_root() -> Path:
    return Path(os.environ.get("PRELN_DATA_ROOT", DEFAULT_DATA_ROOT))


def display_path(path: Path) -> str:
    """A corpus path as a reader of a report can use it: under the data root as
    ``$PRELN_DATA_ROOT/...``, never this machine's absolute path."""
    full, root = path.resolve(), data_root().resolve()
    if full.is_relative_to(root):
        return f"$PRELN_DATA_ROOT/{full.relative_to(root).as_posix()}"
    return path.name if path.is_absolute() else path.as_posix()


def resolve_path(path: str) -> Path:
    """``path`` as given if it exists, else under ``$PRELN_DATA_ROOT`` (default ../shared/data)."""
    p = Path(path).expanduser()
    if p.exists():
        return p
    candidates = [p]
    if not p.is_absolute():
        q = data_root() / p
        if q.exists():
            return q
        candidates.append(q)
    tried = ", ".join(str(c.resolve()) for c in candidates)
    raise CorpusError(
        f"corpus not found: {path!r} (looked at {tried}). Pass --data PATH, set data.path in the "
        "config, or set PRELN_DATA_ROOT to the folder holding your corpora."
    )


def find_file(folder: Path, stem: str) -> Path:
    """``folder/stem`` or ``folder/stem.gz``."""
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise CorpusError(f"missing corpus file: {folder / stem}[.gz]")


def read_lines(path: Path) -> list[str]:
    """All lines of a UTF-8 text file (plain or gzip), without line ends."""
    return lines_of(path, read_bytes(path))


def read_bytes(path: Path) -> bytes:
    """The file's bytes as stored (compressed for a .gz): what a hash of the corpus must cover."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise CorpusError(f"cannot read {path}: {e or type(e).__name__}") from None


def lines_of(path: Path, raw: bytes) -> list[str]:
    """The lines of ``raw``, the bytes read from ``path`` (gunzipped for a .gz), without line ends."""
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:  # EOFError, zlib.error: a truncated or corrupt .gz
            raise CorpusError(f"cannot read {path}: {e or type(e).__name__}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise CorpusError(f"{path}: line {line} is not valid UTF-8 ({e.reason})") from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # universal newlines: \n, \r\n, \r
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def refuse_subword_joins(path: Path, lines: list[str]) -> None:
    """Text with subword-nmt's ``@@ `` joins is BPE output (fairseq's prepare-iwslt14.sh writes
    such a folder): preln learns its own sentencepiece vocabulary on the text before BPE, and BLEU
    references with ``@@`` in them would be wrong. BPE output has joins in most lines; a few
    lines with ``@@`` (diff hunks in software documentation) are ordinary text."""
    hits = [n for n, line in enumerate(lines, 1) if "@@ " in line or line.endswith("@@")]
    refuse_subword_count(path, len(hits), hits[0] if hits else 0, len(lines))


def refuse_subword_count(path: Path, hits: int, first: int, lines: int) -> None:
    """``refuse_subword_joins`` on counts: ``hits`` of ``lines`` lines have joins, the first is ``first``."""
    if hits > 0.05 * lines:
        raise CorpusError(
            f"{path}: {hits} of {lines} lines (first: line {first}) have subword-nmt '@@ ' joins "
            "(BPE output). preln trains its own sentencepiece vocabulary: give it the tokenized text before "
            "BPE, e.g. what `preln prepare iwslt14` writes (data/iwslt14-de-en), not fairseq's "
            "iwslt14.tokenized.de-en"
        )


def read_parallel(src: Path, tgt: Path) -> tuple[list[str], list[str], int]:
    """Line-aligned pairs; pairs with an empty side are dropped and counted (third value)."""
    s, t = read_lines(src), read_lines(tgt)
    refuse_subword_joins(src, s)
    refuse_subword_joins(tgt, t)
    if len(s) != len(t):
        raise CorpusError(f"{src} has {len(s)} lines but {tgt} has {len(t)}: not line-aligned")
    keep = [(a.strip(), b.strip()) for a, b in zip(s, t) if a.strip() and b.strip()]
    return [a for a, _ in keep], [b for _, b in keep], len(s) - len(keep)


def read_tsv(path: Path, langs: tuple[str, str], src_lang: str, tgt_lang: str) -> tuple[list[str], list[str], int]:
    """Pairs from a TSV whose last two columns are ``langs`` (e.g. ``source<TAB>de<TAB>en``)."""
    if {src_lang, tgt_lang} != set(langs):
        raise CorpusError(f"{path}: its columns are {langs}, not {src_lang}/{tgt_lang} (data.tsv_langs)")
    src, tgt, dropped = [], [], 0
    lines = read_lines(path)
    refuse_subword_joins(path, lines)
    width = None
    for n, line in enumerate(lines, 1):
        cols = line.split("\t")
        if len(cols) < 2:
            raise CorpusError(f"{path}: line {n} has {len(cols)} column(s), expected at least 2")
        width = width or len(cols)
        if len(cols) != width:  # a stray tab would shift the language columns silently
            raise CorpusError(f"{path}: line {n} has {len(cols)} columns, line 1 has {width}")
        pair = dict(zip(langs, (cols[-2].strip(), cols[-1].strip())))
        if pair[src_lang] and pair[tgt_lang]:
            src.append(pair[src_lang])
            tgt.append(pair[tgt_lang])
        else:
            dropped += 1
    return src, tgt, dropped


def read_pair_tsv(
    path: Path, columns: tuple[str, str, str], labels: tuple[str, ...], need_label: bool = True
) -> tuple[list[str], list[str], list[int] | None]:
    """Sentence pairs and class ids from a TSV with a header row naming its columns (``label s1
    s2`` by default, see ``data.pair_columns``). Without the label column (GLUE's unlabelled test
    files) and ``need_label`` false, the labels are None."""
    lines = read_lines(path)
    if not lines:
        raise CorpusError(f"{path}: empty file (a pair TSV starts with a header row)")
    header = lines[0].lstrip("\ufeff").split("\t")
    missing = [c for c in columns[1:] if c not in header]
    has_label = columns[0] in header
    if missing or (need_label and not has_label):
        absent = ([] if has_label else [columns[0]]) + missing
        raise CorpusError(
            f"{path}: line 1: no column {', '.join(map(repr, absent))} in the header "
            f"({' | '.join(header)}); data.pair_columns names the label, first and second sentence columns"
        )
    at = [header.index(c) if c in header else -1 for c in columns]
    s1, s2, ys = [], [], []
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != len(header):
            raise CorpusError(f"{path}: line {n} has {len(cols)} columns, the header has {len(header)}")
        if has_label:
            value = cols[at[0]].strip()
            if value not in labels:
                raise CorpusError(
                    f"{path}: line {n}: label {value!r} is not one of {', '.join(map(repr, labels))} (data.pair_labels)"
                )
            ys.append(labels.index(value))
        s1.append(cols[at[1]].strip())
        s2.append(cols[at[2]].strip())
    if not any(a and b for a, b in zip(s1, s2)):  # a model fit to empty sentences learns only the labels' prior
        raise CorpusError(f"{path}: no pair has two non-empty sentences ({len(s1)} rows; check data.pair_columns)")
    return s1, s2, (ys if has_label else None)
