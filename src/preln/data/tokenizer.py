"""Joint sentencepiece vocabulary, trained on the training text once and cached.

Fixed special ids: <pad>=0, <unk>=1, <s>=2 (also <cls>), </s>=3 (also <sep>), <mask>=4.
The model file travels with every run folder, so a checkpoint is never paired with another
vocabulary.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import sentencepiece as spm

from ..errors import CorpusError

PAD, UNK, BOS, EOS, MASK = 0, 1, 2, 3, 4


class Tokenizer:
    """A sentencepiece model read once from ``model_file``: its bytes stay in memory (``proto``), so
    the tokenizer, its hash and a copy written elsewhere never depend on the file staying put."""

    def __init__(self, model_file: str | Path) -> None:
        self.path = Path(model_file)
        try:
            self.proto = self.path.read_bytes()
            self.sp = spm.SentencePieceProcessor(model_proto=self.proto)
        except (RuntimeError, OSError) as e:  # a damaged or missing file: sentencepiece's own error
            raise CorpusError(f"{self.path}: not a readable sentencepiece model ({str(e).splitlines()[0]})") from None
        self._sha256 = hashlib.sha256(self.proto).hexdigest()
        if self.sp.piece_to_id("<mask>") != MASK or self.sp.pad_id() != PAD:
            raise CorpusError(f"{self.path}: not a preln sentencepiece model (special ids differ)")

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts)

    def decode(self, ids: list[list[int]]) -> list[str]:
        return self.sp.decode(ids)

    def sha256(self) -> str:
        """Of the model as it was read (not of the file now)."""
        return self._sha256


def default_cache_dir() -> Path:
    return Path(os.environ.get("PRELN_CACHE", Path.home() / ".cache" / "preln"))


def train_or_load(texts: list[str], vocab_size: int, model_type: str, cache_dir: str | Path = "") -> Tokenizer:
    """Train a sentencepiece model on ``texts`` unless one for exactly these texts and settings
    is cached. Writes to a temporary name and renames, so concurrent runs never see half a file."""
    if not any(t.strip() for t in texts):
        raise CorpusError("no text to train the tokenizer on: the corpus's train split is empty")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    h = hashlib.sha256(f"{vocab_size}|{model_type}|v1\n".encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\n")
    target = cache / f"spm-{model_type}{vocab_size}-{h.hexdigest()[:16]}.model"
    if target.is_file():
        return Tokenizer(target)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        prefix = Path(tmp) / "spm"
        try:
            _train(texts, prefix, vocab_size, model_type)
        except RuntimeError as e:  # sentencepiece reports problems as RuntimeError("INTERNAL: ...")
            first = str(e).splitlines()[0]
            if "character_coverage" in first or "Vocabulary size" in first:  # its hint names its own flags
                raise CorpusError(
                    f"data.vocab_size={vocab_size} does not fit this text: change data.vocab_size "
                    f"(sentencepiece: {first.split('Increase')[0].strip()})"
                ) from None
            raise CorpusError(f"sentencepiece training failed: {first}") from None
        os.replace(f"{prefix}.model", target)
    return Tokenizer(target)


def _train(texts: list[str], prefix: Path, vocab_size: int, model_type: str) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=0.9995,  # sentencepiece's default: the rarest characters become <unk>
        pad_id=PAD,
        unk_id=UNK,
        bos_id=BOS,
        eos_id=EOS,
        user_defined_symbols=["<mask>"],
        hard_vocab_limit=False,  # small corpora get a smaller vocabulary, not an error
        input_sentence_size=2_000_000,
        shuffle_input_sentence=True,
        num_threads=os.cpu_count() or 1,
        minloglevel=2,
    )
