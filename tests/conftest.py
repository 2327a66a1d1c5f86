import os
import random
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PRELN_DATA_ROOT", ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path_factory):
    """Tests read the shared corpora and cache tokenizers in one per-session folder."""
    monkeypatch.setenv("PRELN_DATA_ROOT", str(DATA))
    monkeypatch.setenv("PRELN_CACHE", str(tmp_path_factory.getbasetemp() / "spm-cache"))


def require_data(*parts: str) -> Path:
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.fail(f"shared test data missing: {p} (set PRELN_DATA_ROOT)")
    return p


WORDS = "the a house dog cat runs sees big small red green man woman child eats old new".split()


def sentences(n: int, seed: int, end: str = "") -> list[str]:
    """``n`` generated sentences of 3 to 9 words (a small corpus that needs no shared data)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) + end for _ in range(n)]


def one_error(capsys, *fragments: str) -> str:
    """The last stderr line, which must be one ``preln: error:`` line holding every fragment."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("preln: error: "), err
    for f in fragments:
        assert f in err[-1], (f, err[-1])
    return err[-1]
