"""Keep freed CPU memory for reuse while training on a CPU (glibc malloc settings).

A training step allocates the same large buffers every iteration: activations, the ``B×K`` DINO
and iBOT logits (K = 65536 prototypes) and their float32 copies. glibc's malloc serves every
allocation above its mmap threshold (32 MiB at most) with fresh pages from the kernel and gives
them back on free, so each step page-faults and zeroes hundreds of MiB again: on the 2-core
development machine a third of a DINOv2 step's time went to the kernel. Serving large blocks from
malloc's heap and never trimming it keeps those pages mapped and reused, the way PyTorch's caching
allocator keeps GPU memory: the DINOv2 ViT-S/16 bf16 step ran 1.34x faster, at about 30% more peak
resident memory (BENCHMARKS.md).

The settings apply to the whole process and stay until it exits; :class:`~dinolab.train.Trainer`
applies them when it trains on a CPU and ``train.keep_freed_memory`` is true (the default).
Elsewhere than Linux with glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

# mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4

TRIM_THRESHOLD = 2**31 - 1  # bytes free at the heap top before it is returned: never, in practice
TOP_PAD = 512 * 2**20  # extra bytes asked of the kernel whenever the heap grows


@functools.cache
def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse (see the module docstring).

    Returns True when the settings were applied (Linux with glibc), False where they do not exist.
    Idempotent: the first call applies them, later calls return the same answer.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; all three must take for the pages to stay mapped
    return all(mallopt(param, value) == 1 for param, value in
               ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD)))
