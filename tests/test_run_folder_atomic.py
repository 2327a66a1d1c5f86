"""config.toml is replaced atomically: the other ranks of a distributed start read it
(``check_resumable``) while rank 0 writes it, and a truncate-then-write let one read an empty file
(a two-process FSDP test failed with "config.toml: empty")."""

from pathlib import Path

from preln import config
from preln.runs import RunFolder

from .conftest import ROOT


def test_config_toml_is_never_written_in_place(tmp_path, monkeypatch):
    cfg = config.load(ROOT / "configs" / "tiny-translation.toml")
    real = Path.write_text

    def in_place(self, *args, **kwargs):
        assert self.name != "config.toml", "config.toml truncated and written in place"
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", in_place)
    RunFolder(tmp_path / "run").prepare(cfg, b"tokenizer bytes")
    assert (tmp_path / "run" / "config.toml").read_text() == config.dumps(cfg)
