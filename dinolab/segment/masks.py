"""Segmentation masks on disk: palette PNGs holding one class index per pixel, 255 = ignore.

:func:`read_mask` accepts palette (``P``) and grey (``L``) PNGs, whose pixel values are the class
indices (an RGB colour mask is refused: its colours are not indices). :func:`write_mask` writes a
palette PNG with the fixed :data:`PALETTE` (PASCAL VOC's colours, white for 255), so the files open
as coloured pictures and read back as indices.
"""

from __future__ import annotations

import io
import os

import numpy as np

from ..errors import DataError

IGNORE = 255


def _palette() -> np.ndarray:
    """VOC's colour map: the bits of the class index spread over R, G and B; 255 white."""
    colours = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours[i] = (r, g, b)
    colours[IGNORE] = (255, 255, 255)
    return colours


PALETTE = _palette()


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """``H×W`` int64 class indices of a palette or grey PNG (255 = ignore); a :class:`DataError` names the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode not in ("P", "L", "I;16", "I"):
                raise DataError(f"mask {path} is a {mode} image; masks must be palette or grey PNGs whose pixel "
                                f"values are class indices (255 = ignore), not colours")
            a = np.asarray(im).astype(np.int64)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"cannot read mask {path}: {e}") from None
    if a.min() < 0 or a.max() > IGNORE:
        raise DataError(f"mask {path} holds values outside 0..255 ({a.min()}..{a.max()}); class indices must be "
                        f"0..254, 255 = ignore")
    return a


def mask_png(mask: np.ndarray) -> bytes:
    """A palette PNG of ``H×W`` class indices (0..255)."""
    from PIL import Image

    im = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    im.putpalette(PALETTE.reshape(-1).tolist())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write ``H×W`` class indices as a palette PNG, atomically."""
    from ..io import atomic_save_bytes

    atomic_save_bytes(path, mask_png(mask))


def mask_overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``uint8 H×W×3`` image with each class's colour blended in (class 0 and ignored pixels left as they are)."""
    from ..eval.viz import blend

    colour = PALETTE[np.asarray(mask, dtype=np.uint8)]
    mixed = blend(image, colour, alpha)
    keep = (mask == 0) | (mask == IGNORE)
    return np.where(keep[..., None], image, mixed)
