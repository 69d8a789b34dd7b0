"""Device and precision choices.

``device="auto"`` picks CUDA, then MPS, then CPU. ``precision="auto"`` picks the
fastest safe choice for that device: bf16 autocast on GPUs that support it and
on CPUs with native bf16 instructions (AVX512-BF16 or AMX, where bf16 matrix
products run several times faster than fp32), fp32 on other CPUs (an AVX2-only
CPU emulates bf16 hundreds of times slower than fp32) and elsewhere. fp16 is
available on request and is paired with a gradient scaler in training.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Iterator

import torch

from .errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``/``"cpu"``/``"cuda[:i]"``/``"mps"`` into a ``torch.device``, checking availability."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} was asked for but CUDA is not available; use device=cpu or device=auto")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device={device!r} was asked for but MPS is not available; use device=cpu or device=auto")
    return dev


def resolve_precision(precision: str, device: torch.device) -> str:
    """Return one of ``fp32``, ``bf16``, ``fp16`` for ``device``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise ConfigError("precision=fp16 is not supported on CPU; use bf16 (fast on CPU) or fp32")
        return precision
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True if the CPU advertises bf16 matrix instructions (x86 AVX512-BF16 / AMX-BF16, Arm BF16)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str) -> torch.dtype:
    return _DTYPES[precision]


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Autocast context for ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=_DTYPES[precision]):
        yield


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op CPU threads (restored after).

    For loops of many small tensor operations (a 64 px thumbnail, one pair at a time): there a
    second thread only waits at each op's barrier, and on a machine whose other cores are busy each
    barrier waits for a time slice, which made pixel verification 35-55x slower with 2 threads
    than with 1 (BENCHMARKS.md). Large matrix products keep the process-wide setting.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
