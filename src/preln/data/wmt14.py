"""WMT14 English-German: fairseq's ``examples/translation/prepare-wmt14en2de.sh`` in Python
(sacremoses for the Moses scripts), the paper's other translation benchmark.

Step by step as the script does it (without its ``--icml17`` switch):
  1. train = Europarl v7 + Common Crawl + News Commentary v12 (the de-en files, in that order);
     each line punctuation-normalized (normalize-punctuation.perl), non-printing characters
     replaced by spaces (remove-non-printing-char.perl), Moses-tokenized with aggressive hyphen
     splitting (tokenizer.perl -a), cased;
  2. test = newstest2014 (the ``-deen-src.en`` and ``-deen-ref.de`` sgm files of test-full), the
     <seg> lines with ’ -> ', tokenized with -a (not normalized, not cleaned);
  3. valid = every 100th training line, train = the rest;
  4. clean-corpus-n.perl on train and valid: 1..250 tokens a side, length ratio <= 1.5. fairseq
     cleans after its 40k BPE, on BPE tokens; preln learns its own sentencepiece vocabulary on
     the output, so the cleaning here counts Moses tokens (a few more long pairs are kept).
Output: ``{train,valid,test}.{en,de}``, the ``parallel`` layout, Moses tokens with tokenizer.perl's
escaping (``data.pretokenized = true``). Tokenizing 4.5M pairs twice takes a while: ``workers``
processes share it.
"""

from __future__ import annotations

import re
import tarfile
import tempfile
import unicodedata
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from sacremoses import MosesPunctNormalizer, MosesTokenizer
from tqdm import tqdm

from .corpus import CorpusError, read_lines
from .prepare import clean, download, sha256, write_prepared

URLS = {
    "training-parallel-europarl-v7.tgz": "http://statmt.org/wmt13/training-parallel-europarl-v7.tgz",
    "training-parallel-commoncrawl.tgz": "http://statmt.org/wmt13/training-parallel-commoncrawl.tgz",
    "training-parallel-nc-v12.tgz": "http://data.statmt.org/wmt17/translation-task/training-parallel-nc-v12.tgz",
    "dev.tgz": "http://data.statmt.org/wmt17/translation-task/dev.tgz",
    "test-full.tgz": "http://statmt.org/wmt14/test-full.tgz",
}
CORPORA = ("europarl-v7.de-en", "commoncrawl.de-en", "news-commentary-v12.de-en")
TEST = {"en": "newstest2014-deen-src.en.sgm", "de": "newstest2014-deen-ref.de.sgm"}
_SEG = re.compile(r'<seg id="[0-9]*">\s*|\s*</seg>\s*')
_CHUNK = 20_000


def _extract(source: Path, work: Path) -> Path:
    """A folder with the recipe's files: ``source`` itself, with any of its .tgz archives unpacked
    into ``work`` (a folder of already extracted files works too)."""
    if not source.is_dir():
        raise CorpusError(f"WMT14 source {source}: a folder holding the recipe's archives ({', '.join(URLS)})")
    for name in URLS:
        if (source / name).is_file():
            try:
                with tarfile.open(source / name) as tar:
                    tar.extractall(work, filter="data")
            except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
                raise CorpusError(f"{source / name}: not a readable .tgz archive ({e or type(e).__name__})") from None
    return work


def _find(roots: list[Path], name: str) -> Path:
    for root in roots:
        hits = sorted(root.rglob(name))
        if hits:
            return hits[0]
    raise CorpusError(f"missing {name} (in none of {', '.join(map(str, roots))}; see the archives in the docstring)")


def _process(args: tuple[list[str], str, bool]) -> list[str]:
    lines, lang, normalize = args
    norm, tok = MosesPunctNormalizer(lang=lang), MosesTokenizer(lang=lang)
    out = []
    for line in lines:
        if normalize:  # normalize-punctuation.perl, then remove-non-printing-char.perl
            line = "".join(" " if unicodedata.category(c).startswith("C") else c for c in norm.normalize(line))
        out.append(tok.tokenize(line, aggressive_dash_splits=True, return_str=True, escape=True))
    return out


def _tokenize(lines: list[str], lang: str, normalize: bool, workers: int, desc: str) -> list[str]:
    chunks = [(lines[i : i + _CHUNK], lang, normalize) for i in range(0, len(lines), _CHUNK)]
    bar = tqdm(total=len(lines), desc=desc, unit="line", mininterval=2)
    out: list[str] = []
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(workers) as pool:
            for done in pool.map(_process, chunks):
                out += done
                bar.update(len(done))
    else:
        for chunk in chunks:
            out += _process(chunk)
            bar.update(len(chunk[0]))
    bar.close()
    return out


def prepare_wmt14(source: Path | None, out: Path, workers: int = 1) -> dict:
    """Run the recipe on a folder of the five archives (downloaded into ``out``'s parent when
    ``source`` is None) into ``out``."""
    if source is None:
        source = out / ".downloads" / "wmt14"  # inside --out, nowhere else
        for name, url in URLS.items():
            if not (source / name).is_file():
                download(url, source / name)
    if not source.exists():
        raise CorpusError(f"WMT14 source not found: {source}")
    with tempfile.TemporaryDirectory() as tmp:
        roots = [_extract(source, Path(tmp)), source]
        train: dict[str, list[str]] = {"en": [], "de": []}
        for corpus in CORPORA:
            raw = {lang: read_lines(_find(roots, f"{corpus}.{lang}")) for lang in train}
            if len(raw["en"]) != len(raw["de"]):
                raise CorpusError(f"{corpus}: {len(raw['en'])} English lines but {len(raw['de'])} German ones")
            for lang in train:
                train[lang] += raw[lang]
        test = {
            lang: [_SEG.sub("", ln).replace("\u2019", "'") for ln in read_lines(_find(roots, f)) if "<seg id" in ln]
            for lang, f in TEST.items()
        }
    if len(test["en"]) != len(test["de"]):
        raise CorpusError(f"newstest2014: {len(test['en'])} English segments but {len(test['de'])} German ones")
    tok = {lang: _tokenize(train[lang], lang, True, workers, f"tokenize train.{lang}") for lang in train}
    splits: dict[str, dict[str, list[str]]] = {}
    for name, keep_line in (("valid", lambda n: n % 100 == 0), ("train", lambda n: n % 100 != 0)):
        sides = {lang: [ln for n, ln in enumerate(tok[lang], 1) if keep_line(n)] for lang in tok}
        kept = clean(sides["en"], sides["de"], 1, 250, 1.5)
        splits[name] = {lang: [sides[lang][i] for i in kept] for lang in sides}
    splits["test"] = {lang: _tokenize(test[lang], lang, False, 1, f"tokenize test.{lang}") for lang in test}
    info = {
        "recipe": "wmt14 en-de (fairseq prepare-wmt14en2de.sh; cleaning on Moses tokens)",
        "source": str(source),
        "archives_sha256": {n: sha256(source / n) for n in URLS if (source / n).is_file()},
        "train_pairs_before_cleaning": len(train["en"]),
    }
    return write_prepared(out, splits, info)
