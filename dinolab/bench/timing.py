"""Interleaved timing: several workloads measured in alternating order, so load hits all alike.

On a shared machine a slow minute costs whichever workload happens to run then. Running the
workloads in rounds (A B C, then C B A, then A B C, ...) and comparing the best (or median) call
of each side makes ratios far steadier than timing A fully and then B.

Every call is bracketed by a device synchronisation (CUDA/MPS kernels run asynchronously), so a
time is that of the finished work.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import torch

from .memory import PeakMemory


def synchronize(device: torch.device | str) -> None:
    """Wait for queued kernels on ``device`` (no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass
class Measurement:
    """Timed calls of one workload.

    Attributes:
        name: the workload's key.
        seconds: wall time of each timed call, in run order.
        cpu_seconds: CPU time of this process (all threads) during each timed call; on a shared
            CPU it is steadier than wall time (time spent waiting for a core does not count).
        peak_bytes: largest peak memory of a timed call above the level before it (None if not measured).
        memory_method: how memory was measured (see :class:`~dinolab.bench.memory.PeakMemory`).
    """

    name: str
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    peak_bytes: int | None = None
    memory_method: str | None = None

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu_seconds) if self.cpu_seconds else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "best": self.best, "median": self.median}

    def throughput(self, items: float, unit: str = "images") -> dict[str, Any]:
        """Seconds per call and ``items`` per second (best and median call), plus peak memory; JSON-able."""
        cpu = self.cpu_median
        return {"seconds": self.seconds, "best_s": self.best, "median_s": self.median,
                f"{unit}_per_s": items / self.best, f"{unit}_per_s_median": items / self.median,
                "cpu_seconds": self.cpu_seconds, "cpu_median_s": cpu,
                f"{unit}_per_cpu_s": items / cpu if cpu else None,
                "peak_bytes": self.peak_bytes, "memory_method": self.memory_method}


def time_call(fn: Callable[[], Any], device: torch.device | str = "cpu") -> float:
    """Seconds one call of ``fn`` takes, device work included."""
    return _timed(fn, device)[0]


def _timed(fn: Callable[[], Any], device: torch.device | str) -> tuple[float, float]:
    """``(wall seconds, process CPU seconds)`` of one call of ``fn``."""
    synchronize(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    synchronize(device)
    return time.perf_counter() - t0, time.process_time() - c0


def interleaved(workloads: Mapping[str, Callable[[], Any]], *, repeats: int = 5, warmup: int = 1,
                device: torch.device | str = "cpu", memory: bool = False,
                max_seconds: float | None = None) -> dict[str, Measurement]:
    """Time every workload ``repeats`` times, alternating their order each round.

    Args:
        workloads: name -> zero-argument callable doing one unit of work (e.g. one batch).
        repeats: timed calls per workload.
        warmup: untimed calls per workload first (allocation, kernel selection, lazy init).
        device: the device the workloads run on (for synchronisation and memory).
        memory: also record each workload's peak memory, in one more (untimed) call per workload after
            the timed rounds (:class:`PeakMemory` returns freed memory to the system first, which
            must not slow the timed calls).
        max_seconds: stop after the first complete round that ends past this many seconds of
            timing (at least one timed call per workload is always made).

    Returns:
        name -> :class:`Measurement`, in the order of ``workloads``.

    Examples:
        >>> m = interleaved({"a": lambda: sum(range(1000)), "b": lambda: sum(range(2000))}, repeats=3)
        >>> [len(m[k].seconds) for k in ("a", "b")]
        [3, 3]
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    names = list(workloads)
    for _ in range(warmup):
        for name in names:
            workloads[name]()
    synchronize(device)
    out = {name: Measurement(name) for name in names}
    start = time.perf_counter()
    for r in range(repeats):
        for name in (names if r % 2 == 0 else reversed(names)):
            wall, cpu = _timed(workloads[name], device)
            out[name].seconds.append(wall)
            out[name].cpu_seconds.append(cpu)
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    if memory:
        for name in names:
            with PeakMemory(device) as mem:
                workloads[name]()
                synchronize(device)
            out[name].peak_bytes, out[name].memory_method = mem.peak_bytes, mem.method
    return out
