import os
import random
from pathlib import Path

import pytest

# Under pytest-xdist each worker, and every process it starts, gets one thread: two workers on two
# cores with two OpenMP threads each wait for each other's cores at every parallel region (a
# LayerNorm call measured 5,965 us instead of 13 us that way). Set before torch is imported.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PRELN_DATA_ROOT", ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path_factory):
    """Tests read the shared corpora and cache tokenizers in one per-session folder."""
    monkeypatch.setenv("PRELN_DATA_ROOT", str(DATA))
    monkeypatch.setenv("PRELN_CACHE", str(tmp_path_factory.getbasetemp() / "spm-cache"))
    # each worker's runs see only their own threads: the other worker's would warn of crowded cores
    monkeypatch.setenv("PRELN_RUNTIME_DIR", str(tmp_path_factory.getbasetemp() / "threads"))


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
