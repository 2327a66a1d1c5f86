import subprocess
import sys

import pytest

from preln import errors
from preln.cli import main

from .conftest import ROOT


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "preln", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("train", "analyze", "prepare", "translate", "evaluate", "config"):
        assert cmd in out.stdout
    out = subprocess.run([sys.executable, "-m", "preln", "train", "--help"], capture_output=True, text=True, check=True)
    assert "--set" in out.stdout and "--out" in out.stdout and "--data" in out.stdout


def test_bad_input_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nnorm = 'middle'\n")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("preln: error: model.norm: 'middle' is not one of") and "Traceback" not in err
    assert (
        main(
            [
                "train",
                str(ROOT / "configs" / "tiny-translation.toml"),
                "--data",
                str(tmp_path / "none"),
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert "corpus not found" in capsys.readouterr().err


def test_config_prints_resolved_toml(capsys):
    assert main(["config", str(ROOT / "configs" / "tiny-translation.toml"), "--set", "model.norm=post"]) == 0
    out = capsys.readouterr().out
    assert 'norm = "post"' in out and "[schedule]" in out


def test_a_bug_is_one_line_with_the_traceback_kept(tmp_path, capsys, monkeypatch):
    from preln import commands

    def broken(args):
        raise KeyError("surprise")

    monkeypatch.setattr(commands, "cmd_config", broken)
    monkeypatch.setenv("PRELN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PRELN_DEBUG", raising=False)
    assert main(["config", "configs/tiny-translation.toml"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: KeyError" in err and "Traceback" not in err
    logs = list((tmp_path / "cache").glob("crash-*.log"))
    assert len(logs) == 1 and "KeyError: 'surprise'" in logs[0].read_text()


@pytest.mark.parametrize(
    "error, code",
    [
        (ValueError("a bug that raises ValueError"), 3),
        (TypeError("a bug"), 3),
        (errors.ConfigError("model.d_model: must be > 0"), 2),
        (errors.CorpusError("x.de: line 3 is not valid UTF-8"), 2),
        (errors.RunFolderError("runs/a: every checkpoint is damaged"), 2),
        (errors.UsageError("--beam must be >= 1, got 0"), 2),
        (FileNotFoundError("no runs folder x"), 2),
    ],
)
def test_errors_by_kind(error, code, tmp_path, capsys, monkeypatch):
    """A user's error (the ``PrelnError`` kinds, ``OSError``) is one line and exit 2, no crash
    log; any other exception, ``ValueError`` included, is a bug: exit 3 and a crash log."""
    from preln import commands

    def failing(args):
        raise error

    monkeypatch.setattr(commands, "cmd_config", failing)
    monkeypatch.setenv("PRELN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PRELN_DEBUG", raising=False)
    assert main(["config", "configs/tiny-translation.toml"]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(error) in err
    assert len(list((tmp_path / "cache").glob("crash-*.log"))) == (code == 3)


def test_user_errors_are_still_value_errors_for_api_callers():
    for kind in (errors.ConfigError, errors.CorpusError, errors.RunFolderError, errors.UsageError):
        assert issubclass(kind, errors.PrelnError) and issubclass(kind, ValueError)


def test_help_and_config_do_not_load_torch():
    """`preln --help`, every command's --help and `preln config` parse and print without torch
    (it takes seconds to import; they take a tenth of one)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from preln.cli import main\n"
        "for argv in (['--help'], ['train', '--help'], ['finetune', '--help'], ['reproduce', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"main(['config', {str(ROOT / 'configs' / 'tiny-mlm.toml')!r}])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "10%%" not in done.stdout and "10% warm-up" in done.stdout


def test_typos_are_answered_with_the_likely_intended_name(capsys):
    import pytest

    with pytest.raises(SystemExit) as e:
        main(["trian", "x.toml"])
    assert e.value.code == 2 and "unknown command 'trian'; did you mean 'train'?" in capsys.readouterr().err
    cases = {
        ("cpu-multi30k-pre", "model.nrom=pre"): "model.nrom: unknown key; did you mean 'norm'?",
        ("cpu-multi30k-pre", "model.norm=sandwhich"): "is not one of 'post', 'pre', 'sandwich', "
        "'deepnorm', 'admin', 'rezero', 'mix'; did you mean 'sandwich'?",
        ("cpu-multi30k-pree", "model.norm=pre"): "config file not found: cpu-multi30k-pree; did you mean "
        "'cpu-multi30k-pre'?",
        ("cpu-multi30k-pre", "model.zzzzzz=1"): "model.zzzzzz: unknown key (known:",  # nothing close: no guess
    }
    for (cfg, item), expected in cases.items():
        assert main(["config", cfg, "--set", item]) == 2
        err = capsys.readouterr().err
        assert err.startswith("preln: error: ") and expected in err and err.count("\n") == 1, err
