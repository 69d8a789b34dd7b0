"""Images with segmentation masks: a folder of images and a folder of masks matched by file stem, or a
built-in set (``builtin:shapes``: class 0 background, 1 + shape class on the object).

Every image must have a mask and every mask an image; the command names the ones without a partner.
Unreadable images and masks are skipped and listed in ``bad`` (``(path, reason)``), as the loaders do.

Examples:
    >>> d = load_segmentation_data("builtin:shapes?n=4&size=32")
    >>> d.classes, len(d), int(d.load(1)[1].max())
    (['background', 'circle', 'square', 'triangle', 'star', 'cross'], 4, 2)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .masks import IGNORE, read_mask

_SHOW = 5  # names listed in a mismatch message


@dataclass
class SegmentationData:
    """``names[i]``: the stem outputs are named by; ``images[i]`` / ``masks[i]``: paths (or None for a built-in
    set, whose arrays are ``arrays``); ``classes``: names when the source knows them."""

    source: str
    names: list[str]
    images: list[str]
    masks: list[str | None]
    classes: list[str] | None = None
    arrays: tuple[np.ndarray, np.ndarray] | None = None  # built-in: (N×3×H×W uint8, N×H×W int64)
    bad: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def load(self, i: int) -> tuple[torch.Tensor, np.ndarray | None]:
        """``(uint8 3×H×W image, int64 H×W mask or None)``; raises ``UnreadableImage`` / :class:`DataError`."""
        from ..data.decode import decode_image

        if self.arrays is not None:
            return torch.from_numpy(self.arrays[0][i].copy()), self.arrays[1][i]
        image = decode_image(self.images[i])
        mask = read_mask(self.masks[i]) if self.masks[i] is not None else None
        if mask is not None and mask.shape != tuple(image.shape[-2:]):
            raise DataError(f"mask {self.masks[i]} is {mask.shape[1]}x{mask.shape[0]} pixels but its image "
                            f"{self.images[i]} is {image.shape[2]}x{image.shape[1]}; masks must match their images")
        return image, mask

    def readable(self):
        """Yield ``(i, image, mask)`` for every pair that can be read; the others go to ``bad``."""
        from ..data.decode import UnreadableImage

        for i in range(len(self)):
            try:
                image, mask = self.load(i)
            except UnreadableImage as e:
                self._skip(e.path, e.reason)
                continue
            except DataError as e:
                self._skip(str(self.masks[i]), str(e))
                continue
            yield i, image, mask

    def _skip(self, path: str, reason: str) -> None:
        if (path, reason) not in self.bad:  # a second pass over the data names a file once
            self.bad.append((path, reason))


def _builtin(spec: str) -> SegmentationData:
    from ..data.builtin import load_builtin

    s = load_builtin(spec)
    if s.masks is None:
        raise DataError(f"{spec} has no masks; segmentation needs builtin:shapes or --masks DIR")
    masks = np.where(s.masks, s.labels[:, None, None] + 1, 0).astype(np.int64)
    names = [p.rsplit("/", 1)[1] for p in s.paths]
    names = [f"{s.name}_{n}" for n in names]
    return SegmentationData(spec, names, list(s.paths), [None] * len(names), ["background", *s.classes],
                            (s.images, masks))


def _by_stem(paths: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in paths:
        stem = Path(p).stem
        if stem in out:
            raise DataError(f"two {what} share the name {stem!r} ({out[stem]} and {p}); masks are matched to images "
                            f"by file stem, so stems must be unique")
        out[stem] = p
    return out


def _listing(names: list[str]) -> str:
    more = f" and {len(names) - _SHOW} more" if len(names) > _SHOW else ""
    return ", ".join(names[:_SHOW]) + more


def load_segmentation_data(images: str | os.PathLike, masks: str | os.PathLike | None = None,
                           require_masks: bool = True) -> SegmentationData:
    """Pair ``images`` (a folder, searched recursively, or ``builtin:shapes[?...]``) with ``masks`` (a folder of
    PNGs named after the images). ``require_masks=False``: images alone (prediction)."""
    from ..data.builtin import is_builtin
    from ..eval.viz import image_paths

    images = str(images)
    if is_builtin(images):
        if masks is not None:
            raise DataError(f"{images} brings its own masks; drop --masks")
        return _builtin(images)
    if not os.path.exists(images):
        raise DataError(f"{images} does not exist; give a folder of images or builtin:shapes?n=N")
    image_of = _by_stem(image_paths([images]), "images")
    if not image_of:
        raise DataError(f"no images found in {images}")
    if masks is None:
        if require_masks:
            raise DataError(f"--masks DIR is needed with {images} (palette PNGs named after the images)")
        names = sorted(image_of)
        return SegmentationData(images, names, [image_of[n] for n in names], [None] * len(names))
    if not os.path.isdir(masks):
        raise DataError(f"--masks {masks} is not a folder; give the folder of mask PNGs named after the images")
    mask_of = _by_stem(sorted(str(p) for p in Path(masks).rglob("*.png")), "masks")
    no_mask = sorted(set(image_of) - set(mask_of))
    no_image = sorted(set(mask_of) - set(image_of))
    if no_mask or no_image:
        parts = ([f"{len(no_mask)} image(s) without a mask in {masks}: {_listing(no_mask)}"] if no_mask else []) + \
                ([f"{len(no_image)} mask(s) without an image in {images}: {_listing(no_image)}"] if no_image else [])
        raise DataError("; ".join(parts) + " (masks are matched to images by file stem: photo.jpg <-> photo.png)")
    names = sorted(image_of)
    return SegmentationData(images, names, [image_of[n] for n in names], [mask_of[n] for n in names])


def count_classes(data: SegmentationData) -> int:
    """Number of classes: the set's own, else 1 + the largest index in any readable mask (255 not counted)."""
    if data.classes is not None:
        return len(data.classes)
    top = -1
    for _, _, mask in data.readable():
        valid = mask[mask != IGNORE]
        if valid.size:
            top = max(top, int(valid.max()))
    if top < 0:
        raise DataError(f"the masks of {data.source} hold no labelled pixel (all 255 = ignore, or none readable)")
    return top + 1
