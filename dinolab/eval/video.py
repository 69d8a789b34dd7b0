"""One video through label propagation: frames in, one object-index mask per frame out (``dinolab propagate``).

:func:`segment_video` reads the frames once, in order, embeds them ``batch_size`` at a time and propagates
the first frame's mask with :class:`~dinolab.eval.propagation.LabelPropagation`. Unreadable frames of a
folder are skipped (named in the result, no mask written, the next frame propagates from the ones before);
an unreadable first frame is an error, as the given mask belongs to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch

from ..data.decode import UnreadableImage
from ..errors import DataError
from .propagation import LabelPropagation, PropagationSettings, first_frame_labels, frame_features, hard_mask

DEFAULT_SHORT_SIDE = 480  # DINO v1 evaluates DAVIS at 480 px; smaller frames are not enlarged


@dataclass
class VideoResult:
    """What :func:`segment_video` did: frames segmented (the first included), skipped ``(name, reason)``,
    the object indices of the first mask (0 first), the working size ``(H, W)`` and the patch grid."""

    names: list[str] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)
    object_ids: list[int] = field(default_factory=list)
    work_size: tuple[int, int] = (0, 0)
    grid: tuple[int, int] = (0, 0)
    unseen: list[int] = field(default_factory=list)  # objects on no patch centre: they cannot be propagated


def working_size(height: int, width: int, patch_size: int, image_size: int | None) -> tuple[int, int]:
    """Frame size fed to the model: shorter side about ``image_size`` (default: the frame's own, at most
    480 px), both sides multiples of the patch size."""
    from .viz import grid_size

    size = image_size or min(DEFAULT_SHORT_SIDE, height, width)
    return grid_size(height, width, patch_size, size)


def fit_mask(mask: np.ndarray, size: tuple[int, int], name: str) -> np.ndarray:
    """``mask`` at the first frame's ``size``: resized (nearest) if only the resolution differs."""
    if mask.shape == tuple(size):
        return mask
    if abs(mask.shape[0] / mask.shape[1] - size[0] / size[1]) > 0.01 * size[0] / size[1]:
        raise DataError(f"the mask {name} is {mask.shape[1]}x{mask.shape[0]} px, the first frame "
                        f"{size[1]}x{size[0]}: give the first frame's mask (same aspect ratio)")
    from PIL import Image

    return np.asarray(Image.fromarray(mask).resize((size[1], size[0]), Image.NEAREST))


def segment_video(model: torch.nn.Module, frames: Iterable[tuple[str, torch.Tensor | UnreadableImage]],
                  first_mask: np.ndarray, preprocess, *, image_size: int | None = None,
                  device: torch.device = torch.device("cpu"), precision: str = "fp32", batch_size: int = 8,
                  settings: PropagationSettings = PropagationSettings(), mask_name: str = "the mask",
                  on_frame: Callable[[str, torch.Tensor, np.ndarray], None] | None = None,
                  on_start: Callable[[VideoResult], None] | None = None) -> VideoResult:
    """Segment every frame; ``on_frame(name, uint8 3×H×W frame, uint8 H×W mask)`` is called in order, and
    ``on_start(result)`` once the working size, the patch grid and the objects are known.

    ``first_mask`` (``uint8 H×W`` object indices, 0 background) is the first frame's, given back as its mask.
    ``preprocess`` (a :class:`~dinolab.models.Preprocess`) normalises; ``image_size`` sets the short side.
    """
    res = VideoResult()
    frames = iter(frames)
    name, first = next(frames, (None, None))
    if first is None:
        raise DataError("no frames to segment")
    if isinstance(first, UnreadableImage):
        raise DataError(f"the first frame {first.path} cannot be read ({first.reason}); {mask_name} belongs to it")
    out_size = tuple(first.shape[1:])
    first_mask = fit_mask(first_mask, out_size, mask_name)
    res.work_size = working_size(*out_size, model.patch_size, image_size)
    res.object_ids = sorted({0, *np.unique(first_mask).tolist()})
    feats = frame_features(model, _prepare([first], res.work_size, preprocess), device, precision)[0]
    res.grid = tuple(feats.shape[:2])
    labels = first_frame_labels(first_mask, res.grid, res.object_ids)
    res.unseen = [k for k, n in zip(res.object_ids, labels.sum(dim=(1, 2)).tolist()) if k and n == 0]
    prop = LabelPropagation(feats, labels, settings)
    if on_start is not None:
        on_start(res)
    _emit(res, on_frame, name, first, first_mask)
    pending: list[tuple[str, torch.Tensor]] = []
    for name, frame in frames:
        if isinstance(frame, UnreadableImage):
            res.bad.append((frame.path, frame.reason))
            continue
        pending.append((name, frame))
        if len(pending) == batch_size:
            _propagate(model, prop, pending, res, preprocess, device, precision, on_frame)
            pending = []
    if pending:
        _propagate(model, prop, pending, res, preprocess, device, precision, on_frame)
    return res


def _prepare(frames: list[torch.Tensor], size: tuple[int, int], preprocess) -> torch.Tensor:
    from .viz import resize_image

    return torch.stack([preprocess.normalize(resize_image(f, size)) for f in frames])


def _propagate(model, prop: LabelPropagation, batch, res: VideoResult, preprocess, device, precision, on_frame
               ) -> None:
    feats = frame_features(model, _prepare([f for _, f in batch], res.work_size, preprocess), device, precision)
    for (name, frame), f in zip(batch, feats):
        mask = hard_mask(prop.step(f), res.work_size, tuple(frame.shape[1:]), res.object_ids)
        _emit(res, on_frame, name, frame, mask)


def _emit(res: VideoResult, on_frame, name: str, frame: torch.Tensor, mask: np.ndarray) -> None:
    res.names.append(name)
    if on_frame is not None:
        on_frame(name, frame, mask)
