"""Prediction with a fitted :class:`~dinolab.segment.head.Segmenter`: sliding windows, logits at full resolution.

An image is resized with its aspect kept (shorter side about the head's image size, both sides whole
patches, see :func:`dinolab.eval.viz.prepare_image`) and cut into windows of the training crop
(``image_size`` square) with a stride of two thirds of it, the last window flush with the border (as
mmsegmentation's ``slide`` inference). Each window's logits are upsampled bilinearly to its pixels; the
overlaps are averaged; the result is resized bilinearly to the original image and the class is the argmax.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .head import Segmenter


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Start offsets of windows of ``crop`` pixels covering ``length``, ``stride`` apart, the last at the end.

    Examples:
        >>> window_starts(100, 48, 32), window_starts(40, 48, 32)
        ([0, 32, 52], [0])
    """
    if length <= crop:
        return [0]
    starts = list(range(0, length - crop, stride))
    return starts + [length - crop]


def crop_size(seg: Segmenter) -> int:
    p = seg.backbone.patch_size
    return max(p, seg.image_size // p * p)


@torch.no_grad()
def predict_logits(seg: Segmenter, image: torch.Tensor, *, batch_size: int = 8, device: str | torch.device = "cpu",
                   precision: str = "fp32") -> torch.Tensor:
    """Class logits of a ``uint8 3×H×W`` image as float32 ``K×H×W`` (CPU), by sliding windows (module docstring)."""
    from ..device import autocast
    from ..eval.viz import prepare_image

    dev = torch.device(device)
    p = seg.backbone.patch_size
    _, x = prepare_image(image, p, seg.image_size, seg.preprocess)
    big_h, big_w = x.shape[-2:]
    crop = crop_size(seg)
    stride = max(p, (2 * crop // 3) // p * p)
    win_h, win_w = min(big_h, crop), min(big_w, crop)
    boxes = [(t, s) for t in window_starts(big_h, crop, stride) for s in window_starts(big_w, crop, stride)]
    acc = torch.zeros(len(seg.classes), big_h, big_w)
    count = torch.zeros(1, big_h, big_w)
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i:i + batch_size]
        batch = torch.stack([x[:, t:t + win_h, s:s + win_w] for t, s in chunk]).to(dev)
        with autocast(dev, precision):
            logits = seg.logits(batch)
        up = F.interpolate(logits.float(), size=(win_h, win_w), mode="bilinear", align_corners=False).cpu()
        for (t, s), window in zip(chunk, up):
            acc[:, t:t + win_h, s:s + win_w] += window
            count[:, t:t + win_h, s:s + win_w] += 1
    acc /= count
    return F.interpolate(acc[None], size=tuple(image.shape[-2:]), mode="bilinear", align_corners=False)[0]


def predict_mask(seg: Segmenter, image: torch.Tensor, **kwargs) -> np.ndarray:
    """``H×W`` int64 class indices of a ``uint8 3×H×W`` image (see :func:`predict_logits` for ``kwargs``)."""
    return predict_logits(seg, image, **kwargs).argmax(0).numpy().astype(np.int64)
