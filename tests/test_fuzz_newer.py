"""Hostile input, generated, for the commands and files added since ``test_fuzz.py``: study files
(steps, claims, presets, conditions), launcher and GPU options, fine-tuning TSV folders and
``pair_columns``, export targets, plot and report inputs, prepare archives. Over 1,000 cases; each
ends in exit 0 or one ``preln: error:`` line (argparse's usage errors exit 2), never a traceback;
nothing is written outside the test's folder and the source runs are untouched. A study that would
train is stopped at its plan (the grid itself is tested elsewhere): the fuzz is of what is read."""

import gzip
import io
import json
import random
import tarfile
import time

import pytest

from preln import config
from preln.fit import train

from .conftest import ROOT, require_data
from .test_fuzz import check

TINY_MT = ROOT / "configs" / "tiny-translation.toml"
TINY_MLM = ROOT / "configs" / "tiny-mlm.toml"
JUNK = ["", "x", "-1", "0", "1e400", "nan", "[]", "{}", "'a'", '"b"', "true", "[1, 1]", "[[1]]", '"../../etc"', "3.5"]


class Planned(BaseException):
    """Raised in place of running a grid whose plan was accepted (not an Exception: passes main())."""


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A tiny masked-LM run (fine-tuning and export source) and a tiny translation run, trained once."""
    require_data("multi30k")
    require_data("english-mix")
    root = tmp_path_factory.mktemp("fuzz-newer")
    train(
        config.load(TINY_MLM, ["train.max_updates=2", "train.progress=false", "train.telemetry_every=1"]), root / "mlm"
    )
    train(config.load(TINY_MT, ["train.max_updates=2", "train.progress=false", "train.valid_bleu=false"]), root / "mt")
    return root


def snapshot(*folders) -> dict:
    return {p: p.read_bytes() for f in folders for p in sorted(f.rglob("*")) if p.is_file() and p.name != ".lock"}


STUDY_LINES = [
    'title = "t"',
    "title = 5",
    'steps = ["train"]',
    'steps = ["train", "evaluate"]',
    'steps = ["train", "finetune"]',
    'steps = ["analyze"]',
    'steps = ["evaluate"]',
    "steps = 3",
    "[preset.smoke]",
    "[preset.quick]",
    'config = "configs/tiny-translation.toml"',
    'config = "configs/tiny-mlm.toml"',
    'config = "nope.toml"',
    "config = 42",
    "seeds = [1, 2]",
    "seeds = [1, 1]",
    "seeds = []",
    'seeds = ["a"]',
    'set = ["train.max_updates=2"]',
    'set = ["model.nope=1"]',
    'set = "train.max_updates=2"',
    'evaluate = ["--limit", "2"]',
    'evaluate = ["--beam", "0"]',
    'finetune = ["paraphrase"]',
    'finetune = ["nope"]',
    'finetune_set = ["train.max_updates=1"]',
    'analysis = "cpu"',
    "control = true",
    "[[condition]]",
    'name = "a"',
    'name = "b"',
    'name = "a/b"',
    'name = "x\\ny"',
    'name = ""',
    "name = 7",
    "set = [\"model.norm='post'\"]",
    "set = [\"model.norm='nope'\"]",
    'presets = ["smoke"]',
    'presets = "quickly"',
    "[[grid]]",
    'name = "g"',
    '"model.norm" = ["post", "pre"]',
    '"model.norm" = []',
    '"model.nope" = [1]',
    '"schedule.warmup" = { smoke = [0, 2], labels = ["none", "warm"] }',
    '"schedule.warmup" = { smoke = [0, 2], labels = ["one"] }',
    "[[claim]]",
    'text = "c"',
    'paper = "p"',
    'condition = "a"',
    'condition = "zzz"',
    'better_than = "b"',
    'as_good_as = "b"',
    'worse_than = "a"',
    "above = 1.0",
    'metric = "final_nll"',
    'metric = "test-bleu"',
    'metric = "test_bleu"',
    'metric = "speed_ratio"',
    "unknown_key = 1",
]


def study_cases(rng: random.Random, n: int, tmp) -> list[list[str]]:
    """Study files: a valid skeleton with lines dropped, repeated or replaced at random."""
    skeleton = [
        'title = "t"',
        "[preset.smoke]",
        'config = "configs/tiny-translation.toml"',
        "seeds = [1, 2]",
        "[[condition]]",
        'name = "a"',
        "[[condition]]",
        'name = "b"',
        "set = [\"model.norm='post'\"]",
        "[[claim]]",
        'text = "c"',
        'paper = "p"',
        'condition = "a"',
        'better_than = "b"',
        'metric = "final_nll"',
    ]
    cases = []
    for i in range(n):
        lines = list(skeleton)
        for _ in range(rng.randint(1, 3)):
            j = rng.randrange(len(lines))
            op = rng.random()
            if op < 0.35:
                del lines[j]
            elif op < 0.8:
                lines[j] = rng.choice(STUDY_LINES)
            else:
                lines.insert(j, rng.choice(STUDY_LINES))
        path = tmp / "studies" / f"s{i}.toml"
        path.parent.mkdir(exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        out = tmp / "rep" / f"s{i}"
        cases.append(["reproduce", "--preset", "smoke", "--studies", str(path), "--out", str(out), "--root", str(ROOT)])
    return cases


def launcher_cases(rng: random.Random, n: int, tmp) -> list[list[str]]:
    """--launcher, --slurm, --gpus, --jobs-per-gpu, --jobs, --beam on a shipped study."""
    cases = []
    for _ in range(n):
        argv = ["reproduce", "--preset", "smoke", "--studies", "fig4", "--out", str(tmp / "rep" / "launch")]
        for _ in range(rng.randint(1, 3)):
            flag = rng.choice(["--launcher", "--slurm", "--gpus", "--jobs-per-gpu", "--jobs", "--beam", "--preset"])
            value = {
                "--launcher": rng.choice(["slurm", "local", "processes", "nope", ""]),
                "--slurm": rng.choice(["timeout_min=abc", "=1", "x", "gpus_per_node=-1", "a=b=c", "timeout_min=5"]),
                "--gpus": rng.choice(["0", "0,1", "x", "", "-1", "0,0", "99"]),
                "--jobs-per-gpu": rng.choice(JUNK + ["2"]),
                "--jobs": rng.choice(["0", "-1", "x", "1e9", "2"]),
                "--beam": rng.choice(["0", "-3", "x", "nan"]),
                "--preset": rng.choice(["nope", "", "smoke"]),
            }[flag]
            argv += [flag, value]
        cases.append(argv)
    return cases


def pair_folder(rng: random.Random, folder) -> None:
    """A folder of train/dev/test TSVs, each with a random defect (or none)."""
    folder.mkdir(parents=True)
    header = rng.choice(["label\ts1\ts2"] * 5 + ["s1\ts2", "label\ts1", "label\tlabel\ts2", "", "Quality\ts1"])
    for split in ("train", "dev", "test"):
        if rng.random() < 0.1:
            continue  # a split missing
        labels = ["0", "1"] if rng.random() < 0.8 else ["0", "1", "2", "yes", ""]
        seconds = ["a cat", "a cat", "", "x" * 500]
        rows = [f"{rng.choice(labels)}\tthe dog {k}\t{rng.choice(seconds)}" for k in range(6)]
        data = (header + "\n" + "\n".join(rows) + "\n").encode()
        kind = rng.random()
        if kind < 0.1:
            data = data.replace(b"\n", b"\r")
        elif kind < 0.2:
            data = data[:30] + b"\xff\xfe" + data[30:]
        elif kind < 0.3:
            data = b""
        elif kind < 0.4:
            data = gzip.compress(data)[:40]
        name = f"{split}.tsv.gz" if 0.3 <= kind < 0.4 else f"{split}.tsv"
        (folder / name).write_bytes(data)


BAD_FINETUNE_SETS = [
    *("data.pair_columns=" + v for v in ('["s1", "s1", "s2"]', '["a"]', "[]", "3", '["x", "s1", "s2"]')),
    *("data.pair_labels=" + v for v in ('["yes"]', '["a", "a"]', "[]", '["1", "0"]')),
    *("data.max_len=" + v for v in ("2", "5", "0", "-1")),
    *(f"train.{k}={v}" for k in ("max_updates", "max_epochs") for v in ("-1", "x")),
    "model.d_model=16",
    "model.d_model=33",
    'train.init_from="/nope"',
    "model.num_classes=3",
]


def finetune_cases(rng: random.Random, n: int, mlm, tmp) -> list[list[str]]:
    """Pretrained runs, tasks (shipped, missing, TSV folders with defects) and settings, each
    perhaps wrong; a case that is right fine-tunes 2 updates on 16 pairs."""
    cases = []
    for i in range(n):
        task = rng.choice(["paraphrase", "nope", str(tmp / "afile.txt"), str(tmp / "missing"), *["tsv"] * 6])
        sets = ["train.max_updates=2", "data.max_train_examples=16", "data.max_valid_examples=16"]
        if task == "tsv":
            task = str(tmp / "tsv" / f"t{i}")
            pair_folder(rng, tmp / "tsv" / f"t{i}")
            sets.append('data.pair_columns=["label", "s1", "s2"]')
        if rng.random() < 0.5:
            sets.append(rng.choice(BAD_FINETUNE_SETS))
        run = rng.choice([*[str(mlm)] * 7, str(tmp / "afile.txt"), str(tmp / "missing"), str(mlm.parent / "mt")])
        argv = ["finetune", run, "--task", task, "--out", str(tmp / "ft" / f"f{i}")]
        argv += [x for item in sets for x in ("--set", item)]
        if rng.random() < 0.2:
            argv.append("--random-init")
        cases.append(argv)
    return cases


def export_cases(rng: random.Random, n: int, sources, tmp) -> list[list[str]]:
    (tmp / "full").mkdir(exist_ok=True)
    (tmp / "full" / "x").write_text("x")
    targets = [tmp / "afile.txt", tmp / "full", tmp / "afile.txt" / "below", tmp / "ex" / "new", tmp / "ex" / "n2"]
    runs = [sources / "mlm", sources / "mt", tmp / "missing", tmp, tmp / "afile.txt"]
    cases = []
    for _ in range(n):
        argv = ["export", str(rng.choice(runs)), str(rng.choice(targets))]
        if rng.random() < 0.3:
            argv += ["--format", rng.choice(["hf", "onnx", ""])]
        cases.append(argv)
    return cases


def metrics_line(rng: random.Random) -> str:
    value = rng.choice([3.0, -1.0, float("nan"), "x", None, [1], 1e308, 0])
    record = {
        "kind": rng.choice(["train", "valid", "diverged", "x", 3]),
        "update": rng.choice([1, 2, 0, -1, "a", None, 1.5]),
        rng.choice(["valid_nll", "loss", "lr", "grad_norm", "valid_accuracy", "epoch"]): value,
        "time": rng.choice([1.0, "t", None]),
    }
    if rng.random() < 0.2:
        del record["update"]
    line = json.dumps(record)
    return rng.choice([line, line, line, line[: len(line) // 2], "[1, 2]", "null", "\x00\xff"])


def telemetry_line(rng: random.Random) -> str:
    layers = rng.choice([{"enc.0": 1.0}, {}, {"enc.0": "x"}, [], None])
    record = {"update": rng.choice([1, 2, "a"]), "grad_norm": layers, "update_ratio": layers, "stream_rms": layers}
    if rng.random() < 0.3:
        del record[rng.choice(list(record))]
    return json.dumps(record)


def plot_cases(rng: random.Random, n: int, tmp) -> list[list[str]]:
    cases = []
    for i in range(n):
        run = tmp / "plots" / f"p{i}"
        run.mkdir(parents=True)
        if rng.random() < 0.9:
            (run / "metrics.jsonl").write_text("\n".join(metrics_line(rng) for _ in range(rng.randint(0, 6))) + "\n")
        if rng.random() < 0.5:
            (run / "telemetry.jsonl").write_text(
                "\n".join(telemetry_line(rng) for _ in range(rng.randint(0, 4))) + "\n"
            )
        if rng.random() < 0.3:
            (run / "config.toml").write_text(rng.choice(["[model]\nnorm = 'post'\n", "garbage = ", ""]))
        argv = ["plot", str(run), "--out", str(tmp / "plots" / f"p{i}.png")]
        if rng.random() < 0.4:
            argv += ["--metric", rng.choice(["valid_nll", "loss", "nope", "", "valid_accuracy", "lr"])]
        if rng.random() < 0.3:
            argv.append("--telemetry")
        if rng.random() < 0.2:
            argv += ["--x", rng.choice(["epoch", "time", "nope"])]
        cases.append(argv)
    return cases


def report_cases(rng: random.Random, n: int, tmp) -> list[list[str]]:
    """Runs folders with a study.json, run folders and result files, each perhaps damaged."""
    cases = []
    for i in range(n):
        out = tmp / "reports" / f"r{i}"
        run = out / "st" / "a-s1"
        run.mkdir(parents=True)
        study = {"title": "t", "preset": "smoke", "jobs": [{"steps": ["train"], "folder": "a-s1", "condition": "a"}]}
        texts = {
            "st/study.json": rng.choice([json.dumps(study), "{", json.dumps({"jobs": 3}), json.dumps([]), ""]),
            "st/a-s1/metrics.jsonl": "\n".join(metrics_line(rng) for _ in range(rng.randint(0, 5))),
            "st/a-s1/status.json": rng.choice(['{"status": "completed", "update": 2}', "{", "[]", '{"status": 3}']),
            "st/a-s1/bleu.json": rng.choice(['{"splits": {"test": {"tok_lc": 3.0}}}', '{"splits": 3}', "{", "[]"]),
            "st/a-s1/config.toml": rng.choice([TINY_MT.read_text(), "x =", "[model]\nd_model = -1\n", ""]),
            "st/a-s1/scores.json": rng.choice(['{"test": {"accuracy": 50.0}}', "{", '{"test": 3}']),
        }
        for name, text in texts.items():
            if rng.random() < 0.85:
                (out / name).write_text(text)
        cases.append(["report", str(out if rng.random() < 0.8 else run)])
    return cases


def archive(rng: random.Random, path) -> None:
    kind = rng.choice(["empty", "bytes", "gzip", "tar-empty", "tar-wrong", "tar-half", "truncated"])
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "bytes":
        path.write_bytes(bytes(rng.randrange(256) for _ in range(300)))
    elif kind == "gzip":
        path.write_bytes(gzip.compress(b"not a tar"))
    else:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            names = {"tar-empty": [], "tar-wrong": ["x/readme.txt"], "tar-half": ["de-en/train.tags.de-en.de"]}
            for name in names.get(kind, ["de-en/train.tags.de-en.de", "de-en/train.tags.de-en.en"]):
                data = b"<doc>\nein satz .\n</doc>\n"
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        data = buf.getvalue()
        path.write_bytes(data[: len(data) // 2] if kind == "truncated" else data)


def prepare_cases(rng: random.Random, n: int, tmp) -> list[list[str]]:
    cases = []
    for i in range(n):
        src = tmp / "archives" / f"a{i}.tgz"
        src.parent.mkdir(exist_ok=True)
        archive(rng, src)
        corpus = rng.choice(["iwslt14", "iwslt14", "multi30k", "wmt14", "nope"])
        source = rng.choice([str(src), str(src), str(tmp / "missing"), str(tmp / "afile.txt"), str(tmp / "archives")])
        argv = ["prepare", corpus, "--source", source, "--out", str(tmp / "prepared" / f"o{i}")]
        if corpus == "wmt14" and rng.random() < 0.5:
            argv += ["--workers", rng.choice(["0", "-1", "x"])]
        cases.append(argv)
    return cases


def test_generated_inputs_to_the_newer_commands_fail_cleanly(sources, tmp_path, monkeypatch):
    from preln.lab import execute, launch

    def planned(*args, **kwargs):
        raise Planned

    monkeypatch.setattr(execute, "execute", planned)
    monkeypatch.setattr(launch, "submit", planned)  # --launcher slurm / local
    monkeypatch.chdir(tmp_path)  # anything written to the working directory would show up here
    (tmp_path / "afile.txt").write_text("not a folder\n")
    before = snapshot(sources)
    rng = random.Random(2026)
    cases = {
        "study": study_cases(rng, 300, tmp_path),
        "launcher": launcher_cases(rng, 150, tmp_path),
        "finetune": finetune_cases(rng, 150, sources / "mlm", tmp_path),
        "export": export_cases(rng, 60, sources, tmp_path),
        "plot": plot_cases(rng, 150, tmp_path),
        "report": report_cases(rng, 100, tmp_path),
        "prepare": prepare_cases(rng, 100, tmp_path),
    }
    listing = {p.name for p in tmp_path.iterdir()}
    summary = {}
    for kind, argvs in cases.items():
        outcomes: dict = {"seconds": time.perf_counter()}
        for argv in argvs:
            try:
                check(argv, outcomes)
            except Planned:
                outcomes["planned"] = outcomes.get("planned", 0) + 1
        outcomes["seconds"] = round(time.perf_counter() - outcomes["seconds"], 1)
        summary[kind] = outcomes
    total = sum(len(v) for v in cases.values())
    assert total >= 1000
    assert snapshot(sources) == before  # the source runs were only read
    written = {p.name for p in tmp_path.iterdir()} - listing
    assert written <= {"rep", "ft", "ex", "prepared", "full"}, sorted(written)
    for kind in ("study", "finetune", "plot", "report", "prepare", "export"):
        refused = summary[kind].get(2, 0) + summary[kind].get("argparse", 0)
        accepted = summary[kind].get(0, 0) + summary[kind].get("planned", 0)
        assert refused and (accepted or kind == "prepare"), (kind, summary[kind])  # both outcomes seen
    print(f"fuzz (newer commands): {total} cases, outcomes {summary}")
