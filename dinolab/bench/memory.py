"""Peak memory of a piece of work, on CPU (resident set size) or CUDA (allocated tensors).

- CUDA: ``torch.cuda.reset_peak_memory_stats`` then ``max_memory_allocated`` (tensor bytes, exact).
- CPU on Linux: freed heap memory is first handed back to the system (``malloc_trim``; otherwise
  the C allocator keeps it and a step that reuses it shows no growth at all), then the kernel's
  resident-set high-water mark (``VmHWM``) is reset to the current RSS by writing ``5`` to
  ``/proc/self/clear_refs``; the peak is ``VmHWM`` after the work minus the RSS before it. It counts
  everything the work touched (allocator slack, thread stacks), as ``top`` would.
- Elsewhere: the difference of ``resource.getrusage(...).ru_maxrss`` before and after. That
  high-water mark cannot be reset, so work that stays below an earlier peak reads as 0; the
  result says which method was used.

``tracemalloc`` does not see torch's allocations, hence none of it here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import resource
import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_hwm() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def release_free_memory() -> None:
    """Collect garbage and return the C heap's free pages to the system (glibc only; else a no-op)."""
    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def _maxrss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) if sys.platform == "darwin" else int(r) * 1024  # bytes on macOS, KiB on Linux


class PeakMemory:
    """Context manager measuring the peak memory of its body above the level at entry.

    Attributes (after exit): ``peak_bytes`` (int), ``method`` (``"cuda_allocated"``, ``"rss_hwm"``
    or ``"maxrss_delta"``).

    Examples:
        >>> with PeakMemory(torch.device("cpu")) as mem:
        ...     x = torch.ones(1 << 22)  # 16 MiB
        >>> mem.peak_bytes >= 0, mem.method in ("rss_hwm", "maxrss_delta")
        (True, True)
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.peak_bytes = 0
        self.method = ""
        self._base = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method, self._base = "cuda_allocated", torch.cuda.memory_allocated(self.device)
        else:
            release_free_memory()
            if _reset_hwm():
                self.method, self._base = "rss_hwm", (_status_kib("VmRSS") or 0) * 1024
            else:
                self.method, self._base = "maxrss_delta", _maxrss_bytes()
        return self

    def __exit__(self, *exc) -> None:
        if self.method == "cuda_allocated":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method == "rss_hwm":
            peak = (_status_kib("VmHWM") or 0) * 1024
        else:
            peak = _maxrss_bytes()
        self.peak_bytes = max(0, int(peak - self._base))
