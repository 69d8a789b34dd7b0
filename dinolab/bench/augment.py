"""Augmentation benchmark: the multi-crop pipeline on a batch of decoded images.

The input is what the training loader hands the trainer: a padded uint8 batch ``(B, 3, H, W)`` of
images whose shorter side is the load size (twice the global crop size by default), 4:3 landscape,
random pixels. One call makes every crop of every image (2 global + N local), so images/s here is
directly comparable with the training step's images/s: augmentation runs on the training device
between steps and must be several times faster than the step not to slow training down.
"""

from __future__ import annotations

from typing import Callable

import torch


def augment_workload(multicrop: Callable, batch: int, load_size: int, device: torch.device | str,
                     seed: int = 0) -> Callable[[], object]:
    """``fn()`` running ``multicrop`` once on ``batch`` random ``load_size x 4/3·load_size`` images.

    Each call reuses a generator seeded with ``seed``: every call does the same amount of work.
    """
    device = torch.device(device)
    h, w = load_size, load_size * 4 // 3
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, h, w), dtype=torch.uint8, generator=g).to(device)
    sizes = torch.tensor([[h, w]] * batch, dtype=torch.long, device=device)
    crop_gen = torch.Generator()

    def fn():
        crop_gen.manual_seed(seed)
        return multicrop(images, sizes, crop_gen)

    return fn
