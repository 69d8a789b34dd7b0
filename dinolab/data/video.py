"""Videos on disk: frames (a folder of images or a video file), object masks as palette PNGs.

- :func:`open_frames`: the frames of a folder (its images in natural name order, not recursive) or of a
  video file (decoded by imageio with PyAV or imageio-ffmpeg; animated GIFs need only Pillow).
- :func:`read_mask` / :func:`mask_png`: object-index masks (``uint8 H×W``, 0 background) from / to indexed
  PNGs with the DAVIS palette (the PASCAL VOC colour map), as DAVIS ``Annotations`` are stored.
- :func:`write_video_set`: a :class:`~dinolab.data.builtin.VideoSet` in the DAVIS layout,
  ``ROOT/JPEGImages/<video>/00000.jpg`` and ``ROOT/Annotations/<video>/00000.png``.

Examples:
    >>> davis_palette()[:3].tolist()
    [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
"""

from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import DataError
from .datasets import IMAGE_EXTENSIONS
from .decode import UnreadableImage, decode_image

VIDEO_DECODERS = "pip install av (or imageio-ffmpeg)"


def davis_palette() -> np.ndarray:
    """``(256, 3)`` uint8: the PASCAL VOC / DAVIS colour map (index bits spread over the RGB high bits)."""
    palette = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def mask_png(mask: np.ndarray) -> bytes:
    """An ``H×W`` uint8 object-index mask as an indexed PNG with the DAVIS palette."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), mode="P")
    im.putpalette(davis_palette().ravel().tolist())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """``uint8 H×W`` object indices of a mask image: a palette or grey PNG holds them as its values; in an RGB
    mask each colour other than black is one object, numbered in order of first appearance (row-major)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            arr = np.asarray(im.convert("RGB") if mode in ("RGBA", "LA", "CMYK", "YCbCr") else im)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"cannot read mask {path}: {e}; give a PNG with the object index of each pixel "
                        f"(0 = background)") from None
    if arr.ndim == 3:
        colours, first, inverse = np.unique(arr.reshape(-1, arr.shape[2]), axis=0, return_index=True,
                                            return_inverse=True)
        order = [i for i in np.argsort(first) if colours[i].any()]
        if len(order) > 255:
            raise DataError(f"mask {path} has {len(order)} colours; at most 255 objects (0 = background)")
        ids = np.zeros(len(colours), np.uint8)
        ids[order] = np.arange(1, len(order) + 1)
        return ids[inverse.ravel()].reshape(arr.shape[:2])
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.max(initial=0) > 255 or arr.min(initial=0) < 0:
        raise DataError(f"mask {path} holds values up to {arr.max()}; object indices must be 0-255")
    return arr.astype(np.uint8)


@dataclass
class Frames:
    """The frames of one video: ``paths`` and ``names`` (output stems) of a folder's frames, None for a video file."""

    source: str
    paths: list[str] | None
    is_video: bool

    @property
    def names(self) -> list[str] | None:
        return None if self.paths is None else [Path(p).stem for p in self.paths]

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor | UnreadableImage]]:
        """``(name, uint8 3×H×W)`` per frame; an unreadable folder frame gives its :class:`UnreadableImage`
        instead (a video file that stops decoding raises :class:`DataError`: its frames cannot be skipped)."""
        if not self.is_video:
            for name, path in zip(self.names, self.paths):
                try:
                    yield name, decode_image(path)
                except UnreadableImage as e:
                    yield name, e
            return
        yield from _video_frames(self.source)


def open_frames(source: str | os.PathLike) -> Frames:
    """The frames of a folder of images (natural name order: ``f2`` before ``f10``) or of a video file."""
    source = str(source)
    if os.path.isdir(source):
        paths = _folder_images(source)
        if not paths:
            raise DataError(f"no images in {source}; give a folder of frames ({', '.join(IMAGE_EXTENSIONS[:5])}, "
                            f"...) or a video file")
        stems: dict[str, str] = {}
        for path in paths:
            other = stems.setdefault(Path(path).stem, path)
            if other != path:
                raise DataError(f"frames {os.path.basename(other)} and {os.path.basename(path)} in {source} would both "
                                f"give the mask {Path(path).stem}.png; keep one of them")
        return Frames(source, paths, False)
    if not os.path.isfile(source):
        raise DataError(f"{source} does not exist; give a folder of frames or a video file")
    return Frames(source, None, True)


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _folder_images(folder: str) -> list[str]:
    names = [n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS)
             and os.path.isfile(os.path.join(folder, n))]
    return [os.path.join(folder, n) for n in sorted(names, key=_natural_key)]


def _video_frames(path: str) -> Iterator[tuple[str, torch.Tensor]]:
    try:
        import imageio.v3 as iio
    except ImportError:
        raise DataError(f"{path} is a file: reading a video needs a decoder ({VIDEO_DECODERS}, then pip install "
                        f"imageio), or extract its frames to a folder (ffmpeg -i VIDEO frames/%05d.png)") from None
    i = -1
    try:
        with warnings.catch_warnings():  # imageio tries its plugins in turn, some of them deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            for i, frame in enumerate(iio.imiter(path)):
                yield f"{i:05d}", _rgb_tensor(np.asarray(frame))
    except Exception as e:  # imageio raises many kinds: no plugin, bad data, truncated file
        if i < 0:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataError(f"cannot decode {path} as a video (imageio: {reason}); for video files "
                            f"{VIDEO_DECODERS}, or give a folder of frames") from None
        raise DataError(f"frame {i + 1} of {path} could not be decoded ({e}); masks of frames 0-{i} were written; "
                        f"a video's frames are not skipped (the later ones would be misnumbered): extract the "
                        f"frames to a folder (ffmpeg -i VIDEO frames/%05d.png) to go on without the bad ones") from None


def _rgb_tensor(frame: np.ndarray) -> torch.Tensor:
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(frame[..., :3].astype(np.uint8))).permute(2, 0, 1).contiguous()


def write_video_set(videos, root: str | os.PathLike, quality: int = 95) -> list[str]:
    """Write a :class:`~dinolab.data.builtin.VideoSet` as ``ROOT/JPEGImages/<video>/NNNNN.jpg`` frames and
    ``ROOT/Annotations/<video>/NNNNN.png`` palette masks (every frame annotated); returns the video names."""
    from PIL import Image

    from ..io import atomic_save_bytes

    root = Path(root)
    for v, name in enumerate(videos.videos):
        for t in range(videos.frames.shape[1]):
            buf = io.BytesIO()
            Image.fromarray(videos.frames[v, t].transpose(1, 2, 0)).save(buf, format="JPEG", quality=quality, subsampling=0)
            atomic_save_bytes(root / "JPEGImages" / name / f"{t:05d}.jpg", buf.getvalue())
            atomic_save_bytes(root / "Annotations" / name / f"{t:05d}.png", mask_png(videos.object_masks[v, t]))
    return videos.videos
