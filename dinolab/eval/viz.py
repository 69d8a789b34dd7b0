"""Pictures for the visual evaluations (attention, object masks, patch PCA).

The image side shared by :mod:`dinolab.eval.attention`, :mod:`dinolab.eval.objects` and
:mod:`dinolab.eval.pca`: sizing an image to the model's patch grid, ImageNet normalisation,
resizing patch-grid maps to pixels, colour maps, overlays, contact sheets and PNG output
(always written atomically through :mod:`dinolab.io`).

Conventions: images are ``uint8`` tensors ``3×H×W`` (RGB, as :class:`dinolab.data.ImageDataset`
returns them) on the way in and ``uint8`` numpy arrays ``H×W×3`` on the way out; maps are float
tensors ``(..., h, w)`` on the patch grid.
"""

from __future__ import annotations

import io
import math
import os
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..io import atomic_save_bytes

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def grid_size(height: int, width: int, patch_size: int, image_size: int = 224, max_aspect: float = 4.0
              ) -> tuple[int, int]:
    """Pixel size ``(H', W')`` with the shorter side about ``image_size``, both multiples of ``patch_size``.

    The aspect ratio is kept up to rounding each side to the nearest multiple of the patch size
    (at least one patch). The longer side is capped at ``max_aspect * image_size`` so that a
    panorama or a 1-pixel strip cannot ask for an enormous attention matrix; such images are
    shrunk further (their shorter side then ends below ``image_size``).

    Examples:
        >>> grid_size(480, 640, 16, 224)
        (224, 304)
    """
    scale = min(image_size / min(height, width), max_aspect * image_size / max(height, width))
    return (max(1, round(height * scale / patch_size)) * patch_size,
            max(1, round(width * scale / patch_size)) * patch_size)


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a ``uint8 3×H×W`` image to ``size`` (bicubic, antialiased when shrinking) -> ``uint8 3×H'×W'``."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    x = F.interpolate(image[None].float(), size=size, mode="bicubic", align_corners=False, antialias=True)
    return x[0].round().clamp(0, 255).to(torch.uint8)


def normalize(image: torch.Tensor, preprocess: Any = None) -> torch.Tensor:
    """``uint8 3×H×W`` (or ``B×3×H×W``) -> float, scaled to [0, 1] and ImageNet-normalised (or by
    ``preprocess.normalize``, a :class:`dinolab.models.Preprocess`)."""
    if preprocess is not None:
        return preprocess.normalize(image)
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device).view(3, 1, 1)
    return (image.float() / 255.0 - mean) / std


def prepare_image(image: torch.Tensor, patch_size: int, image_size: int | None = None, preprocess: Any = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Size an image for a ViT: returns ``(resized uint8 3×H'×W', normalised float 3×H'×W')``.

    ``H'`` and ``W'`` are multiples of ``patch_size`` with the shorter side about ``image_size``
    (default ``preprocess.image_size``, else 224; see :func:`grid_size`), so no pixel is cropped and
    masks can be resized the same way. Normalised as ``preprocess`` says (default ImageNet).
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a 3×H×W RGB image, got shape {tuple(image.shape)}")
    size = image_size or (preprocess.image_size if preprocess is not None else 224)
    resized = resize_image(image, grid_size(image.shape[1], image.shape[2], patch_size, size))
    return resized, normalize(resized, preprocess)


def upsample(maps: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize patch-grid maps ``(..., h, w)`` to ``(..., H, W)``.

    ``mode="nearest"`` for masks (a bool input gives a bool output: every pixel takes its
    patch's value), ``"bilinear"`` or ``"bicubic"`` for continuous maps.
    """
    lead = maps.shape[:-2]
    x = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    if mode == "nearest":
        y = F.interpolate(x, size=size, mode="nearest")
    else:
        y = F.interpolate(x, size=size, mode=mode, align_corners=False)
    y = y.reshape(*lead, *size)
    return y.bool() if maps.dtype == torch.bool else y


def minmax(x: torch.Tensor) -> torch.Tensor:
    """Scale ``x`` linearly to [0, 1] (a constant input gives zeros)."""
    x = x.float()
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)


def to_hwc(image: torch.Tensor) -> np.ndarray:
    """``uint8 3×H×W`` tensor -> ``uint8 H×W×3`` numpy array."""
    return image.permute(1, 2, 0).contiguous().cpu().numpy().astype(np.uint8)


def colorize(values: torch.Tensor | np.ndarray, cmap: str = "inferno") -> np.ndarray:
    """Map ``H×W`` values in [0, 1] to ``uint8 H×W×3`` through a matplotlib colour map."""
    from matplotlib import colormaps

    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    return (colormaps[cmap](v)[..., :3] * 255.0 + 0.5).astype(np.uint8)


def blend(image: np.ndarray, overlay: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """``(1 - alpha) * image + alpha * overlay`` for ``uint8 H×W×3`` arrays."""
    out = (1.0 - alpha) * image.astype(np.float64) + alpha * overlay.astype(np.float64)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def heat_overlay(image: np.ndarray, heat: torch.Tensor, cmap: str = "inferno", alpha: float = 0.6) -> np.ndarray:
    """An ``H×W`` heat map (min-max scaled here) over a ``uint8 H×W×3`` image."""
    return blend(image, colorize(minmax(heat).cpu().numpy(), cmap), alpha)


def mark_point(picture: np.ndarray, xy: tuple[float, float], radius: int = 4,
               color: Sequence[int] = (255, 0, 0)) -> np.ndarray:
    """A copy of ``uint8 H×W×3`` ``picture`` with a filled disc of ``color`` ringed in white at pixel ``xy = (x, y)``."""
    out = picture.copy()
    yy, xx = np.mgrid[: out.shape[0], : out.shape[1]]
    d2 = (xx - xy[0]) ** 2 + (yy - xy[1]) ** 2
    out[d2 <= (radius + 1.5) ** 2] = 255
    out[d2 <= radius ** 2] = np.asarray(color, dtype=np.uint8)
    return out


def mask_overlay(image: np.ndarray, mask: torch.Tensor | np.ndarray, color: Sequence[int] = (0, 200, 255),
                 dim: float = 0.35) -> np.ndarray:
    """Keep the masked pixels, tint them with ``color``, and darken the rest to ``dim`` brightness."""
    m = np.asarray(mask, dtype=bool)[..., None]
    img = image.astype(np.float64)
    fg = 0.7 * img + 0.3 * np.asarray(color, dtype=np.float64)
    out = np.where(m, fg, dim * img)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def mask_image(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    """A bool ``H×W`` mask as a ``uint8`` grey picture: 255 foreground, 0 background."""
    return np.asarray(mask, dtype=bool).astype(np.uint8) * 255


def contact_sheet(tiles: Sequence[np.ndarray | None], labels: Sequence[str] | None = None, columns: int = 4,
                  pad: int = 4, label_height: int = 14, min_side: int = 128) -> np.ndarray:
    """Tiles (``uint8 H×W×3`` or ``H×W``, any sizes) on a white grid with a caption under each.

    A ``None`` tile leaves its cell empty (to start a new row). Tiles whose longer side is below
    ``min_side`` are enlarged by a whole factor (pixel repetition, so patches stay sharp).
    """
    from PIL import Image, ImageDraw

    if not any(t is not None for t in tiles):
        raise ValueError("contact_sheet needs at least one tile")
    tiles = [np.repeat(t[..., None], 3, axis=2) if t is not None and t.ndim == 2 else t for t in tiles]
    tiles = [_enlarge(t, min_side) if t is not None else None for t in tiles]
    columns = max(1, min(columns, len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    th = max(t.shape[0] for t in tiles if t is not None)
    tw = max(t.shape[1] for t in tiles if t is not None)
    cap = label_height if labels else 0
    sheet = Image.new("RGB", (columns * (tw + pad) + pad, rows * (th + cap + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, tile in enumerate(tiles):
        if tile is None:
            continue
        r, c = divmod(i, columns)
        x, y = pad + c * (tw + pad), pad + r * (th + cap + pad)
        sheet.paste(Image.fromarray(tile), (x, y))
        if labels:
            draw.text((x + 2, y + th + 1), str(labels[i])[: max(4, tw // 6)], fill=(0, 0, 0))
    return np.asarray(sheet)


def _enlarge(tile: np.ndarray, min_side: int) -> np.ndarray:
    k = math.ceil(min_side / max(tile.shape[:2]))
    return tile.repeat(k, axis=0).repeat(k, axis=1) if k > 1 else tile


def png_bytes(picture: np.ndarray) -> bytes:
    """Encode a ``uint8`` ``H×W×3`` (RGB) or ``H×W`` (grey) array as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(picture, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str | os.PathLike, picture: np.ndarray) -> None:
    """Write a ``uint8`` picture as PNG atomically (no half-written file on failure)."""
    atomic_save_bytes(path, png_bytes(picture))


def image_paths(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Expand command-line inputs: files as given, folders to the images they hold (recursively)."""
    from ..data import ImageDataset

    paths: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            paths.extend(ImageDataset(str(item)).paths)
        else:
            paths.append(str(item))
    return paths


MAX_STEM_BYTES = 80  # two stems and a suffix in one output name stay under the 255-byte NAME_MAX


def unique_stems(paths: Sequence[str | os.PathLike]) -> list[str]:
    """File stems to name outputs by, made unique with ``_2``, ``_3``... where names repeat. A stem longer
    than :data:`MAX_STEM_BYTES` keeps its start plus ``~`` and 8 hex digits of the whole stem's hash, so
    outputs named after one or two images (``<stem>_point1_<ref>.png``) fit in a file name."""
    taken: set[str] = set()
    out = []
    for p in paths:
        stem = _bounded(os.path.splitext(os.path.basename(p))[0] or "image")
        name, k = stem, 1
        while name in taken:
            k += 1
            name = f"{stem}_{k}"
        taken.add(name)
        out.append(name)
    return out


def _bounded(stem: str) -> str:
    raw = os.fsencode(stem)
    if len(raw) <= MAX_STEM_BYTES:
        return stem
    import hashlib

    head = raw[: MAX_STEM_BYTES - 9].decode("utf-8", "ignore") or "image"  # never half a character
    return f"{head}~{hashlib.sha1(raw).hexdigest()[:8]}"


def plot_confusion_matrix(matrix: Any, classes: Sequence[str], path: str | os.PathLike, *,
                          title: str = "confusion matrix (rows: true class, normalised)", annotate_max: int = 20) -> None:
    """Write a confusion matrix PNG: ``matrix[i, j]`` images of true class ``i`` predicted as ``j``.

    Each row is normalised to sum to 1 (the colour is the share of the true class; a row with no
    images stays empty); with at most ``annotate_max`` classes each cell shows its count.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    m = np.asarray(matrix, dtype=np.float64)
    c = len(classes)
    if m.shape != (c, c):
        raise ValueError(f"matrix of shape {m.shape} does not fit {c} classes")
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    side = min(2.5 + 0.45 * c, 30)
    fig = Figure(figsize=(side + 1.5, side))
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ticks = list(range(c)) if c <= 60 else []
    ax.set_xticks(ticks, [str(classes[i]) for i in ticks], rotation=90 if c > 8 else 0)
    ax.set_yticks(ticks, [str(classes[i]) for i in ticks])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if c <= annotate_max:
        for i in range(c):
            for j in range(c):
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.5 else "black")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_save_bytes(path, buf.getvalue())
