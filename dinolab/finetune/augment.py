"""Training-time augmentation of a fine-tuning batch: random resized crop and horizontal flip.

Runs batched on ``uint8`` images decoded once (:func:`dinolab.finetune.data.decode_all`), with an
explicit generator, so the crops of step ``i`` depend only on the run's seed and ``i`` (a resumed
run draws the same ones).

Examples:
    >>> x = torch.randint(0, 256, (4, 3, 20, 20), dtype=torch.uint8)
    >>> g = torch.Generator().manual_seed(0)
    >>> augment_batch(x, 16, crop=True, flip=True, generator=g, scale=(0.5, 1.0)).shape
    torch.Size([4, 3, 16, 16])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.multicrop import sample_crop_boxes

RATIO = (3 / 4, 4 / 3)


def augment_batch(pixels: torch.Tensor, size: int, *, crop: bool, flip: bool, generator: torch.Generator,
                  scale: tuple[float, float]) -> torch.Tensor:
    """``(B, 3, L, L)`` uint8 -> ``(B, 3, size, size)`` float in [0, 255]: a random crop of ``scale`` of the
    area (the run's ``(crop_scale, 1)``, :class:`~dinolab.finetune.config.FinetuneConfig`; aspect in
    3/4..4/3) resized to ``size`` (bilinear, antialiased), then a flip with probability 1/2. Without
    ``crop`` the centre ``size`` square."""
    b, _, h, w = pixels.shape
    x = pixels.float()
    if crop:
        boxes = sample_crop_boxes(torch.tensor([[h, w]] * b), scale, RATIO, generator).tolist()
        x = torch.cat([F.interpolate(x[i:i + 1, :, t:t + ch, lf:lf + cw], size=(size, size), mode="bilinear",
                                     align_corners=False, antialias=True) for i, (t, lf, ch, cw) in enumerate(boxes)])
    elif (h, w) != (size, size):
        top, left = (h - size) // 2, (w - size) // 2
        x = x[:, :, top:top + size, left:left + size]
    if flip:
        flips = torch.rand(b, generator=generator) < 0.5
        x = torch.where(flips.view(b, 1, 1, 1), x.flip(-1), x)
    return x.clamp_(0, 255)
