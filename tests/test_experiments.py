import json

import pytest

from preln import experiments
from preln.cli import main
from preln.config import ConfigError

from .conftest import ROOT, require_data

STUDY = """
title = "tiny study"
baseline = "post-warmup"
compare = ["pre", "post-warmup"]
[preset.quick]
config = "configs/tiny-translation.toml"
seeds = [1]
set = ["train.max_updates=6", "train.valid_every=2", "train.valid_bleu=false"]
[[condition]]
name = "pre"
[[condition]]
name = "post-warmup"
quick = ["model.norm='post'", "schedule.warmup=3"]
[[grid]]
"model.norm" = ["post"]
"optim.lr" = [1e6]
"""


def test_study_expansion_and_errors(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(STUDY)
    study = experiments.load_study(p, "quick", ROOT)
    assert [r.folder for r in study.runs] == ["pre-s1", "post-warmup-s1", "norm=post,lr=1000000.0-s1"]
    assert "schedule.warmup=3" in study.runs[1].overrides and "train.seed=1" in study.runs[1].overrides
    with pytest.raises(ConfigError, match="no \\[preset.paper\\]"):
        experiments.load_study(p, "paper", ROOT)
    p.write_text(STUDY.replace('name = "pre"\n', 'name = "pre"\nset = ["model.norm=\'mid\'"]\n'))
    with pytest.raises(ConfigError, match="condition 'pre'.*model.norm"):
        experiments.load_study(p, "quick", ROOT)


def test_reproduce_runs_skips_and_reports(tmp_path, capsys):
    require_data("multi30k")
    p = tmp_path / "tiny.toml"
    p.write_text(STUDY)
    out = tmp_path / "runs"
    args = ["reproduce", "--studies", str(p), "--out", str(out), "--root", str(ROOT), "--beam", "1"]
    assert main(args) == 0
    sdir = out / "tiny"
    status = {d.name: json.loads((d / "status.json").read_text())["status"] for d in sdir.iterdir() if d.is_dir()}
    assert status == {"pre-s1": "completed", "post-warmup-s1": "completed", "norm=post,lr=1000000.0-s1": "diverged"}
    assert (sdir / "pre-s1" / "bleu.json").is_file()
    mtime = (sdir / "pre-s1" / "metrics.jsonl").stat().st_mtime
    assert main(args) == 0  # rerun: nothing is trained again
    assert (sdir / "pre-s1" / "metrics.jsonl").stat().st_mtime == mtime
    md = (out / "report.md").read_text()
    assert "tiny study" in md and "| pre | 1 |" in md and "s1@" in md  # the diverged run is listed
    assert "ratio pre / post-warmup" in md or "updates to reach the target" in md
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "<table>" in page
