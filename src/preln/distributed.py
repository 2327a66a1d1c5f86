"""Multi-process training under ``torchrun`` with PyTorch's own DDP (FSDP: see ``wrap``).

Launched by ``torchrun --nproc_per_node=N -m preln train ...``: the environment carries RANK,
WORLD_SIZE and LOCAL_RANK. Backend: NCCL on CUDA, gloo on CPU. Every rank reads the data and
builds the same model; each update's group of batches is split across ranks; only rank 0 writes
logs, status and checkpoints.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from .errors import ConfigError, RunFolderError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64 on CPU; exact for the token counts we sum)."""
        if not self.active:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        return t.cpu().tolist()

    def sum_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of a device tensor over ranks, on the device (no host sync); itself when alone."""
        if not self.active:
            return t
        t = t.clone()
        dist.all_reduce(t)
        return t

    def any(self, flag: bool) -> bool:
        return bool(self.sum([float(flag)])[0]) if self.active else flag

    def broadcast(self, value):
        """Rank 0's ``value`` on every rank (a picklable object, e.g. a path)."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_rng(self) -> dict[str, torch.Tensor]:
        """Every rank's CPU RNG state, for rank 0's checkpoint (dropout masks resume exactly)."""
        if not self.active:
            return {}
        state = torch.get_rng_state()
        out = [torch.empty_like(state) for _ in range(self.world)]
        if dist.get_backend() == "nccl":
            gathered = [t.cuda() for t in out]
            dist.all_gather(gathered, state.cuda())
            out = [t.cpu() for t in gathered]
        else:
            dist.all_gather(out, state)
        return {f"rng.rank{r}": t for r, t in enumerate(out)}


def init(device_type: str) -> Dist:
    """Join the process group torchrun describes, or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device_type == "cuda":
            if local >= (gpus := torch.cuda.device_count()):  # set_device would crash with a traceback
                raise ConfigError(
                    f"torchrun gave this process LOCAL_RANK {local} but the machine has {gpus} CUDA "
                    f"device(s): start at most {gpus} per node (--nproc_per_node) or set train.device='cpu'"
                )
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Dist(rank, world, local)


def wrap(model: nn.Module, mode: str, ctx: Dist, device: torch.device, find_unused: bool) -> nn.Module:
    """DDP (replicated weights, all-reduced gradients) or FSDP (sharded, ``fully_shard`` per layer)."""
    if not ctx.active:
        return model
    if mode == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device.type, (ctx.world,))
        for stack in (getattr(model, "encoder", None), getattr(model, "decoder", None)):
            if stack is not None:
                for layer in stack.layers:
                    fully_shard(layer, mesh=mesh)
        return fully_shard(model, mesh=mesh)  # the same module object, its parameters now sharded
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def shutdown(clean: bool = True) -> None:
    """Leave the process group. After a clean run every rank first meets at a barrier: a rank
    that tears gloo down while another still uses it can abort (seen once in CI: "terminate
    called without an active exception"). After an error no barrier: the others may never come."""
    if dist.is_available() and dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


def sync_grads(model: nn.Module, sync: bool):
    """Context for one micro-batch: all-reduce its gradients (the last) or accumulate locally."""
    if sync:
        return contextlib.nullcontext()
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    if _is_fsdp(model):
        return _fsdp_no_sync(model)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(model: nn.Module):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def _canonical(module: nn.Module) -> list[str]:
    """State-dict keys without tied aliases (the shared embedding is stored once)."""
    return [n for n, _ in module.named_parameters()] + [
        n for n, _ in module.named_buffers() if n in module.state_dict()
    ]


def full_state(module: nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(model state, optimizer state) of a module whose weights are whole in every process (one
    process, or DDP); FSDP's sharded weights are written as shards (``save_shards``)."""
    sd = module.state_dict()
    return {k: sd[k] for k in _canonical(module)}, opt.state_dict()


def load_full_state(module: nn.Module, opt: torch.optim.Optimizer, model_state: dict, opt_state: dict) -> None:
    """Inverse of ``full_state``: every rank passes the whole state read from the checkpoint (under
    FSDP each rank keeps its shards of it: a one-process checkpoint resumed on several ranks)."""
    aliases = set(module.state_dict()) - set(_canonical(module))
    if not _is_fsdp(module):
        missing, unexpected = module.load_state_dict(model_state, strict=False)
        if set(missing) - aliases or unexpected:
            raise RunFolderError(
                f"checkpoint does not fit this model (missing {sorted(set(missing) - aliases)[:3]}, "
                f"unexpected {unexpected[:3]})"
            )
        opt.load_state_dict(opt_state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(module, model_state, options=opts)
    names = [n for n, _ in module.named_parameters()]
    by_param = {id(p): n for n, p in module.named_parameters()}
    order = [by_param[id(p)] for g in opt.param_groups for p in g["params"]]
    assert len(order) == len(names)
    fqn_state = {
        "state": {order[i]: s for i, s in opt_state["state"].items()},
        "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in opt_state["param_groups"]],
    }
    set_optimizer_state_dict(module, opt, fqn_state, options=StateDictOptions(full_state_dict=True))


def save_shards(module: nn.Module, opt: torch.optim.Optimizer, folder: Path) -> None:
    """Weights and optimizer state with ``torch.distributed.checkpoint``: under FSDP each rank
    writes its own shards into ``folder`` (a collective; nothing is gathered on one rank)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, opt_state = get_state_dict(module, opt)
    dcp.save({"model": model_state, "optim": opt_state}, storage_writer=dcp.FileSystemWriter(str(folder)))


def load_shards(module: nn.Module, opt: torch.optim.Optimizer, folder: Path) -> None:
    """Inverse of ``save_shards`` at any world size (DCP reshards: 2 ranks' shards load into 1
    process or 4), or in a single process without a process group."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, opt_state = get_state_dict(module, opt)  # the layout to read into (sharded under FSDP)
    state = {"model": model_state, "optim": opt_state}
    with warnings.catch_warnings():  # in one process DCP warns that it assumes one process: it is right
        warnings.filterwarnings("ignore", message=".*single process")
        dcp.load(state, storage_reader=dcp.FileSystemReader(str(folder)))
    set_state_dict(module, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])


def sharded(module: nn.Module) -> bool:
    """Whether ``module``'s weights are sharded over ranks (FSDP): checkpoints are then written
    as shards, by every rank."""
    return _is_fsdp(module)


def _is_fsdp(module: nn.Module) -> bool:
    return hasattr(module, "set_requires_gradient_sync")
