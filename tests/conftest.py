import os
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
