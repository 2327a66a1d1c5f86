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
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_file
from torch import nn

from .data.digests import sha256_of as sha256
from .errors import RunFolderError, UsageError

PREFIX = "update_"
MANIFEST = "manifest.json"  # sizes and SHA-256 of the other files, checked before a checkpoint is used
SHARDS = "shards"  # a sharded checkpoint's folder of torch.distributed.checkpoint files (FSDP)


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
    tmp = begin(folder)
    tensors, opt_meta = _optimizer_split(opt_state)
    save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
    return finish(
        folder, tmp, update, {**state, "optimizer": opt_meta}, keep_last, name, {**tensors, **(extra_tensors or {})}
    )


def begin(folder: Path) -> Path:
    """A fresh temporary folder for the next checkpoint (what a killed write left is removed)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".tmp-*"):  # left by a write that was killed
        shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=folder, prefix=".tmp-"))


def finish(folder: Path, tmp: Path, update: int, meta: dict, keep_last: int, name: str | None, tensors: dict) -> Path:
    """Complete the checkpoint in ``tmp`` (weights and optimizer already there, in
    ``model.safetensors`` or ``shards/``): RNG states and ``tensors`` in ``trainer.safetensors``,
    ``meta`` in ``trainer.json``, the manifest of every file, fsync, rename into place."""
    tensors = dict(tensors)
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / "trainer.safetensors"))
    (tmp / "trainer.json").write_text(json.dumps({**meta, "update": update}, indent=1))
    names = sorted(f.relative_to(tmp).as_posix() for f in tmp.rglob("*") if f.is_file())
    files = {n: {"bytes": (tmp / n).stat().st_size, "sha256": sha256(tmp / n)} for n in names}
    (tmp / MANIFEST).write_text(json.dumps({"files": files}, indent=1))
    for n in [*names, MANIFEST]:
        with open(tmp / n, "rb") as fh:
            os.fsync(fh.fileno())
    if (tmp / SHARDS).is_dir():
        _fsync_dir(tmp / SHARDS)
    final = folder / (name or f"{PREFIX}{update:07d}")
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


def is_sharded(path: Path) -> bool:
    """Whether checkpoint ``path`` holds its weights and optimizer as ``torch.distributed.checkpoint``
    shards (written under FSDP, one file per rank) instead of ``model.safetensors``."""
    return (path / SHARDS).is_dir()


def model_state(path: Path) -> dict[str, torch.Tensor]:
    """Checkpoint ``path``'s weights as one state dict, from either format (shards are read
    and joined in this process: no process group needed)."""
    if not is_sharded(path):
        return load_file(str(path / "model.safetensors"))
    import torch.distributed.checkpoint as dcp

    reader = dcp.FileSystemReader(str(path / SHARDS))
    meta = reader.read_metadata().state_dict_metadata
    state = {
        k.removeprefix("model."): torch.empty(m.size, dtype=m.properties.dtype)
        for k, m in meta.items()
        if k.startswith("model.") and hasattr(m, "size")
    }
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.filterwarnings("ignore", message=".*single process")
        dcp.load({"model": state}, storage_reader=reader)
    return state


def list_checkpoints(folder: Path) -> list[Path]:
    """Numbered checkpoints, oldest first. An interrupted write is a ``.tmp-*`` folder, never a
    numbered one, so a numbered folder with a file missing is damage (``problem`` says which)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith(PREFIX) and p.is_dir())


def load_weights(path: Path, model: nn.Module) -> None:
    """Load ``model.safetensors`` of checkpoint ``path``; a shape mismatch is a ValueError."""
    try:
        if is_sharded(path):
            _load_into(model, model_state(path))
        else:
            load_model(model, str(path / "model.safetensors"), strict=True)
    except RuntimeError as e:
        raise RunFolderError(f"{path}: checkpoint does not fit this model ({str(e).splitlines()[0]})") from None


def _load_into(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Strict but for tied aliases (a sharded checkpoint names a tied weight under both keys)."""
    own = model.state_dict()
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state]
    if unexpected or missing:
        raise RuntimeError(f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.load_state_dict(state, strict=True)


def load(path: Path) -> tuple[dict[str, torch.Tensor] | None, dict | None, dict]:
    """(model state, optimizer state with integer ids, trainer meta); sets the RNG states.
    ``meta["tensors"]`` holds the per-rank RNG states of a distributed run. A sharded checkpoint
    gives None for both states: ``distributed.load_shards`` reads them into the model."""
    meta = json.loads((path / "trainer.json").read_text())
    tensors = load_file(str(path / "trainer.safetensors"))
    sharded = is_sharded(path)
    model_state = None if sharded else load_file(str(path / "model.safetensors"))
    opt_state = None if sharded else _optimizer_join(tensors, meta.pop("optimizer"))
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
        for k, v in model_state(p).items():
            total[k] = total[k] + v.double() if k in total else v.double()
    first = model_state(paths[0])
    return {k: (v / len(paths)).to(first[k].dtype) for k, v in total.items()}
