"""The matrix-multiply peak of a device: the FLOP/s of a large square ``A @ B`` in a given dtype.

Model FLOP utilisation (MFU) divides a workload's achieved FLOP/s by this figure. Measured in the
same run (ideally interleaved with the workload, see :func:`dinolab.bench.timing.interleaved`), it
reflects the machine as it is now (clock, load, thread count), not a datasheet.

The size is chosen per device and dtype (:func:`probe_matmul`): large enough that one product
takes a measurable time, small enough that an emulated dtype (bf16 on an AVX2-only CPU runs
hundreds of times slower than fp32) still finishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .timing import time_call

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class MatmulWorkload:
    """One ``n x n`` product in ``dtype`` and ``layout``: call ``fn()`` to run it; it does ``flops = 2 n³``.

    ``layout`` ``"nn"`` is ``A @ B``, ``"nt"`` is ``A @ Bᵀ`` with B stored row-major (the layout of
    ``nn.Linear``). Some back-ends differ a lot between them (CPU bf16 emulation: ~5x).
    """

    n: int
    dtype: str
    fn: Callable[[], torch.Tensor]
    layout: str = "nn"
    probed_rate: float | None = None

    @property
    def flops(self) -> float:
        return 2.0 * self.n ** 3


def matmul_workload(device: torch.device | str, dtype: str, n: int, layout: str = "nn",
                    seed: int = 0) -> MatmulWorkload:
    """Operands allocated once; each call writes into the same output (no allocation is timed)."""
    device = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=DTYPES[dtype])
    b = torch.randn(n, n, generator=g).to(device=device, dtype=DTYPES[dtype])
    c = torch.empty(n, n, device=device, dtype=DTYPES[dtype])
    if layout == "nn":
        return MatmulWorkload(n, dtype, lambda: torch.matmul(a, b, out=c), layout)
    if layout == "nt":
        return MatmulWorkload(n, dtype, lambda: torch.matmul(a, b.t(), out=c), layout)
    raise ValueError(f"layout must be 'nn' or 'nt', got {layout!r}")


def probe_matmul(device: torch.device | str, dtype: str, *, target_seconds: float = 0.1,
                 min_n: int = 256, max_n: int | None = None) -> MatmulWorkload:
    """Pick a product size and layout for measuring the peak; the returned workload has ``probed_rate``.

    ``n`` is the smallest power of two >= ``min_n`` whose product takes ``target_seconds`` (capped at
    ``max_n``: 2048 on CPU, past which the rate no longer grows, 8192 on GPUs); the layout is the
    faster of ``nn`` and ``nt`` at that size. ``probed_rate`` (FLOP/s of one call) is a rough figure
    for planning, e.g. to predict how long an emulated-bf16 workload would take; measure the peak
    itself with :func:`dinolab.bench.timing.interleaved`.
    """
    device = torch.device(device)
    max_n = max_n or (2048 if device.type == "cpu" else 8192)
    n = min_n
    while True:
        w = matmul_workload(device, dtype, n, "nt")
        w.fn()  # warm-up: kernel choice, page faults
        seconds = time_call(w.fn, device)
        if seconds >= target_seconds or n >= max_n:
            break
        n *= 2
    other = matmul_workload(device, dtype, n, "nn")
    other.fn()
    other_seconds = time_call(other.fn, device)
    if other_seconds < seconds:
        w, seconds = other, other_seconds
    w.probed_rate = w.flops / max(seconds, 1e-9)
    return w


def peak_result(workload: MatmulWorkload, measurement) -> dict:
    """JSON-able summary of a timed :class:`MatmulWorkload`: FLOP/s from the best and the median call,
    and FLOPs per second of process CPU time (median call)."""
    cpu = measurement.cpu_median
    return {"dtype": workload.dtype, "n": workload.n, "layout": workload.layout, "seconds": measurement.seconds,
            "flops_per_s": workload.flops / measurement.best,
            "flops_per_s_median": workload.flops / measurement.median,
            "flops_per_cpu_s": workload.flops / cpu if cpu else None}
