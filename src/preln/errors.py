"""The errors a user can fix, by kind. The CLI prints any of them as one line and exits 2; every
other exception (``ValueError`` included) is a bug: exit 3 and a crash log.

Each also subclasses ``ValueError``, so code written against earlier versions, which caught
``ValueError``, still catches them.
"""

from __future__ import annotations


class PrelnError(Exception):
    """A problem with what the user gave preln; the message names the file, key or option."""


class ConfigError(PrelnError, ValueError):
    """A configuration problem, with the offending key path in the message."""


class CorpusError(PrelnError, ValueError):
    """A missing, unreadable or malformed corpus, tokenizer or input text file."""


class RunFolderError(PrelnError, ValueError):
    """A run folder or checkpoint that cannot serve the command: damaged, of another kind, of
    another vocabulary, or holding another corpus."""


class UsageError(PrelnError, ValueError):
    """A command-line option or argument out of its range, or inputs that do not go together."""
