"""Corpus preparation: the IWSLT14 De-En recipe (fairseq's prepare-iwslt14.sh in Python, PyPI
tools only) and Multi30k, downloaded when online or read from a local path.

IWSLT14, step by step as fairseq's script does it:
  1. train.tags.de-en.{de,en}: drop lines with <url>, <talkid>, <keywords>; strip <title>,
     </title>, <description>, </description>;
  2. Moses-tokenize (sacremoses, with its default escaping, as tokenizer.perl);
  3. clean the training pairs (clean-corpus-n.perl): keep 1..175 tokens a side and a length
     ratio <= 1.5;
  4. lowercase;
  5. valid = every 23rd training line, train = the rest;
  6. test = the <seg> lines of dev2010, TEDX.dev2012, tst2010, tst2011, tst2012 (in that
     order; ’ -> '), tokenized and lowercased, not cleaned.
Output: ``{train,valid,test}.{de,en}`` — the ``parallel`` corpus layout.
"""

from __future__ import annotations

import json
import re
import tarfile
import tempfile
import urllib.request
import zlib
from pathlib import Path

from sacremoses import MosesTokenizer
from tqdm import tqdm

from .. import atomic
from .corpus import CorpusError, read_lines
from .digests import sha256_of as sha256

IWSLT14_URL = "http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz"  # fairseq's mirror of WIT3's
IWSLT14_TEST = (
    "IWSLT14.TED.dev2010",
    "IWSLT14.TEDX.dev2012",
    "IWSLT14.TED.tst2010",
    "IWSLT14.TED.tst2011",
    "IWSLT14.TED.tst2012",
)
_DROP = ("<url>", "<talkid>", "<keywords>")
_STRIP = ("<title>", "</title>", "<description>", "</description>")
_SEG = re.compile(r'<seg id="[0-9]*">\s*|\s*</seg>\s*')

MULTI30K_URL = "https://github.com/multi30k/dataset/raw/master/data/task1/raw/{name}.gz"
MULTI30K_LINES = {"train": 29000, "val": 1014, "test_2016_flickr": 1000}


def download(url: str, dest: Path) -> Path:
    """Fetch ``url`` to ``dest`` (via a temporary name) with a progress bar; one clear error offline."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CorpusError(f"cannot download {url} ({e}). Fetch it elsewhere and pass its local path.") from None
    tmp.replace(dest)
    return dest


def _iwslt_root(path: Path, work: Path) -> Path:
    """The folder holding train.tags.de-en.de, from an archive (extracted into ``work``) or a folder;
    errors name the archive, never the temporary folder."""
    folder = path
    if path.is_file():
        try:
            with tarfile.open(path) as tar:
                tar.extractall(work, filter="data")
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:  # EOFError, zlib.error: truncated
            head = path.read_bytes()[:2] if path.stat().st_size else b""
            why = "empty file" if not head else "gzip data, but not a tar archive inside" if head == b"\x1f\x8b" else ""
            why = why or (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(":")
            raise CorpusError(f"{path}: not a readable .tgz archive ({why})") from None
        folder = work
    hits = sorted(folder.rglob("train.tags.de-en.de"))
    if not hits:
        raise CorpusError(f"{path}: no train.tags.de-en.de inside (expected the official IWSLT14 de-en archive)")
    return hits[0].parent


def _train_text(path: Path) -> list[str]:
    out = []
    for line in read_lines(path):
        if any(tag in line for tag in _DROP):
            continue
        for tag in _STRIP:
            line = line.replace(tag, "")
        out.append(line)
    return out


def _xml_segments(path: Path) -> list[str]:
    return [_SEG.sub("", ln).replace("\u2019", "'") for ln in read_lines(path) if "<seg id" in ln]


def _tok(lines: list[str], lang: str, desc: str) -> list[str]:
    mt = MosesTokenizer(lang=lang)
    return [mt.tokenize(ln, return_str=True) for ln in tqdm(lines, desc=desc, unit="line", mininterval=2)]


def clean(src: list[str], tgt: list[str], lo: int = 1, hi: int = 175, ratio: float = 1.5) -> list[int]:
    """Indices of the pairs clean-corpus-n.perl keeps: lo..hi tokens a side, length ratio <= ratio."""
    keep = []
    for i, (s, t) in enumerate(zip(src, tgt)):
        a, b = len(s.split()), len(t.split())
        if lo <= a <= hi and lo <= b <= hi and a / b <= ratio and b / a <= ratio:
            keep.append(i)
    return keep


def prepare_iwslt14(source: Path | None, out: Path, src: str = "de", tgt: str = "en") -> dict:
    """Run the recipe on the archive or folder ``source`` (downloaded when None) into ``out``."""
    if source is None:
        source = download(IWSLT14_URL, out / ".downloads" / "de-en.tgz")  # inside --out, nowhere else
    if not source.exists():
        raise CorpusError(f"IWSLT14 source not found: {source} (the de-en.tgz archive or its extracted folder)")
    with tempfile.TemporaryDirectory() as work:
        root = _iwslt_root(source, Path(work))
        for lang in (src, tgt):
            if not (root / f"train.tags.de-en.{lang}").is_file():
                raise CorpusError(
                    f"{source}: no train.tags.de-en.{lang} inside (the official IWSLT14 de-en archive has both)"
                )
        raw = {lang: _train_text(root / f"train.tags.de-en.{lang}") for lang in (src, tgt)}
        if len(raw[src]) != len(raw[tgt]):
            raise CorpusError(
                f"{root}: train.tags files differ in length after removing tags ({len(raw[src])} vs {len(raw[tgt])})"
            )
        tok = {lang: _tok(raw[lang], lang, f"tokenize train.{lang}") for lang in (src, tgt)}
        keep = clean(tok[src], tok[tgt])
        splits: dict[str, dict[str, list[str]]] = {"train": {}, "valid": {}, "test": {}}
        for lang in (src, tgt):
            lines = [tok[lang][i].lower() for i in keep]
            splits["valid"][lang] = [ln for n, ln in enumerate(lines, 1) if n % 23 == 0]
            splits["train"][lang] = [ln for n, ln in enumerate(lines, 1) if n % 23 != 0]
            test = []
            for name in IWSLT14_TEST:
                xml = root / f"{name}.de-en.{lang}.xml"
                if not xml.is_file():
                    raise CorpusError(f"{source}: missing test file {xml.relative_to(root)}")
                test += _xml_segments(xml)
            splits["test"][lang] = [ln.lower() for ln in _tok(test, lang, f"tokenize test.{lang}")]
    info = {
        "recipe": "iwslt14 (fairseq prepare-iwslt14.sh)",
        "source": str(source),
        "source_sha256": sha256(source) if source.is_file() else None,
        "train_pairs_before_cleaning": len(raw[src]),
    }
    return write_prepared(out, splits, info)


def write_prepared(out: Path, splits: dict[str, dict[str, list[str]]], info: dict) -> dict:
    """``out/{split}.{lang}`` for every split and side, and ``PREPARED.json`` (``info`` with the
    pair counts), the ``parallel`` corpus layout; returns what PREPARED.json holds."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "PREPARED.json").unlink(missing_ok=True)  # written last: its presence says the folder is whole
    for split, sides in splits.items():
        for lang, lines in sides.items():
            atomic.write_text(out / f"{split}.{lang}", "".join(ln + "\n" for ln in lines))
    info = {**info, "pairs": {split: len(next(iter(sides.values()))) for split, sides in splits.items()}}
    atomic.write_text(out / "PREPARED.json", json.dumps(info, indent=1) + "\n")
    return info


def prepare_multi30k(out: Path, source: Path | None = None) -> dict:
    """Multi30k task 1 raw files into ``out``: copied from a local folder, else downloaded from the
    dataset's public repository. Line counts are checked (29,000 / 1,014 / 1,000)."""
    counts = {}
    for split, n in MULTI30K_LINES.items():
        for lang in ("de", "en"):
            name = f"{split}.{lang}"
            dest = out / f"{name}.gz"
            # a file is checked before it lands in ``out``: a damaged source leaves no damaged copy
            if source is not None:
                found = source / f"{name}.gz"
                if not found.is_file():
                    raise CorpusError(f"missing {found}")
                counts[name] = _check_lines(found, n)
                out.mkdir(parents=True, exist_ok=True)
                if found.resolve() != dest.resolve():
                    atomic.write_bytes(dest, found.read_bytes())  # never a half-copied file under its name
            else:
                out.mkdir(parents=True, exist_ok=True)
                if not dest.is_file():
                    download(MULTI30K_URL.format(name=name), dest)
                try:
                    counts[name] = _check_lines(dest, n)
                except CorpusError:
                    dest.unlink()
                    raise
    return counts


def _check_lines(path: Path, n: int) -> int:
    got = len(read_lines(path))
    if got != n:
        raise CorpusError(f"{path}: {got} lines, expected {n} (a damaged or different file)")
    return got
