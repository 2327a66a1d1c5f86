"""Corpora, tokenization and batching."""

from .batching import Batch, token_batches
from .corpus import CorpusError, resolve_path
from .datasets import MLMData, TranslationData, load_data
from .tokenizer import Tokenizer

__all__ = [
    "Batch",
    "CorpusError",
    "MLMData",
    "Tokenizer",
    "TranslationData",
    "load_data",
    "resolve_path",
    "token_batches",
]
