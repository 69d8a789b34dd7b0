"""FSDP2 training (``train.distributed=fsdp``): sharded models, sharded checkpoints, consolidation.

:func:`shard_models` applies ``torch.distributed.fsdp.fully_shard`` to every transformer block, each
backbone and each head of the student and of the EMA teacher, then to the student's step module (the
root). Every rank keeps dimension-0 chunks of each parameter (``torch.chunk`` over ranks) and of its
AdamW state, so model and optimizer memory shrink with the number of ranks; the EMA update runs on
the matching shards. Gradients are reduce-scattered (averaged over ranks, like DDP).

Checkpoints: each rank writes its own shard of the student, teacher and optimizer to
``RUN_DIR/shards/step<N>/rank<r>-of-<W>.pt`` (plain tensors, read with ``weights_only=True``);
after every rank finished, rank 0 writes the usual ``checkpoint.pt`` without those entries but with
an index of the shard set, so ``checkpoint.pt`` only ever names a complete set. Resuming with the
same number of ranks reads one file per rank; with another number of ranks (or with DDP / one
process) the shards are merged to full tensors and re-cut. :func:`consolidate` turns a run into a
single backbone (``dinolab convert RUN_DIR out`` writes it as ``dinolab.save_model`` does).

Not combined with ``distill.teacher``, Gram anchoring or fp16 (use bf16), which the config refuses.

Examples:
    >>> consolidate("runs/big").embed_dim     # doctest: +SKIP
    1024
"""

from __future__ import annotations

import math
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import nn

from ..errors import DinolabError
from ..io import atomic_write
from ..models import VisionTransformer
from .checkpoint import load_checkpoint

SHARD_DIR = "shards"
SHARDED_KEYS = ("student", "teacher", "optimizer")


def _dtensor_type() -> type:
    from torch.distributed.tensor import DTensor

    return DTensor


def shard_models(step: nn.Module, teacher: nn.ModuleDict, device: torch.device) -> nn.Module:
    """Shard ``step.student`` and ``teacher`` in place (blocks, backbone, heads; the step module as root)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    # forward_features returns slices of the token tensor (cls = tokens[:, 0]); FSDP2 warns about views
    # because an in-place op on them would skip its hooks, and no objective modifies them in place
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for models in (step.student, teacher):
        backbone = models["backbone"]
        for block in backbone.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(backbone, mesh=mesh)
        register_fsdp_forward_method(backbone, "forward_features")  # the objectives call it, not forward
        for name, head in models.items():
            if name != "backbone":
                fully_shard(head, mesh=mesh)
    fully_shard(step, mesh=mesh)
    return step


# ------------------------------------------------------------------------------------------------
# full tensors from shards and back


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every entry of ``module.state_dict()`` as a full CPU tensor (a collective: call on every rank)."""
    dtensor = _dtensor_type()
    return {k: (v.full_tensor() if isinstance(v, dtensor) else v).detach().cpu()
            for k, v in module.state_dict().items()}


def gathered_backbone(backbone: nn.Module, device: torch.device) -> VisionTransformer | None:
    """A plain copy of a sharded backbone on rank 0 (None on the others); every rank must call it."""
    state = full_state_dict(backbone)
    if dist.get_rank() != 0:
        return None
    model = VisionTransformer(**backbone.config)
    model.load_state_dict(state)
    return model.to(device).eval()


def _chunk_rows(n: int, world: int, rank: int) -> tuple[int, int]:
    """``(start, length)`` of rank ``rank``'s rows under ``torch.chunk(n rows, world)`` (FSDP2's split)."""
    size = math.ceil(n / world) if n else 0
    start = min(rank * size, n)
    return start, max(0, min(n, start + size) - start)


def as_dtensor(value: torch.Tensor, like: Any) -> Any:
    """``value`` (this rank's shard, or the full tensor) as a DTensor sharded like the DTensor ``like``."""
    from torch.distributed.tensor import DTensor

    local_shape = like.to_local().shape
    if value.shape == like.shape:  # full: cut this rank's rows
        start, length = _chunk_rows(value.shape[0], like.device_mesh.size(), like.device_mesh.get_local_rank())
        value = value.narrow(0, start, length)
    if value.shape != local_shape:
        raise DinolabError(f"a checkpoint tensor of shape {tuple(value.shape)} fits neither the full shape "
                           f"{tuple(like.shape)} nor this rank's shard {tuple(local_shape)}; resume with the run's "
                           f"own config.yaml")
    local = value.to(device=like.device, dtype=like.dtype).contiguous()
    return DTensor.from_local(local, like.device_mesh, like.placements, shape=like.shape, stride=like.stride())


def shard_like_module(state: dict[str, torch.Tensor], module: nn.Module) -> dict[str, Any]:
    """``state`` with every entry that is sharded in ``module`` turned into a matching DTensor."""
    dtensor = _dtensor_type()
    target = module.state_dict()
    return {k: as_dtensor(v, target[k]) if isinstance(target.get(k), dtensor) else v for k, v in state.items()}


def shard_like_optimizer(state: dict[str, Any], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """An optimizer state dict with each parameter's tensors (dim >= 1) sharded like the parameter."""
    dtensor = _dtensor_type()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    out = {"param_groups": state["param_groups"], "state": {}}
    for i, st in state["state"].items():
        p = params[int(i)]
        out["state"][i] = {k: as_dtensor(v, p) if isinstance(p, dtensor) and torch.is_tensor(v) and v.dim() > 0
                           else v for k, v in st.items()}
    return out


# ------------------------------------------------------------------------------------------------
# sharded checkpoints


def shard_path(run_dir: str | os.PathLike, step: int, rank: int, world_size: int) -> Path:
    return Path(run_dir) / SHARD_DIR / f"step{step:09d}" / f"rank{rank:05d}-of-{world_size:05d}.pt"


def _localize(obj: Any, path: tuple, sharded: list[tuple]) -> Any:
    """Plain containers with each DTensor replaced by a copy of its local shard (its path noted)."""
    dtensor = _dtensor_type()
    if isinstance(obj, dtensor):
        sharded.append(path)
        return obj.to_local().detach().clone().cpu()
    if isinstance(obj, dict):
        return {k: _localize(v, path + (k,), sharded) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_localize(v, path + (i,), sharded) for i, v in enumerate(obj))
    return obj.detach().cpu() if torch.is_tensor(obj) else obj


def save_shard(run_dir: str | os.PathLike, iteration: int, state: dict[str, Any],
               backbone_config: dict[str, Any]) -> dict[str, Any]:
    """Write this rank's shard of ``state``'s model and optimizer entries; returns the rest of
    ``state`` with the index rank 0 puts in ``checkpoint.pt`` (write that only after every rank returned)."""
    world, rank = dist.get_world_size(), dist.get_rank()
    sharded: list[tuple] = []
    part = _localize({k: state[k] for k in SHARDED_KEYS if state.get(k) is not None}, (), sharded)
    with atomic_write(shard_path(run_dir, iteration, rank, world), "wb") as f:
        torch.save({"state": part, "sharded": sharded}, f)
    rest = {k: v for k, v in state.items() if k not in part}
    rest["sharded"] = {"world_size": world, "step": iteration, "keys": sorted(part), "backbone": backbone_config}
    return rest


def prune_shards(run_dir: str | os.PathLike, keep: Iterable[int]) -> None:
    """Remove the shard sets of every step but ``keep`` (those ``checkpoint.pt`` and its previous copy name)."""
    keep_names = {f"step{s:09d}" for s in keep}
    root = Path(run_dir) / SHARD_DIR
    for d in root.iterdir() if root.is_dir() else ():
        if d.is_dir() and d.name.startswith("step") and d.name not in keep_names:
            shutil.rmtree(d, ignore_errors=True)


def _get(obj: Any, path: tuple) -> Any:
    for k in path:
        obj = obj[k]
    return obj


def _set(obj: Any, path: tuple, value: Any) -> None:
    for k in path[:-1]:
        obj = obj[k]
    obj[path[-1]] = value


def _read_shard(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DinolabError(f"{path} is missing: checkpoint.pt names a sharded checkpoint whose shard files are "
                           f"gone; restore them, or resume from an earlier copy of the run")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_shards(run_dir: str | os.PathLike, state: dict[str, Any], rank: int | None = None,
                world_size: int | None = None) -> dict[str, Any]:
    """``state`` (a ``checkpoint.pt`` with a shard index) completed with its model and optimizer entries.

    With ``rank``/``world_size`` equal to the writing run's, only this rank's shard is read (its
    tensors are local shards); otherwise every shard is read and merged into full tensors.
    """
    info = state.get("sharded")
    if not info:
        return state
    step, written_by = int(info["step"]), int(info["world_size"])
    if rank is not None and world_size == written_by:
        parts = [_read_shard(shard_path(run_dir, step, rank, written_by))]
    else:
        parts = [_read_shard(shard_path(run_dir, step, r, written_by)) for r in range(written_by)]
    merged = parts[0]["state"]
    if len(parts) > 1:
        for path in parts[0]["sharded"]:
            _set(merged, tuple(path), torch.cat([_get(p["state"], tuple(path)) for p in parts], dim=0))
    return {**{k: v for k, v in state.items() if k != "sharded"}, **merged}


def is_sharded_run(path: str | os.PathLike) -> bool:
    """True for a run directory whose checkpoint is sharded (an FSDP run)."""
    p = Path(path)
    return p.is_dir() and (p / "checkpoint.pt").is_file() and (p / SHARD_DIR).is_dir()


def consolidate(run_dir: str | os.PathLike, key: str = "teacher") -> VisionTransformer:
    """The full ``key`` backbone (``teacher`` or ``student``) of a sharded run's last checkpoint.

    Needs no process group and no GPU: the shards are read on the CPU and concatenated.
    """
    main = load_checkpoint(run_dir)
    if "sharded" not in main:
        raise DinolabError(f"the checkpoint in {run_dir} is not sharded (not an FSDP run); dinolab.load_model "
                           f"reads {Path(run_dir) / 'teacher_backbone.safetensors'} directly")
    if key not in main["sharded"]["keys"]:
        raise DinolabError(f"{run_dir}'s checkpoint has no {key!r} entry; choose one of "
                           f"{', '.join(k for k in main['sharded']['keys'] if k != 'optimizer')}")
    arch = main["sharded"]["backbone"]
    state = load_shards(run_dir, main)
    backbone = {k[len("backbone."):]: v for k, v in state[key].items() if k.startswith("backbone.")}
    model = VisionTransformer(**{**arch, "drop_path_rate": 0.0})
    model.load_state_dict(backbone)
    return model.eval()


__all__ = ["SHARD_DIR", "shard_models", "gathered_backbone", "full_state_dict", "shard_like_module",
           "shard_like_optimizer", "save_shard", "load_shards", "prune_shards", "consolidate", "is_sharded_run"]
