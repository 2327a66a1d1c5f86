"""The benchmark scripts run, at tiny sizes on the CPU, and write the JSON their tables come from
(their GPU sizes are for benchmarks/gpu_check.sh)."""

import importlib.util
import json
import math
import subprocess
import sys

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
    assert set(res["tokens_per_s"]) == {"preln", "torch.nn.Transformer"}
    assert all(v > 0 for v in res["tokens_per_s"].values())


def test_the_gpu_check_script_parses():
    done = subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
