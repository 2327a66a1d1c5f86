"""The package as a user installs it: a wheel (not an editable install) that carries its presets and
studies, used from an empty directory."""

import json
import os
import subprocess
import sys
import zipfile

from preln.data.corpus import data_root

from .conftest import ROOT, require_data


def test_the_wheel_runs_the_smoke_preset_from_an_empty_directory(tmp_path):
    """Build the wheel, install it (not editable) into a fresh virtual environment, run the console
    script's smoke preset (Fig. 4) and a preset by name from an empty directory."""
    require_data("multi30k")
    dist, fresh, empty = tmp_path / "dist", tmp_path / "venv", tmp_path / "empty"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(dist), str(ROOT)], check=True, capture_output=True)
    (wheel,) = dist.glob("preln-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"preln/configs/cpu-multi30k-pre.toml", "preln/studies/fig4.toml", "preln/lab/studies.py"} <= names
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True)
    (site,) = (fresh / "lib").glob("python*/site-packages")
    # the dependencies (torch, ...) from this environment, without it being a site dir: its
    # editable-install hook for this checkout's preln is not run in the fresh one
    (site / "deps.pth").write_text("".join(p + "\n" for p in sys.path if p.endswith("site-packages")))
    install = [*pip, "--python", str(fresh / "bin" / "python"), "install", "--no-deps", str(wheel)]
    subprocess.run(install, check=True, capture_output=True)
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PRELN_DATA_ROOT": str(data_root().resolve())}
    probe = [str(fresh / "bin" / "python"), "-c", "import preln; print(preln.__file__)"]
    where = subprocess.run(probe, cwd=empty, env=env, capture_output=True, text=True)
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
    cmd = [str(fresh / "bin" / "preln"), "reproduce", "--preset", "smoke", "--studies", "fig4", "--jobs", "2"]
    done = subprocess.run(cmd, cwd=empty, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    out = empty / "runs" / "reproduce-smoke"
    assert (out / "report.html").is_file()
    jobs = json.loads((out / "fig4" / "study.json").read_text())["jobs"]
    assert jobs and all(j["config"].startswith(str(site)) for j in jobs)  # the packaged presets
    # a shipped preset by name, from anywhere
    cmd = [str(fresh / "bin" / "preln"), "train", "tiny-translation", "--set", "train.max_updates=2"]
    done = subprocess.run([*cmd, "--set", "train.progress=false"], cwd=empty, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (empty / "runs" / "tiny-translation" / "status.json").is_file()
