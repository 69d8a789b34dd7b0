"""Training crops for the linear head: random rescale, random crop, horizontal flip, applied to image and mask alike.

mmsegmentation's pipeline as DINOv2's linear protocol uses it: rescale by a random ratio in
``[scale_min, scale_max]`` of the base size (the image's shorter side to ``crop``), cut a random
``crop × crop`` window (an image smaller than that is padded, the mask with 255 = ignore), flip with
probability 0.5. Images are resized bicubically, masks by nearest neighbour.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .masks import IGNORE


def resize_pair(image: torch.Tensor, mask: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``uint8 3×H×W`` and ``int64 H×W`` resized to ``size`` (bicubic / nearest)."""
    from ..eval.viz import resize_image

    m = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return resize_image(image, size), m


def random_crop_pair(image: torch.Tensor, mask: np.ndarray, crop: int, scale: tuple[float, float], flip: bool,
                     rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented ``(uint8 3×crop×crop, int64 crop×crop)`` pair (see the module docstring)."""
    h, w = image.shape[-2:]
    ratio = rng.uniform(*scale) * crop / min(h, w)
    size = (max(1, round(h * ratio)), max(1, round(w * ratio)))
    img, m = resize_pair(image, torch.as_tensor(mask), size)
    pad_h, pad_w = max(0, crop - size[0]), max(0, crop - size[1])
    if pad_h or pad_w:
        img = F.pad(img, (0, pad_w, 0, pad_h), value=0)
        m = F.pad(m, (0, pad_w, 0, pad_h), value=IGNORE)
    top = int(rng.integers(0, img.shape[1] - crop + 1))
    left = int(rng.integers(0, img.shape[2] - crop + 1))
    img, m = img[:, top:top + crop, left:left + crop], m[top:top + crop, left:left + crop]
    if flip and rng.random() < 0.5:
        img, m = img.flip(-1), m.flip(-1)
    return img.contiguous(), m.contiguous()
