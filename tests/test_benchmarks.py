"""The benchmark scripts run, at tiny sizes on the CPU, and write the JSON their tables come from
(their GPU sizes are for benchmarks/gpu_check.sh)."""

import importlib.util
import json
import math
import os
import subprocess
import sys
import tarfile

from preln.data.corpus import data_root

from .conftest import ROOT, require_data


def _run(args: list[str], tmp_path) -> dict:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, *args, "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text())


def test_the_bert_mlm_benchmark_measures_every_model(tmp_path):
    models = ["preln-pre", "preln-post"] + (["hf"] if importlib.util.find_spec("transformers") else [])
    res = _run(["benchmarks/bert_mlm.py", "--tiny", "--no-compile", "--models", ",".join(models)], tmp_path)
    assert res["device"] == "cpu" and res["peak_flops"] > 0
    rows = {r["model"]: r for r in res["rows"]}
    assert sorted(rows) == sorted(models) and not any(r["compiled"] for r in res["rows"])
    for r in rows.values():
        assert r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 and math.isfinite(r["loss"])
        # random ids: the loss starts near ln(vocab) for every model
        assert abs(r["loss"] - rows["preln-pre"]["loss"]) < 0.5
    if "hf" in rows:  # the same architecture counted the same way (Pre-LN adds its final LayerNorm)
        assert abs(rows["hf"]["flops_per_token"] / rows["preln-post"]["flops_per_token"] - 1) < 0.01


def test_the_translation_benchmark_compares_with_torch_on_the_same_batches(tmp_path):
    require_data("multi30k")
    res = _run(["benchmarks/throughput.py", "--config", "configs/tiny-translation.toml", "--updates", "2"], tmp_path)
    assert res["device"] == "cpu" and res["precision"] == "fp32" and res["norm"] == "pre"
    assert res["kernels"] == "same"  # on CUDA: both models on the attention kernels preln asks for
    assert set(res["tokens_per_s"]) == {"preln", "torch.nn.Transformer"}
    assert all(v > 0 for v in res["tokens_per_s"].values())
    assert set(res["gflop_per_s"]) == set(res["tokens_per_s"]) and res["peak_gflop_per_s"] > 0
    # the same function: the same FLOPs per target token to within the attention kernels' own counts
    per_token = {k: res["gflop_per_s"][k] / res["tokens_per_s"][k] for k in res["tokens_per_s"]}
    assert math.isclose(per_token["preln"], per_token["torch.nn.Transformer"], rel_tol=0.05), per_token


def test_the_translation_benchmark_times_the_models_in_turns(monkeypatch):
    """Two models of the same cost measure the same speed even when the machine slows down to a
    third of its speed halfway through the run (timed one after the other they would not)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import throughput

    calls = []

    def update(b) -> float:  # the machine is 3x slower after the first 12 updates of all models
        calls.append(b)
        return b.ntokens * (1.0 if len(calls) <= 12 else 3.0)

    batches = [type("B", (), {"ntokens": n})() for n in (5, 7, 6, 8, 5, 9, 4, 6, 7, 5)]
    speed = throughput.measure({"a": update, "b": lambda b: update(b)}, batches, warmup=2)
    assert len(calls) == 2 * len(batches) and speed["a"] == speed["b"]


def test_the_op_profile_counts_both_models_calls(tmp_path):
    sizes = ["--set", "model.d_model=32", "--set", "model.d_ffn=64", "--set", "model.encoder_layers=1"]
    sizes += ["--set", "model.decoder_layers=1", "--batch", "4", "--len", "8", "--precision", "fp32"]
    res = _run(["benchmarks/op_profile.py", *sizes], tmp_path)
    for name in ("preln", "torch.nn.Transformer"):
        r = res[name]
        assert r["operator_calls"] > r["matmuls"] > 0 and r["self_time_us"] > 0 and r["top"]
        assert r["kernels"] is None  # no CUDA here
        assert all(count > 0 and us >= 0 for _, count, us in r["top"])


def test_the_gpu_check_script_runs_dry_on_the_cpu(tmp_path):
    """GPU_CHECK_DRY=1: every step of the one script a GPU session runs (benchmarks, the six Fig. 4
    runs side by side, stopped by SIGTERM and scored, the tests, the summary, the archive), on the
    CPU at tiny sizes, so that a GPU's minutes are not spent finding a bug in the script."""
    require_data("debdocs-de-en")
    script = ROOT / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    env = {**os.environ, "GPU_CHECK_DRY": "1", "PYTHON": sys.executable, "PRELN_DATA_ROOT": str(data_root().resolve())}
    out = tmp_path / "out"
    done = subprocess.run(
        ["bash", str(script), str(out), "300"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "tests collected" in done.stdout  # the suite is only collected in a dry run
    runs = {"post-warmup", "post-nowarmup", "pre-lr5e-4", "pre-lr1e-3", "pre-lr1e-3-fp32", "pre-lr5e-4-compiled"}
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == runs
    # every run trained (10 updates in a dry run, then it ends by itself) and was scored on the test split
    assert all(s["status"] == "completed" and s["update"] == 10 and "sacrebleu" in s["test"] for s in summary.values())
    with tarfile.open(out / "results.tgz") as tar:
        names = set(tar.getnames())
    assert {"./bench_bert.json", "./bench_mt_fp32.json", "./op_profile.json", "./pytest.log", "./steps.log"} <= names
    assert not any(n.endswith((".safetensors", "spm.model")) for n in names)  # what a device call can return


def test_the_gpu_check_script_packs_what_it_has_at_its_deadline(tmp_path):
    """A device call past its limit is killed with everything it wrote: at GPU_CHECK_DEADLINE the
    script stops and packs its logs, rather than waiting on a run that has not stopped."""
    require_data("debdocs-de-en")
    script = ROOT / "benchmarks" / "gpu_check.sh"
    env = {**os.environ, "GPU_CHECK_DRY": "1", "GPU_CHECK_DEADLINE": "1", "PYTHON": sys.executable}
    env["PRELN_DATA_ROOT"] = str(data_root().resolve())
    out = tmp_path / "out"
    done = subprocess.run(
        ["bash", str(script), str(out), "300"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 143, done.stdout[-2000:] + done.stderr[-2000:]
    assert "deadline of 1 s" in done.stdout
    with tarfile.open(out / "results.tgz") as tar:
        steps = tar.extractfile("./steps.log").read().decode()
    assert "deadline of 1 s: packing what there is" in steps
    assert "2. paper-size Fig. 4" not in steps  # it stopped before the training runs


def test_the_decoding_benchmark_compares_preln_with_its_past_and_with_transformers(tmp_path):
    """Tiny Post-LN runs (trained and barely trained), test and long inputs, greedy and beam 5:
    every method's rows, and preln's outputs equal to the earlier commit's beam search."""
    require_data("multi30k")
    methods = ["preln", "old"] + (["hf"] if importlib.util.find_spec("transformers") else [])
    res = _run(["benchmarks/decode.py", "--tiny", "--sentences", "12", "--limit", "40"], tmp_path)
    rows = res["rows"]
    assert {(r["inputs"], r["beam"]) for r in rows} == {
        (f"{kind}, {inputs}", beam) for kind in ("trained", "weak") for inputs in ("test", "long x3") for beam in (1, 5)
    }
    if res["old"]:  # the git history is at hand (a clone): today's search gives the earlier one's outputs
        assert {r["method"] for r in rows} == set(methods)
        assert all(r["identical_to_preln"] == 1.0 for r in rows if r["method"] == "old")
    assert all(r["sentences_per_s"] > 0 for r in rows)
    assert all(len(r["rounds_seconds"]) == 2 and r["seconds"] == min(r["rounds_seconds"]) for r in rows)  # in turns
    # greedy: Transformers' generate on the exported weights gives preln's outputs
    assert all(r["identical_to_preln"] == 1.0 for r in rows if r["method"] == "hf" and r["beam"] == 1)


def test_the_bitwise_digest_sees_numbers_and_ignores_times(tmp_path):
    """benchmarks/bitwise.py: a digest changes with any computed number and only with those."""
    spec = importlib.util.spec_from_file_location("bitwise", ROOT / "benchmarks" / "bitwise.py")
    bitwise = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bitwise)
    run = tmp_path / "r"
    (run / "checkpoints" / "update_1").mkdir(parents=True)
    line = {"kind": "train", "update": 1, "loss": 5.25, "seconds": 0.5, "tokens_per_s": 900.0}
    (run / "metrics.jsonl").write_text(json.dumps(line) + "\n")
    (run / "checkpoints" / "update_1" / "model.safetensors").write_bytes(b"\x00\x01")
    (run / "report.md").write_text("made at 12:00")
    first = bitwise.digest(run)
    assert set(first) == {"metrics.jsonl", "checkpoints/update_1/model.safetensors"}
    (run / "metrics.jsonl").write_text(json.dumps({**line, "seconds": 9.0, "tokens_per_s": 1.0}) + "\n")
    (run / "report.md").write_text("made at 13:00")
    assert bitwise.digest(run) == first
    (run / "metrics.jsonl").write_text(json.dumps({**line, "loss": 5.250000001}) + "\n")
    assert bitwise.digest(run)["metrics.jsonl"] != first["metrics.jsonl"]
    (run / "checkpoints" / "update_1" / "model.safetensors").write_bytes(b"\x00\x02")
    assert (
        bitwise.digest(run)["checkpoints/update_1/model.safetensors"] != first["checkpoints/update_1/model.safetensors"]
    )


def test_the_data_scale_benchmark_builds_the_cache_and_starts_from_it(tmp_path):
    """At a tiny size (the full sizes are in the benchmark's docstring): the cache is built once,
    a start from it and an empty run are timed to their first update, each torchrun rank measured."""
    require_data("debdocs-de-en")
    args = ["benchmarks/data_scale.py", "--out", str(tmp_path / "scale"), "--pairs", "2000", "--only", "translation"]
    row = _run(args, tmp_path)["translation"]
    assert row["lines"] == 4000 and row["build_s"] > 0 and row["build_peak_rss_mb"] > 100
    assert 0 < row["first_update_s"] < 120 and 0 < row["empty_first_update_s"] < 120
    assert len(row["rank_peak_rss_mb"]) == 2 and min(row["rank_peak_rss_mb"]) > 100
    assert set(row["spm_lines_per_s"]) == {str(t) for t in range(1, os.cpu_count() + 1)}
    assert row["targets"]["first_update_le_10s"] == (row["first_update_s"] <= 10)
    starts = [json.loads(p.read_text())["update"] for p in (tmp_path / "scale" / "runs").glob("*/status.json")]
    assert starts == [1] * 5  # build, the empty run's two, the start, the torchrun start: one update each
    entries = [p.name for p in (tmp_path / "scale" / "cache" / "ids").iterdir() if p.is_dir()]
    # the corpus's and the empty run's, each with its batches: the start and the ranks read the built ones
    assert len(entries) == 4 and sum(e.endswith(".batches") for e in entries) == 2
