"""Decoding settings, as values (no torch here: the CLI's parsers and the study planner read them).

fairseq-generate's defaults, which the paper used: beam 5, length penalty 1, at most
``max_len_a * source length + max_len_b`` tokens (a = 0, b = 200), then </s> is forced; at least
``MIN_LEN`` token before </s>.
"""

from __future__ import annotations

MIN_LEN = 1  # fairseq-generate --min-len: </s> is banned before this many tokens
MAX_LEN_A, MAX_LEN_B = 0.0, 200  # fairseq-generate --max-len-a / --max-len-b
LENPEN = 1.0  # fairseq-generate --lenpen
BEAM = 5  # fairseq-generate --beam
