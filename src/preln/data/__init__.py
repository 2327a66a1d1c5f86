"""Corpora, tokenization and batching. The names below are imported on first use, so that
``preln.data.corpus`` (and the CLI's ``--help``) do not load torch."""

_NAMES = {
    "Batch": "batching",
    "token_batches": "batching",
    "CorpusError": "corpus",
    "resolve_path": "corpus",
    "MLMData": "datasets",
    "TranslationData": "datasets",
    "Tokenizer": "tokenizer",
}
__all__ = list(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'preln.data' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"preln.data.{_NAMES[name]}"), name)
    globals()[name] = value
    return value
