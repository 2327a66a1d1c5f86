"""Checkpoints without pickle: weights and tensor state in safetensors, the rest in JSON.

A checkpoint is a folder ``checkpoints/update_0000123/`` holding ``model.safetensors``,
``trainer.safetensors`` (optimizer tensors, RNG states) and ``trainer.json`` (optimizer
hyper-parameters, data-order position, counters). It is written into a temporary folder,
fsynced, then renamed into place, so a crash mid-write leaves the previous one intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_file
from torch import nn

from .data.prepare import sha256
from .errors import RunFolderError, UsageError

PREFIX = "update_"
MANIFEST = "manifest.json"  # sizes and SHA-256 of the other files, checked before a checkpoint is used


def problem(path: Path) -> str | None:
    """Why checkpoint ``path`` cannot be used (a truncated or altered file), or None if it can.
    Checkpoints written before manifests existed are checked by parsing their files."""
    manifest = path / MANIFEST
    if manifest.is_file():
        try:
            files = json.loads(manifest.read_text())["files"]
        except (OSError, ValueError, KeyError):
            return f"unreadable {MANIFEST}"
        for name, want in files.items():
            f = path / name
            if not f.is_file():
                return f"{name} is missing"
            if f.stat().st_size != want["bytes"]:
                return f"{name} has {f.stat().st_size} bytes, {want['bytes']} were written"
            if sha256(f) != want["sha256"]:
                return f"{name} differs from what was written (checksum)"
        return None
    if not (path / "trainer.json").is_file():
        return "trainer.json is missing"
    for name in ("model.safetensors", "trainer.safetensors"):
        try:
            with safe_open(str(path / name), "pt") as f:
                f.keys()
        except Exception as e:  # safetensors raises its own error types for damaged headers
            return f"{name}: {str(e).splitlines()[0][:200]}"
    return None


def newest_good(folder: Path, warn=None) -> Path | None:
    """The newest numbered checkpoint that passes :func:`problem`; damaged newer ones are skipped
    (a crash or a full disk can leave one), each with a warning through ``warn``."""
    for path in reversed(list_checkpoints(folder)):
        why = problem(path)
        if why is None:
            if warn and not (path / MANIFEST).is_file():  # written before manifests, or the manifest is gone
                warn(f"warning: checkpoint {path} has no {MANIFEST}: checked by reading its files only")
            return path
        if warn:
            warn(f"warning: checkpoint {path} is damaged ({why}); using an older one")
    return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _optimizer_split(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_join(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, v in tensors.items():
        if name.startswith("opt."):
            _, pid, k = name.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    for pid, st in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(st)
    return {"state": state, "param_groups": meta["param_groups"]}


def save(
    folder: Path,
    update: int,
    model_state: dict[str, torch.Tensor],
    opt_state: dict,
    state: dict,
    keep_last: int,
    name: str | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write checkpoint ``update`` (or the one called ``name``, e.g. "best") atomically; delete all
    but the newest ``keep_last`` numbered ones. ``model_state`` has one key per tensor (no tied
    aliases); ``opt_state`` is a ``torch.optim`` state dict with integer parameter ids."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".tmp-*"):  # left by a write that was killed
        shutil.rmtree(stale, ignore_errors=True)
    final = folder / (name or f"{PREFIX}{update:07d}")
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".tmp-"))
    tensors, opt_meta = _optimizer_split(opt_state)
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    tensors.update(extra_tensors or {})
    save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
    save_file(tensors, str(tmp / "trainer.safetensors"))
    (tmp / "trainer.json").write_text(json.dumps({**state, "update": update, "optimizer": opt_meta}, indent=1))
    files = {f.name: {"bytes": f.stat().st_size, "sha256": sha256(f)} for f in sorted(tmp.iterdir())}
    (tmp / MANIFEST).write_text(json.dumps({"files": files}, indent=1))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():  # only "best", or a rewrite of the same update: swap, then delete the old one
        old = folder / f".tmp-old-{final.name}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    _fsync_dir(folder)
    for stale in list_checkpoints(folder)[:-keep_last]:
        shutil.rmtree(stale)
    return final


def list_checkpoints(folder: Path) -> list[Path]:
    """Numbered checkpoints, oldest first. An interrupted write is a ``.tmp-*`` folder, never a
    numbered one, so a numbered folder with a file missing is damage (``problem`` says which)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith(PREFIX) and p.is_dir())


def load_weights(path: Path, model: nn.Module) -> None:
    """Load ``model.safetensors`` of checkpoint ``path``; a shape mismatch is a ValueError."""
    try:
        load_model(model, str(path / "model.safetensors"), strict=True)
    except RuntimeError as e:
        raise RunFolderError(f"{path}: checkpoint does not fit this model ({str(e).splitlines()[0]})") from None


def load(path: Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(model state, optimizer state with integer ids, trainer meta); sets the RNG states.
    ``meta["tensors"]`` holds the per-rank RNG states of a distributed run."""
    model_state = load_file(str(path / "model.safetensors"))
    meta = json.loads((path / "trainer.json").read_text())
    tensors = load_file(str(path / "trainer.safetensors"))
    opt_state = _optimizer_join(tensors, meta.pop("optimizer"))
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    meta["tensors"] = {k: v for k, v in tensors.items() if k.startswith("rng.rank")}
    return model_state, opt_state, meta


def check_vocabulary(path: Path, tokenizer_sha256: str, tokenizer_file: Path) -> None:
    """Refuse checkpoint ``path`` if it was trained with another tokenizer than the one whose
    SHA-256 is given (checkpoints that did not record one are accepted)."""
    recorded = json.loads((path / "trainer.json").read_text()).get("tokenizer_sha256")
    if recorded not in (None, tokenizer_sha256):
        raise RunFolderError(f"{path}: checkpoint was trained with another vocabulary than {tokenizer_file}")


def average_weights(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the model weights of several checkpoints (fairseq's
    average_checkpoints), accumulated in float64."""
    if not paths:
        raise UsageError("no checkpoints to average")
    total: dict[str, torch.Tensor] = {}
    for p in paths:
        for k, v in load_file(str(p / "model.safetensors")).items():
            total[k] = total[k] + v.double() if k in total else v.double()
    first = load_file(str(paths[0] / "model.safetensors"))
    return {k: (v / len(paths)).to(first[k].dtype) for k, v in total.items()}
