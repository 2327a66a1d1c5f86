"""Hostile input, generated: over 500 bad configs, overrides, CLI flags, corpora and damaged run
folders. Each must end in exit 0 or a one-line ``preln: error: ...`` (exit 2; argparse's own
usage errors exit 2 too), never a traceback, write nothing outside the test's folder, and leave a
refused run folder as it was."""

import contextlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tomllib

from preln import config
from preln.cli import main

from .conftest import ROOT, require_data

TINY = ROOT / "configs" / "tiny-translation.toml"
BAD_VALUES = [-1, 0, -0.5, 1e309, "nan", "inf", "", "x", True, [1, 2], {"a": 1}, 10**12, 1.5, "../../etc", "'quoted'"]


def run_cli(argv: list[str]) -> tuple[int, str]:
    """Exit status and stderr of ``preln ARGV`` in-process; an exception escaping is a failure."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse: usage + error, exit 2
            code = e.code if isinstance(e.code, int) else 2
            assert code in (0, 2), (argv, err.getvalue())
            return code, "argparse"
    return code, err.getvalue()


def check(argv: list[str], outcomes: dict) -> int:
    code, err = run_cli(argv)
    assert code in (0, 1, 2), (argv, code, err)
    if err == "argparse":
        outcomes["argparse"] = outcomes.get("argparse", 0) + 1
        return code
    if code == 2:
        lines = [ln for ln in err.splitlines() if ln.startswith("preln: error:")]
        assert len(lines) == 1 and "Traceback" not in err, (argv, err)
    outcomes[code] = outcomes.get(code, 0) + 1
    return code


def _toml(v) -> str:
    """A TOML value as ``--set`` takes it (nan and inf are TOML's own words)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and (v != v or abs(v) == float("inf")):
        return "inf"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return v if v in ("nan", "inf") else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return "{ a = 1 }"


def config_cases(rng: random.Random, n: int) -> list[list[str]]:
    """--set overrides of every field with bad values, unknown keys and malformed items."""
    fields = [f"{s}.{k}" for s, t in config.to_dict(config.RunConfig()).items() for k in t]
    cases = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.75:
            item = f"{rng.choice(fields)}={_toml(rng.choice(BAD_VALUES))}"
        elif kind < 0.85:
            item = f"{rng.choice(['model', 'data', 'nope'])}.{rng.choice(['typo', 'd_modell', 'x.y'])}=1"
        else:
            item = rng.choice(["novalue", "=3", "model=3", "model.norm", "train.seed=[", "a.b.c.d=1", " = "])
        cases.append(["config", str(TINY), "--set", item])
    return cases


def flag_cases(rng: random.Random, n: int, run: str, tmp) -> list[list[str]]:
    """Hostile flags on evaluate, translate, analyze, reproduce, report, prepare."""
    nums = ["-5", "0", "nan", "inf", "abc", "1e400", "-0", "99999"]
    paths = [str(tmp / "missing"), str(tmp / "afile.txt"), str(tmp), "/"]
    makers = [
        lambda: [  # a small evaluation (2 sentences, greedy) whose last flag is hostile
            *["evaluate", run, "--splits", "valid", "--limit", "2", "--beam", "1", "--max-len-b", "20"],
            *[rng.choice(["--beam", "--lenpen", "--limit", "--max-len-a", "--max-len-b"]), rng.choice(nums)],
        ],
        lambda: [
            "evaluate",
            run,
            "--limit",
            "2",
            "--splits",
            rng.choice(["", "tset", "valid,,", "train", "valid;test"]),
        ],
        lambda: ["evaluate", rng.choice(paths)],
        lambda: ["translate", rng.choice(paths), "--beam", rng.choice(nums)],
        lambda: ["translate", run, "--input", rng.choice(paths), "--beam", "1"],
        lambda: [
            "analyze",
            "--out",
            str(tmp / "an"),
            "--set",
            rng.choice(
                [
                    "depths=[]",
                    "depths=[0,2,4]",
                    "n_heads=3",
                    "seeds=0",
                    "widths=[16]",
                    "lemma_d=-1",
                    "nope=1",
                    "depths='x'",
                    "warmup_lr=-1.0",
                    "max_tokens=0",
                ]
            ),
        ],
        lambda: ["reproduce", "--out", str(tmp / "rep"), "--studies", rng.choice(["nope", str(tmp / "afile.txt")])],
        lambda: ["reproduce", "--out", str(tmp / "rep"), "--jobs", rng.choice(["0", "-1", "999", "x"])],
        lambda: ["report", rng.choice(paths)],
        lambda: ["train", str(TINY), "--out", str(tmp / "afile.txt")],
        lambda: ["train", rng.choice(paths)],
        lambda: ["config", str(TINY), "--data", rng.choice(paths), "--set", "data.corpus='tsv'"],
    ]
    return [rng.choice(makers)() for _ in range(n)]


def test_generated_bad_inputs_fail_cleanly(tmp_path, monkeypatch):
    require_data("multi30k")
    monkeypatch.chdir(tmp_path)  # anything written to the working directory would show up here
    (tmp_path / "afile.txt").write_text("not a folder\n")
    run = tmp_path / "run"
    sets = ["--set", "train.max_updates=4", "--set", "train.save_every=2", "--set", "train.progress=false"]
    assert main(["train", str(TINY), "--out", str(run), *sets]) == 0
    snapshot = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    rng = random.Random(12345)
    outcomes: dict = {}
    cases = config_cases(rng, 380) + flag_cases(rng, 160, str(run), tmp_path)
    for argv in cases:
        check(argv, outcomes)
    # the finished run folder was only read (evaluate writes bleu.json/hyp.* and evaluations/ when it succeeds)
    now = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert {k: v for k, v in now.items() if k in snapshot} == snapshot
    assert all(str(k).startswith(("bleu.json", "hyp.", "evaluations/")) for k in set(now) - set(snapshot))
    assert outcomes.get(2, 0) + outcomes.get("argparse", 0) > 400, outcomes
    allowed = {"afile.txt", "run", "an", "rep"}
    # `preln report TMP` reports on the run folder TMP holds (plain run folders are reportable):
    # its documented outputs, and the lock it takes on the folder it writes (.lock), may appear
    allowed |= {"report.md", "report.html", "claims.json", f"{tmp_path.name}_curves.png", ".lock"}
    assert {p.name for p in tmp_path.iterdir()} <= allowed, sorted(p.name for p in tmp_path.iterdir())
    print(f"fuzz: {len(cases)} cases, outcomes {outcomes}")


def _corrupt_corpus(rng: random.Random, folder, good: dict[str, bytes]) -> str:
    """A copy of a small parallel corpus with one kind of damage; returns the damage's name."""
    folder.mkdir()
    for name, data in good.items():
        (folder / name).write_bytes(data)
    target = folder / rng.choice(sorted(n for n in good if not n.startswith("test")))  # train reads no test
    data = target.read_bytes()
    kind = rng.choice(["utf8", "lines", "empty", "bpe", "truncgz", "nul", "binary"])
    if kind == "utf8":
        target.write_bytes(data[:50] + b"\xff\xfe" + data[50:])
    elif kind == "lines":
        target.write_bytes(data + b"one more line\n")
    elif kind == "empty":
        target.write_bytes(b"")
    elif kind == "bpe":
        target.write_bytes(b"".join(ln.replace(b" ", b"@@ ") + b"\n" for ln in data.splitlines()))
    elif kind == "truncgz":
        import gzip

        target.unlink()
        gz = gzip.compress(data)
        (folder / (target.name + ".gz")).write_bytes(gz[: len(gz) // 2])
    elif kind == "nul":
        target.write_bytes(data.replace(b"\n", b"\x00\n", 3))
    else:
        target.write_bytes(bytes(rng.randrange(256) for _ in range(2000)))
    return kind


def test_damaged_corpora_and_run_folders_fail_cleanly(tmp_path, monkeypatch):
    require_data("multi30k")
    monkeypatch.chdir(tmp_path)
    lines = {
        "de": [f"ein hund läuft {i} mal ." for i in range(60)],
        "en": [f"a dog runs {i} times ." for i in range(60)],
    }
    good = {
        f"{s}.{lang}": "".join(x + "\n" for x in lines[lang]).encode()
        for s in ("train", "valid", "test")
        for lang in ("de", "en")
    }
    rng = random.Random(7)
    outcomes: dict = {}
    sets = ["--set", "data.corpus='parallel'", "--set", "train.max_updates=1", "--set", "train.progress=false"]
    sets += ["--set", "data.vocab_size=60", "--set", "train.valid_bleu=false"]
    for i in range(16):
        kind = _corrupt_corpus(rng, tmp_path / f"c{i}", good)
        code = check(
            ["train", str(TINY), "--data", str(tmp_path / f"c{i}"), "--out", str(tmp_path / f"r{i}"), *sets], outcomes
        )
        assert code == 2 or kind in ("nul", "lines"), (kind, code)  # NULs are text; more lines: checked on pairs
        shutil.rmtree(tmp_path / f"r{i}", ignore_errors=True)
    # damaged run folders: evaluate/translate fall back or refuse; the folder is not rewritten when refused
    base = tmp_path / "base"
    assert (
        main(
            [
                "train",
                str(TINY),
                "--out",
                str(base),
                "--set",
                "train.max_updates=4",
                "--set",
                "train.save_every=2",
                "--set",
                "train.progress=false",
                "--set",
                "train.valid_bleu=false",
            ]
        )
        == 0
    )
    damages = ["model.safetensors", "trainer.json", "manifest.json", "status", "config", "spm", "metrics"]
    for i, what in enumerate(damages * 2):
        folder = tmp_path / f"d{i}"
        shutil.copytree(base, folder)
        ck = sorted((folder / "checkpoints").glob("update_*"))[-1 if i < len(damages) else 0]
        target = {
            "status": folder / "status.json",
            "config": folder / "config.toml",
            "spm": folder / "spm.model",
            "metrics": folder / "metrics.jsonl",
        }.get(what, ck / what)
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 3] + bytes(rng.randrange(256) for _ in range(7)))
        before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        code = check(["evaluate", str(folder), "--splits", "valid", "--limit", "3", "--beam", "1"], outcomes)
        if code == 2:
            assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before, what
        # what evaluation cannot do without is refused; a damaged checkpoint falls back to a good one
        assert code == (2 if what in ("config", "spm") else 0), (what, code)
    assert json.loads((base / "status.json").read_text())["status"] == "completed"
    tomllib.loads((base / "config.toml").read_text())  # the source run is untouched
    print(f"damaged inputs: outcomes {outcomes}")


def test_non_utf8_stdin_is_one_line_naming_the_line(tmp_path):
    require_data("multi30k")
    run = tmp_path / "run"
    sets = ["--set", "train.max_updates=2", "--set", "train.progress=false", "--set", "train.valid_bleu=false"]
    assert main(["train", str(TINY), "--out", str(run), *sets]) == 0
    done = subprocess.run(
        [sys.executable, "-m", "preln", "translate", str(run), "--beam", "1"],
        input=b"ein hund\n\xff\xfe kaputt\n",
        capture_output=True,
        env={**os.environ, "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8:surrogateescape"},
    )
    err = done.stderr.decode()
    assert done.returncode == 2 and "stdin: line 2 is not valid UTF-8" in err and "Traceback" not in err, err
