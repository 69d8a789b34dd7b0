"""Config-free per-iteration schedules shared by every training loop.

:func:`cosine_schedule` is DINO v1's ``utils.cosine_scheduler`` and DINOv2's ``CosineScheduler`` in
one formula: ``freeze_iters`` zeros, then ``np.linspace(start_warmup_value, base, warmup_iters)``
(the endpoint included), then ``final + (base - final)·(1 + cos(π·i/n))/2`` for ``i = 0 .. n-1``
with ``n = total_iters - warmup_iters - freeze_iters``; from ``total_iters`` on it returns
``final`` (DINOv2; DINO v1's array simply ends there). A pure function of the iteration, so a
resumed run needs nothing but the iteration counter.

Examples:
    >>> cosine_schedule(0, 1.0, 0.0, total_iters=10, warmup_iters=2, start_warmup_value=0.5)
    0.5
    >>> cosine_schedule(10, 1.0, 0.0, total_iters=10)
    0.0
"""

from __future__ import annotations

import math


def cosine_schedule(it: int, base: float, final: float, total_iters: int, warmup_iters: int = 0,
                    start_warmup_value: float = 0.0, freeze_iters: int = 0) -> float:
    """Value at iteration ``it`` of the freeze + linear warm-up + cosine schedule (see the module doc)."""
    if it < 0:
        raise ValueError(f"iteration {it} is negative")
    if it >= total_iters:
        return float(final)
    if it < freeze_iters:
        return 0.0
    j = it - freeze_iters
    if j < warmup_iters:
        if warmup_iters == 1:  # np.linspace(a, b, 1) == [a]
            return float(start_warmup_value)
        return float(start_warmup_value + (base - start_warmup_value) * j / (warmup_iters - 1))
    i = j - warmup_iters
    n = total_iters - warmup_iters - freeze_iters
    return float(final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * i / n)))
