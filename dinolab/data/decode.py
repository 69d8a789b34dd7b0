"""Decode one image file into an RGB ``uint8`` tensor, or say why it cannot be read.

:func:`decode_image` accepts what real photo folders hold: EXIF-rotated JPEGs,
grayscale, grayscale+alpha, RGBA, palette images (with or without a
transparent colour), CMYK, 16-bit and 32-bit integer images, animated GIFs
(first frame). Transparent pixels are composited on white. Anything that
cannot be decoded raises :class:`UnreadableImage` with a short reason, so a
data pipeline can skip it and report it instead of crashing.

Decompression bombs (files that declare a huge size to exhaust memory) are
refused from the header alone: a declared size above ``max_pixels`` is an
unreadable file, not an allocation.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError

MAX_PIXELS_ENV = "DINOLAB_MAX_PIXELS"


def _default_max_pixels() -> int | None:
    """About 179 million pixels (e.g. 13,000 x 13,000), twice Pillow's warning threshold, unless the
    environment variable ``DINOLAB_MAX_PIXELS`` says otherwise (a whole number, or ``none``): the one knob
    for the commands that read images, which have no option of their own for it."""
    value = os.environ.get(MAX_PIXELS_ENV)
    if value is None:
        return 2 * 89_478_485
    if value.strip().lower() == "none":
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise DataError(f"{MAX_PIXELS_ENV}={value!r} must be a positive whole number of pixels or 'none'")
    return n


DEFAULT_MAX_PIXELS = _default_max_pixels()
_ORIENTATION = 0x0112  # EXIF tag


class UnreadableImage(DataError):
    """An image file that cannot be decoded; ``path`` and a short ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")

    def __reduce__(self):  # picklable across DataLoader worker processes
        return (type(self), (self.path, self.reason))


def decode_image(path: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 min_size: int | None = None) -> torch.Tensor:
    """Read ``path`` as an RGB image.

    Args:
        path: image file (any format Pillow reads).
        max_pixels: refuse files whose declared width x height is larger (``None``: no limit).
        min_size: optional hint that the caller will shrink the image so its shorter side is
            ``min_size``; large JPEGs are then decoded at a reduced scale (never below ``min_size``),
            which is several times faster.

    Returns:
        ``(3, H, W)`` ``uint8`` tensor, EXIF orientation applied.

    Raises:
        UnreadableImage: missing, empty, truncated, corrupt or non-image file, or a declared size
            above ``max_pixels``.

    Examples:
        >>> img = decode_image("photos/cat.jpg")   # doctest: +SKIP
        >>> img.shape, img.dtype                  # doctest: +SKIP
        (torch.Size([3, 480, 640]), torch.uint8)
    """
    path = Path(path)
    _allow_in_pillow(max_pixels)
    try:
        if path.stat().st_size == 0:
            raise UnreadableImage(path, "empty file (0 bytes)")
        with warnings.catch_warnings():
            # Our own pixel limit below replaces Pillow's bomb warning; Pillow's "Corrupt EXIF data"
            # (a UserWarning) is harmless, as the image is decoded without rotation.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)
            with Image.open(path) as im:
                _check_size(path, im.size, max_pixels)
                if min_size is not None and im.format == "JPEG":
                    im.draft("RGB", _draft_request(im.size, min_size))
                im.load()
                rgb = _to_rgb(_exif_transpose(im))
    except UnreadableImage:
        raise
    except FileNotFoundError:
        raise UnreadableImage(path, "file not found") from None
    except IsADirectoryError:
        raise UnreadableImage(path, "is a folder, not a file") from None
    except PermissionError:
        raise UnreadableImage(path, "permission denied") from None
    except UnidentifiedImageError:
        raise UnreadableImage(path, "not an image file (unrecognised format)") from None
    except Image.DecompressionBombError:  # Pillow's own check, above 2 * Image.MAX_IMAGE_PIXELS
        raise UnreadableImage(path, _too_large("", 2 * (Image.MAX_IMAGE_PIXELS or 0))) from None
    except MemoryError:
        raise UnreadableImage(path, "out of memory while decoding") from None
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, EOFError, zlib.error, ...
        raise UnreadableImage(path, f"truncated or corrupt image data ({_short(e)})") from None
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def _check_size(path: Path, size: tuple[int, int], max_pixels: int | None) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise UnreadableImage(path, f"invalid declared size {w}x{h}")
    if max_pixels is not None and w * h > max_pixels:
        raise UnreadableImage(path, _too_large(f" {w}x{h} = {w * h:,} pixels", max_pixels))


def _too_large(declared: str, limit: int) -> str:
    return (f"declared size{declared} is above the limit of {limit:,} pixels (possible decompression bomb; "
            f"if the file is genuine, raise the limit: data.max_pixels=N for dinolab train, the environment "
            f"variable {MAX_PIXELS_ENV}=N for the other commands, max_pixels=N in ImageDataset)")


def _allow_in_pillow(max_pixels: int | None) -> None:
    # Pillow refuses sizes above 2 * MAX_IMAGE_PIXELS on its own; a caller who raises our limit
    # past that has said the large files are genuine, so Pillow's limit follows.
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and (max_pixels is None or max_pixels > 2 * limit):
        Image.MAX_IMAGE_PIXELS = None if max_pixels is None else max_pixels // 2 + 1


def _draft_request(size: tuple[int, int], min_size: int) -> tuple[int, int]:
    # draft() picks the smallest DCT scale whose result is at least the requested size.
    w, h = size
    scale = min_size / min(w, h)
    if scale >= 1:
        return w, h
    return max(1, int(np.ceil(w * scale))), max(1, int(np.ceil(h * scale)))


def _exif_transpose(im: Image.Image) -> Image.Image:
    try:
        if im.getexif().get(_ORIENTATION, 1) == 1:
            return im  # exif_transpose would copy the pixels for nothing
        return ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block should not lose an otherwise good image
        return im


def _to_rgb(im: Image.Image) -> np.ndarray:
    """``(H, W, 3)`` uint8 array for any Pillow mode."""
    mode = im.mode
    if mode == "RGB":
        return np.array(im)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return np.repeat(_high_depth_to_uint8(np.asarray(im), mode)[..., None], 3, axis=2)
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("L", "1", "CMYK", "YCbCr", "HSV"):
        im = im.convert("RGB")
    elif mode == "LAB":
        raise ValueError("CIELAB images are not supported")
    elif mode != "RGBA":
        im = im.convert("RGBA")  # LA, PA, RGBa, La, RGBX, ...
    if im.mode == "RGBA":
        return _over_white(np.asarray(im))
    return np.array(im)


def _over_white(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    out = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _high_depth_to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    """16-bit images map 0..65535 linearly to 0..255; other ranges are stretched to their min..max."""
    a = a.astype(np.float64)
    if mode.startswith("I;16") or (mode == "I" and a.min() >= 0 and a.max() <= 65535):
        out = a / 257.0
    elif mode == "F" and a.min() >= 0 and a.max() <= 1:
        out = a * 255.0
    else:
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        out = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return np.clip(np.rint(np.nan_to_num(out)), 0, 255).astype(np.uint8)


def _short(e: BaseException, limit: int = 80) -> str:
    msg = str(e).strip() or type(e).__name__
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."
