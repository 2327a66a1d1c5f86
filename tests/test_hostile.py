"""The newer commands under bad input, damage and concurrency: each case either does what the
README says or stops with one ``preln: error:`` line (exit 2), never an internal error, a silent
wrong result or lost work."""

import json

import pytest

from preln import config
from preln.cli import main
from preln.fit import train

from .conftest import ROOT, one_error, require_data

TINY_MT = ROOT / "configs" / "tiny-translation.toml"
TINY_MLM = ROOT / "configs" / "tiny-mlm.toml"
QUIET = ["train.progress=false", "train.valid_bleu=false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny masked-LM run and a tiny translation run, trained once for the module."""
    require_data("english-mix")
    require_data("multi30k")
    root = tmp_path_factory.mktemp("hostile")
    train(config.load(TINY_MLM, ["train.max_updates=4", "train.progress=false"]), root / "mlm")
    train(config.load(TINY_MT, ["train.max_updates=4", *QUIET]), root / "mt")
    return root


def test_finetuning_with_no_room_for_a_pair_is_one_line(runs, tmp_path, capsys):
    args = ["finetune", str(runs / "mlm"), "--task", "paraphrase", "--out", str(tmp_path / "ft")]
    assert main([*args, "--set", "data.max_len=2"]) == 2
    one_error(capsys, "data.max_len=2", "at least 5 tokens")
    assert not (tmp_path / "ft").exists()


def test_plot_inputs_without_the_needed_fields_are_one_line(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "valid", "valid_nll": 3.0}) + "\n")
    assert main(["plot", str(run), "--out", str(tmp_path / "p.png")]) == 2
    one_error(capsys, "no valid lines with update and valid_nll")
    for line in ({"update": 1}, {"update": 1, "grad_norm": {}, "update_ratio": {}, "stream_rms": {}}):
        (run / "telemetry.jsonl").write_text(json.dumps(line) + "\n")
        assert main(["plot", str(run), "--telemetry", "--out", str(tmp_path / "t.png")]) == 2
        one_error(capsys, "no complete telemetry.jsonl lines")
    assert not (tmp_path / "p.png").exists() and not (tmp_path / "t.png").exists()


STUDY = """
title = "t"
[preset.quick]
config = "configs/tiny-translation.toml"
seeds = [1]
set = ["train.max_updates=2"]
[[condition]]
name = "a"
"""


@pytest.mark.parametrize(
    "edit, message",
    [
        (('config = "configs/tiny-translation.toml"\n', ""), "config must name the base config file, got None"),
        (('config = "configs/tiny-translation.toml"', "config = 42"), "config must name the base config file, got 42"),
        (('title = "t"', "title = 5"), "title must be a string"),
        (('name = "a"', 'name = "a"\npresets = "quickly"'), "presets must list preset names of this file"),
        (('name = "a"', 'name = "a\\nb"'), "name must be a folder-safe string"),
        (('name = "a"', 'name = "a b"'), "name must be a folder-safe string"),
        (("seeds = [1]", "seeds = [1, 1]"), "seeds must be distinct"),
        (('title = "t"', 'title = "t"\nsteps = ["train", "finetune"]'), "finetune must list the tasks"),
    ],
)
def test_bad_study_files_stop_before_anything_runs(tmp_path, capsys, edit, message):
    p = tmp_path / "s.toml"
    p.write_text(STUDY.replace(edit[0], edit[1]))
    out = tmp_path / "runs"
    assert main(["reproduce", "--studies", str(p), "--out", str(out), "--root", str(ROOT)]) == 2
    one_error(capsys, message)
    assert not out.exists()


def test_finetune_steps_on_a_translation_study_stop_before_training(tmp_path, capsys):
    p = tmp_path / "s.toml"
    text = STUDY.replace('title = "t"', 'title = "t"\nsteps = ["train", "finetune"]')
    p.write_text(
        text.replace('set = ["train.max_updates=2"]', 'set = ["train.max_updates=2"]\nfinetune = ["paraphrase"]')
    )
    assert main(["reproduce", "--studies", str(p), "--out", str(tmp_path / "runs"), "--root", str(ROOT)]) == 2
    one_error(capsys, "fine-tune a masked-LM run, this is translation")
    assert not (tmp_path / "runs").exists()


def test_launcher_problems_are_found_before_the_grid_starts(tmp_path, capsys, monkeypatch):
    pytest.importorskip("submitit")
    p = tmp_path / "s.toml"
    p.write_text(STUDY)
    out = tmp_path / "runs"
    args = ["reproduce", "--studies", str(p), "--out", str(out), "--root", str(ROOT)]
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    assert main([*args, "--launcher", "slurm"]) == 2
    one_error(capsys, "--launcher slurm", "sbatch is not on PATH")
    monkeypatch.undo()
    assert main([*args, "--launcher", "local", "--slurm", "timeout_min=abc"]) == 2
    one_error(capsys, "--slurm:", "timeout_min")
    assert main([*args, "--slurm", "timeout_min=5"]) == 2
    one_error(capsys, "--slurm applies to --launcher slurm or local")
    assert not out.exists()


def test_a_study_json_without_a_title_is_reported_under_its_folder_name(tmp_path):
    from preln.lab import report

    run = tmp_path / "runs" / "s" / "a-s1"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "valid", "update": 5, "valid_nll": 4.0}) + "\n")
    (run / "status.json").write_text(json.dumps({"status": "completed", "update": 5}))
    job = {"folder": "a-s1", "steps": ["train"], "condition": "a", "seed": 1}
    (tmp_path / "runs" / "s" / "study.json").write_text(json.dumps({"jobs": [job]}))
    assert "## s\n" in report.write_report(tmp_path / "runs")[0].read_text()
    (tmp_path / "runs" / "s" / "study.json").write_text('{"jobs": 5}')
    with pytest.raises(config.ConfigError, match="not a study.json that preln wrote"):
        report.write_report(tmp_path / "runs")


def test_pair_tsvs_with_cr_line_ends_all_empty_pairs_or_repeated_columns(tmp_path, capsys):
    from preln.data.corpus import CorpusError, read_pair_tsv

    (tmp_path / "cr.tsv").write_bytes(b"label\ts1\ts2\r1\tone\ttwo\r0\tthree\tfour\r")
    assert read_pair_tsv(tmp_path / "cr.tsv", ("label", "s1", "s2"), ("0", "1")) == (
        ["one", "three"],
        ["two", "four"],
        [1, 0],
    )
    (tmp_path / "empty.tsv").write_text("label\ts1\ts2\n1\t\tx\n0\t \t\n")
    with pytest.raises(CorpusError, match="no pair has two non-empty sentences"):
        read_pair_tsv(tmp_path / "empty.tsv", ("label", "s1", "s2"), ("0", "1"))
    with pytest.raises(config.ConfigError, match="pair_columns must name three different columns"):
        config.load(TINY_MLM, ["model.task='classify'", "data.pair_columns=['label', 's1', 's1']"])


def test_a_reported_run_can_still_be_extended_and_evaluated(runs, tmp_path, capsys):
    import shutil

    run = tmp_path / "mt"
    shutil.copytree(runs / "mt", run)
    assert main(["report", str(run)]) == 0
    assert (run / "claims.json").is_file()
    assert main(["train", str(TINY_MT), "--out", str(run), "--set", "train.max_updates=6", *_sets(QUIET)]) == 0
    assert json.loads((run / "status.json").read_text())["update"] == 6
    assert main(["evaluate", str(run), "--limit", "5", "--beam", "1", "--max-len-b", "5"]) == 0


def _sets(items):
    return [x for item in items for x in ("--set", item)]


def test_averaging_refuses_damaged_or_mismatched_checkpoints(runs, tmp_path, capsys):
    import shutil

    run = tmp_path / "mt"
    shutil.copytree(runs / "mt", run)
    assert (
        main(
            [
                "train",
                str(TINY_MT),
                "--out",
                str(run),
                "--set",
                "train.max_updates=8",
                "--set",
                "train.save_every=2",
                *_sets(QUIET),
            ]
        )
        == 0
    )
    ckpts = sorted((run / "checkpoints").glob("update_*"))
    assert len(ckpts) >= 2
    with open(ckpts[-2] / "model.safetensors", "r+b") as f:  # the older of the two, damaged
        f.seek(200)
        f.write(b"\x00" * 64)
    assert main(["evaluate", str(run), "--average", "2", "--limit", "3", "--beam", "1", "--max-len-b", "5"]) == 2
    one_error(capsys, "--average 2 needs the last 2 checkpoints intact", ckpts[-2].name)
    src = tmp_path / "src.txt"
    src.write_text("ein hund .\n")
    args = ["translate", str(run), "--input", str(src), "--checkpoint", "best", "--average", "2"]
    assert main(args) == 2
    one_error(capsys, "with --checkpoint best use 1")


def test_a_damaged_token_id_cache_is_set_aside_and_rebuilt(tmp_path, capsys):
    import numpy as np

    from preln.tasks import load_data

    corpus = tmp_path / "text.txt"
    corpus.write_text("".join(f"line {i} of some english text with words {i * 7 % 13}\n" for i in range(300)))
    cache = tmp_path / "cache"
    over = [f"data.path='{corpus}'", f"data.cache_dir='{cache}'", "data.vocab_size=120", "data.valid_fraction=0.1"]
    cfg = config.load(TINY_MLM, over)
    first, tok = load_data(cfg)
    want = [first.examples["train"][i] for i in range(len(first.examples["train"]))]
    (entry,) = [p for p in (cache / "ids").iterdir() if p.is_dir()]
    ids = entry / "train.ids.npy"
    for damage in ("truncate", "one token", "out of vocabulary"):
        arr = np.load(ids)
        if damage == "truncate":
            ids.write_bytes(ids.read_bytes()[:100])
        elif damage == "one token":
            np.save(ids, np.full_like(arr, 7))
        else:
            arr[0] = len(tok) + 5
            np.save(ids, arr)
        capsys.readouterr()
        data, _ = load_data(cfg)
        assert "is damaged; set aside" in capsys.readouterr().err, damage
        assert [data.examples["train"][i] for i in range(len(want))] == want, damage
        assert "token ids cached for the next run" in data.notes  # rebuilt from the text


def test_prepare_names_the_archive_and_downloads_inside_out(tmp_path, capsys, monkeypatch):
    import subprocess

    from preln.data import prepare

    (tmp_path / "empty.tgz").write_bytes(b"")
    subprocess.run(f"echo hello | gzip > {tmp_path / 'notar.tgz'}", shell=True, check=True)
    half = tmp_path / "half" / "de-en"
    half.mkdir(parents=True)
    (half / "train.tags.de-en.de").write_text("x\n")
    subprocess.run(["tar", "czf", str(tmp_path / "half.tgz"), "-C", str(tmp_path / "half"), "."], check=True)
    for name, why in (
        ("empty", "(empty file)"),
        ("notar", "gzip data, but not a tar archive"),
        ("half", "no train.tags.de-en.en"),
    ):
        assert (
            main(["prepare", "iwslt14", "--source", str(tmp_path / f"{name}.tgz"), "--out", str(tmp_path / "o")]) == 2
        )
        line = one_error(capsys, f"{name}.tgz", why)
        assert "/tmp/tmp" not in line  # never a temporary folder that is gone
    seen = []

    def no_network(url, dest):
        seen.append(dest)
        raise prepare.CorpusError("no network here")

    monkeypatch.setattr(prepare, "download", no_network)
    monkeypatch.chdir(tmp_path)
    assert main(["prepare", "iwslt14", "--out", str(tmp_path / "data" / "iwslt")]) == 2
    assert seen and seen[0].is_relative_to(tmp_path / "data" / "iwslt")
    assert not (tmp_path / ".downloads").exists() and not (tmp_path / "data" / ".downloads").exists()


def test_gpus_that_are_not_there_are_refused(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    p = tmp_path / "s.toml"
    p.write_text(STUDY)
    args = ["reproduce", "--studies", str(p), "--out", str(tmp_path / "runs"), "--root", str(ROOT), "--gpus", "0"]
    assert main(args) == 2
    one_error(capsys, "--gpus 0", "no CUDA GPU")
    assert not (tmp_path / "runs").exists()


FT = ["data.max_train_examples=48", "data.max_valid_examples=16", "train.progress=false", "train.max_epochs=1"]


def test_the_random_init_control_of_an_admin_run_is_profiled(tmp_path):
    require_data("english-mix")
    require_data("pairclf")
    from preln.finetune import finetune

    sets = ["model.norm='admin'", "model.norm_type='layernorm'", "train.max_updates=3", "train.progress=false"]
    train(config.load(TINY_MLM, sets), tmp_path / "admin")
    finetune(tmp_path / "admin", "paraphrase", tmp_path / "control", FT, random_init=True)
    profile = json.loads((tmp_path / "control" / "admin_profile.json").read_text())
    omegas = [w for stack in profile.values() for w in stack["omega"]]
    assert omegas and all(w > 0 for w in omegas) and any(abs(w - 1) > 1e-3 for w in omegas)


def test_extending_a_run_keeps_the_schedule_its_updates_ran_on(runs, tmp_path, capsys):
    """A warm-up share or a linear decay depends on the run's length: extending such a run is
    refused with the way to keep the past schedule, and that way works."""
    import shutil

    from preln.finetune import finetune

    ft = tmp_path / "ft"
    finetune(runs / "mlm", "paraphrase", ft, FT)
    total = config.load(ft / "config.toml").schedule.total
    assert total > 0  # the length the schedule ran on, written down
    more = [*FT, "train.max_epochs=2"]
    with pytest.raises(config.ConfigError, match=f"add --set schedule.total={total}"):
        finetune(runs / "mlm", "paraphrase", ft, more)
    finetune(runs / "mlm", "paraphrase", ft, [*more, f"schedule.total={total}"])  # the advice, followed
    assert json.loads((ft / "status.json").read_text())["status"] == "completed"
    # fewer updates than a run already has: it would describe another run
    run = tmp_path / "mt"
    shutil.copytree(runs / "mt", run)
    assert main(["train", str(TINY_MT), "--out", str(run), "--set", "train.max_updates=2", *_sets(QUIET)]) == 2
    one_error(capsys, "train.max_updates=2, but the run already has 4 updates")
    assert config.load(run / "config.toml").train.max_updates == 4


def test_a_finetuning_run_resumes_without_its_pretrained_folder(runs, tmp_path):
    import shutil

    from preln.checkpoint import list_checkpoints

    pre = tmp_path / "pre"
    shutil.copytree(runs / "mlm", pre)
    ft = tmp_path / "ft"
    from preln.finetune import finetune_config

    cfg = finetune_config(pre, "paraphrase", [*FT, "train.max_epochs=2", "train.save_every=1"])
    train(config.override(cfg, ["train.max_updates=2"]), ft)  # interrupted after 2 updates, as it were
    shutil.move(pre, tmp_path / "moved")
    assert main(["train", str(ft / "config.toml"), "--out", str(ft), "--set", "train.max_updates=4"]) == 0
    assert json.loads((ft / "status.json").read_text())["update"] == 4 and list_checkpoints(ft / "checkpoints")


def test_export_and_finetune_refuse_a_diverged_run(runs, tmp_path, capsys):
    import shutil

    run = tmp_path / "mlm"
    shutil.copytree(runs / "mlm", run)
    (run / "status.json").write_text(json.dumps({"status": "diverged", "update": 3}))
    assert main(["export", str(run), str(tmp_path / "hf")]) == 2
    one_error(capsys, "diverged at update 3")
    assert main(["finetune", str(run), "--task", "paraphrase", "--out", str(tmp_path / "ft")]) == 2
    one_error(capsys, "diverged at update 3")
    assert not (tmp_path / "hf").exists() and not (tmp_path / "ft").exists()


def test_export_is_whole_or_absent(runs, tmp_path, capsys):
    pytest.importorskip("transformers")
    out = tmp_path / "hf"
    stale = tmp_path / ".hf.export-999999999"  # what a killed export leaves: its process is gone
    stale.mkdir()
    (stale / "config.json").write_text("{")
    assert main(["export", str(runs / "mlm"), str(out)]) == 0
    assert not stale.exists() and {"config.json", "model.safetensors", "spm.model"} <= {p.name for p in out.iterdir()}
    capsys.readouterr()
    done = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["export", str(runs / "mlm"), str(out)]) == 0  # a rerun of the finished export
    assert {p.name: p.read_bytes() for p in out.iterdir()} == done
    (out / "preln_export.json").write_text('{"run": "another"}')  # an export of something else
    assert main(["export", str(runs / "mlm"), str(out)]) == 2
    one_error(capsys, "is not empty")
    assert not list(tmp_path.glob(".hf.export-*"))


def test_a_start_that_left_no_checkpoint_leaves_no_tensorboard_events_behind(tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    (run / "tensorboard").mkdir(parents=True)
    (run / "tensorboard" / "events.out.tfevents.1.stale").write_bytes(b"old")
    train(config.load(TINY_MT, ["train.max_updates=2", *QUIET, "train.tensorboard=true"]), run)
    assert not (run / "tensorboard" / "events.out.tfevents.1.stale").exists()
    assert [p.name for p in run.glob("tensorboard.*")]  # kept aside, as the logs of such a start are


def test_plots_of_finetuning_runs_and_of_two_tasks(runs, tmp_path):
    import warnings

    from preln.finetune import finetune

    finetune(runs / "mlm", "paraphrase", tmp_path / "ft", FT)
    assert (
        main(
            [
                "plot",
                str(tmp_path / "ft"),
                "--metric",
                "valid_accuracy",
                "--x",
                "epoch",
                "--out",
                str(tmp_path / "a.png"),
            ]
        )
        == 0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a legend that does not fit made matplotlib warn
        assert main(["plot", str(runs / "mt"), str(runs / "mlm"), "--out", str(tmp_path / "b.png")]) == 0


def test_a_study_fine_tunes_on_a_folder_of_tsvs(tmp_path):
    """``finetune = ["<folder>"]``, the documented ``--task FOLDER``, in a study: its runs, its
    logs named after the folder, its scores in the report."""
    import gzip
    import shutil

    require_data("english-mix")
    src = require_data("pairclf")
    task = tmp_path / "mytask"
    task.mkdir()
    for split in ("train", "dev", "test"):
        lines = gzip.open(src / f"paraphrase.{split}.tsv.gz", "rt").read().splitlines()[:41]
        (task / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    shutil.copytree(ROOT / "src" / "preln" / "configs", tmp_path / "configs")
    p = tmp_path / "ft.toml"
    p.write_text(
        """
title = "tsv task"
steps = ["train", "finetune"]
[preset.quick]
config = "configs/tiny-mlm.toml"
seeds = [1]
set = ["train.max_updates=3", "train.valid_every=3"]
finetune = ["mytask"]
finetune_set = ["train.max_epochs=1"]
[[condition]]
name = "pre"
[[claim]]
text = "pre on my task"
condition = "pre"
metric = "test_accuracy:mytask"
"""
    )
    out = tmp_path / "runs"
    assert main(["reproduce", "--studies", str(p), "--out", str(out), "--root", str(tmp_path)]) == 0
    assert (out / "ft" / "pre-s1-ft-mytask" / "scores.json").is_file()
    assert (out / "ft" / "pre-s1" / "finetune-mytask.log").is_file()
    assert "| pre on my task |" in (out / "report.md").read_text()
    p.write_text(p.read_text().replace('["mytask"]', '["no-such-folder"]'))
    assert main(["reproduce", "--studies", str(p), "--out", str(tmp_path / "r2"), "--root", str(tmp_path)]) == 2
