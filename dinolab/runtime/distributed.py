"""Multi-process training under ``torchrun``: the process group, the wrapped student, the collectives.

``torchrun --nproc_per_node N -m dinolab train ...`` starts N copies of the command with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. :func:`init_from_env` joins
that group (NCCL when training on CUDA, gloo on the CPU) and :func:`train_device` gives each process
its GPU, ``cuda:LOCAL_RANK``. One process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) needs none of it.

How a step matches one process with the same global batch (``train.batch_size``):

- each rank holds ``batch_size / (world · accumulate)`` images per micro-batch; its loss is the
  mean over its images, and DDP (or FSDP) averages the gradients over ranks, which is the mean over
  the global batch; the DINO/iBOT centers and Sinkhorn-Knopp sums are all-reduced by the losses;
- gradients are reduced once per step (``no_sync`` on every micro-batch but the last), then
  clipped, so clipping sees the same gradients as one process;
- the crops and iBOT masks of an image are drawn from one stream per iteration keyed on the image's
  position in the global batch (see :class:`~dinolab.data.multicrop.MultiCrop`'s ``positions``), so
  they do not depend on the number of processes or micro-batches. Randomness inside the model
  (stochastic depth, RoPE jitter) stays per rank, seeded from ``(seed, iteration, rank)``, as in
  the official code: same distribution, not the same draws.
- per-rank terms stay per rank, as in DINOv2: KoLeo's nearest neighbours are searched within each
  rank's images, and BatchNorm in a head normalises per rank on the CPU (SyncBatchNorm on CUDA).

Examples:
    >>> init_from_env()          # a single process: nothing to join
    False
    >>> world()
    (1, 0)
"""

from __future__ import annotations

import contextlib
import datetime
import os
import resource
import sys
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

from ..device import resolve_device
from ..errors import ConfigError, DinolabError

TIMEOUT = datetime.timedelta(minutes=60)  # rank 0 alone runs k-NN and exports while the others wait
STRATEGIES = ("ddp", "fsdp")


def world() -> tuple[int, int]:
    """``(world_size, rank)`` of the initialised process group, ``(1, 0)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when unset)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise DinolabError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer; launch with torchrun, "
                           f"which sets it") from None


def train_device(device: str | torch.device = "auto") -> torch.device:
    """:func:`~dinolab.device.resolve_device`, with ``cuda`` (no index) becoming ``cuda:LOCAL_RANK`` under torchrun."""
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None and "LOCAL_RANK" in os.environ:
        local = int(os.environ["LOCAL_RANK"])
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={local} but this machine has {torch.cuda.device_count()} GPU(s); start at "
                              f"most that many processes per node (torchrun --nproc_per_node)")
        dev = torch.device("cuda", local)
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)
    return dev


def init_from_env(device: str | torch.device = "auto", timeout: datetime.timedelta = TIMEOUT) -> bool:
    """Join the process group torchrun describes; True if this call created it.

    Nothing happens with ``WORLD_SIZE`` unset or 1, or when a group already exists (the caller's).
    """
    if env_world_size() <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise DinolabError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} is set but {', '.join(missing)} is not; start "
                           f"multi-process training with torchrun (torchrun --nproc_per_node N -m dinolab train ...)")
    dev = train_device(device)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method="env://", timeout=timeout)
    return True


def destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world()[0] > 1:
        dist.barrier()


def from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (e.g. a run directory named after rank 0's clock)."""
    if world()[0] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA ``max_memory_allocated``, else the resident set's high-water mark."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


class StudentStep(nn.Module):
    """The student and the objectives' forward as one module, the unit DDP/FSDP wrap.

    DDP reduces the gradients of the parameters a *wrapper's* forward used, so the whole loss
    (student backbone, heads, every objective) runs inside :meth:`forward`. The objectives and the
    teacher are held outside the module tree: they are neither synchronised nor sharded with the
    student.

    Shapes: ``forward(inputs, generator)`` -> ``(loss scalar, {name: 0-d statistic})``.
    """

    def __init__(self, student: nn.ModuleDict, objectives: nn.Module, teacher: nn.Module) -> None:
        super().__init__()
        self.student = student
        self._outside = (objectives, teacher)

    def forward(self, inputs: Any, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        objectives, teacher = self._outside
        return objectives(self.student, teacher, inputs, generator)


class Parallel:
    """How the student is spread over the processes: nothing (one process), ``ddp`` or ``fsdp``.

    Args:
        strategy: ``"ddp"`` (replicated student, averaged gradients) or ``"fsdp"`` (FSDP2
            ``fully_shard`` of every block, the backbones and the heads; see :mod:`.fsdp`).
        device: this rank's training device.
    """

    def __init__(self, strategy: str, device: torch.device) -> None:
        if strategy not in STRATEGIES:
            raise ConfigError(f"train.distributed={strategy!r} is not one of {', '.join(STRATEGIES)}")
        self.world_size, self.rank = world()
        self.strategy = strategy if self.world_size > 1 else "none"
        self.device = device
        self.module: nn.Module | None = None

    @property
    def sharded(self) -> bool:
        return self.strategy == "fsdp"

    def wrap(self, student: nn.ModuleDict, objectives: nn.Module, teacher: nn.ModuleDict) -> nn.Module:
        """The module whose forward computes the loss (call it instead of ``objectives(student, ...)``).

        FSDP shards ``student`` and ``teacher`` in place (their parameters become DTensors), so build
        the optimizer and the EMA after this call.
        """
        step = StudentStep(student, objectives, teacher)
        if self.strategy == "ddp":
            if self.device.type == "cuda" and _has_batchnorm(student):
                step = nn.SyncBatchNorm.convert_sync_batchnorm(step)
                teacher_heads = {k: nn.SyncBatchNorm.convert_sync_batchnorm(m) for k, m in teacher.items()
                                 if k != "backbone"}
                teacher.update(teacher_heads)
            # find_unused_parameters: the iBOT mask token is unused without masks, heads can sit out a step
            self.module = nn.parallel.DistributedDataParallel(step, find_unused_parameters=True)
        elif self.strategy == "fsdp":
            from .fsdp import shard_models

            self.module = shard_models(step, teacher, self.device)
        else:
            self.module = step
        return self.module

    def sync(self, enabled: bool) -> contextlib.AbstractContextManager:
        """Gradient reduction on (the last micro-batch of a step) or off (the others)."""
        if enabled or self.strategy == "none":
            return contextlib.nullcontext()
        if self.strategy == "ddp":
            return self.module.no_sync()
        return _fsdp_no_sync(self.module)

    # ------------------------------------------------------------------ collectives for bookkeeping

    def plan(self, micro_batches: list[dict[str, Any]]) -> tuple[list[int], list[tuple[str, str]]]:
        """The micro-batches every rank runs (those no rank found empty) and the unreadable files of
        every rank: all ranks must run the same forwards and judge the same bad-file count."""
        empty = [len(b["indices"]) == 0 for b in micro_batches]
        bad = [item for b in micro_batches for item in b["bad"]]
        if self.world_size > 1:
            flags = torch.tensor(empty + [len(bad) > 0], dtype=torch.float32, device=self._comm_device)
            dist.all_reduce(flags)
            flags = flags.tolist()
            empty = [f > 0 for f in flags[:-1]]
            if flags[-1] > 0:
                gathered: list[Any] = [None] * self.world_size
                dist.all_gather_object(gathered, bad)
                bad = [tuple(item) for part in gathered for item in part]
        return [m for m, e in enumerate(empty) if not e], bad

    def mean(self, values: dict[str, float], sums: tuple[str, ...] = ()) -> dict[str, float]:
        """Average ``values`` over ranks (the keys in ``sums`` are added instead); one all-reduce."""
        if self.world_size == 1 or not values:
            return dict(values)
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t)
        return {k: v if k in sums else v / self.world_size for k, v in zip(keys, t.tolist())}

    def per_rank(self, value: float) -> list[float]:
        """``value`` of every rank, in rank order."""
        if self.world_size == 1:
            return [value]
        t = torch.zeros(self.world_size, dtype=torch.float64, device=self._comm_device)
        t[self.rank] = value
        dist.all_reduce(t)
        return t.tolist()

    def any_rank(self, flag: int) -> int:
        """The largest ``flag`` over ranks (e.g. a stop request seen by one of them)."""
        return int(max(self.per_rank(float(flag))))

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")


def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


@contextlib.contextmanager
def _fsdp_no_sync(module: nn.Module) -> Iterator[None]:
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def restore_checkpoint(parallel: Parallel, run_dir: Any, state: dict[str, Any], student: nn.Module,
                       teacher: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """A checkpoint's model and optimizer entries in the form this run loads them: full tensors (one
    process, DDP), or this rank's shards as DTensors (FSDP), whichever way the checkpoint was written."""
    from .fsdp import load_shards, shard_like_module, shard_like_optimizer

    state = load_shards(run_dir, state, parallel.rank, parallel.world_size if parallel.sharded else None)
    if parallel.sharded:
        state = dict(state, student=shard_like_module(state["student"], student),
                     teacher=shard_like_module(state["teacher"], teacher),
                     optimizer=shard_like_optimizer(state["optimizer"], optimizer))
    return state
