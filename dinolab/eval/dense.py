"""Dense features: patch tokens on the native grid and the similarity of one patch to every other.

The DINOv3 picture ("it highlights only what is similar to the object under the red dot"): take the
last block's final-norm patch tokens, L2-normalise them, and show the cosine similarity of the patch
under a chosen pixel to every patch of the same image and of other images. Maps live on the patch
grid (``h×w`` = image pixels // patch size) and are upsampled bilinearly only for display.

Dense work wants more patches than the training size gives: :func:`dense_image_size` is the default
input size of the dense commands, twice the size the model records (448 px for official 224 px
weights), rounded to whole patches. Images keep their aspect ratio (shorter side about that size, see
:func:`dinolab.eval.viz.prepare_image`); a point ``(x, y)`` is given in the original image's pixels and
mapped through that resize.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError
from .viz import prepare_image

DENSE_SCALE = 2  # dense default size = this x the model's recorded size


def dense_image_size(model: Any) -> int:
    """Default input size of the dense commands: ``2 x model.preprocess.image_size`` (224 if none),
    rounded to a multiple of the patch size.

    Examples:
        >>> from types import SimpleNamespace
        >>> dense_image_size(SimpleNamespace(patch_size=14, preprocess=SimpleNamespace(image_size=224)))
        448
    """
    base = getattr(getattr(model, "preprocess", None), "image_size", None) or 224
    p = int(model.patch_size)
    return max(p, round(DENSE_SCALE * base / p) * p)


def on_patch_grid(model: nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, bool, int, int]:
    """``(x, single, h, w)``: ``pixels`` ``(3, H, W)`` or ``(B, 3, H, W)`` as a batch on the model's device, cut to
    whole patches (``h`` x ``w`` of them); ``single`` when one image was given. ValueError below one patch."""
    single = pixels.dim() == 3
    x = pixels[None] if single else pixels
    p = model.patch_size
    h, w = x.shape[-2] // p, x.shape[-1] // p
    if h == 0 or w == 0:
        raise ValueError(f"image of size {tuple(x.shape[-2:])} is smaller than one {p}×{p} patch")
    return x[..., : h * p, : w * p].to(next(model.parameters()).device), single, h, w


@torch.no_grad()
def patch_tokens(model: torch.nn.Module, pixels: torch.Tensor, layers: int = 1) -> torch.Tensor:
    """Final-norm patch tokens of the last ``layers`` blocks, concatenated on the channels.

    Args:
        model: a dinolab ``VisionTransformer`` (``patch_size``, ``forward_features``; ``get_intermediate_layers``
            for ``layers > 1``).
        pixels: normalised float ``B×3×H×W`` (or ``3×H×W``); pixels beyond the last whole patch are dropped.
        layers: how many last blocks (DINOv2's linear segmentation uses 1 or 4).

    Returns:
        float32 ``B×(layers·D)×h×w`` (``(layers·D)×h×w`` for one image), ``h = H // p``, on the model's device.
        Registers and the CLS token are never included.

    Examples:
        >>> from dinolab.models import create_model
        >>> m = create_model("vit_tiny", patch_size=8, img_size=16, depth=2, embed_dim=32, num_heads=2).eval()
        >>> patch_tokens(m, torch.randn(2, 3, 16, 24), layers=2).shape
        torch.Size([2, 64, 2, 3])
    """
    x, single, h, w = on_patch_grid(model, pixels)
    if layers == 1:  # the final-norm patches of forward_features: any backbone with it works, not only the ViT
        tokens = model.forward_features(x)["patches"].float().reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
    else:
        outs = model.get_intermediate_layers(x, layers, reshape=True, norm=True)
        tokens = torch.cat([o.float() for o in outs], dim=1)
    return tokens[0] if single else tokens


def point_to_patch(point: tuple[float, float], original: tuple[int, int], resized: tuple[int, int],
                   patch_size: int) -> tuple[int, int]:
    """``(row, col)`` of the patch under pixel ``point = (x, y)`` of an image of ``original = (H, W)``
    pixels, once it is resized to ``resized = (H', W')``. A point outside the image is a :class:`DataError`.

    Examples:
        >>> point_to_patch((95, 0), (96, 96), (32, 32), 8)   # x = 95 of 96 -> the last column
        (0, 3)
    """
    x, y = point
    height, width = original
    if not (0 <= x < width and 0 <= y < height):
        raise DataError(f"point {x:g},{y:g} is outside the image ({width}x{height} pixels, width x height); "
                        f"give X in [0, {width - 1}] and Y in [0, {height - 1}]")
    h, w = resized[0] // patch_size, resized[1] // patch_size
    row = min(int(y * resized[0] / height) // patch_size, h - 1)
    col = min(int(x * resized[1] / width) // patch_size, w - 1)
    return row, col


@dataclass
class SimilarityMaps:
    """Cosine maps for one query point.

    Attributes:
        point: ``(x, y)`` in the query image's original pixels.
        patch: ``(row, col)`` of the query patch on the query image's grid.
        maps: one float32 ``h_i×w_i`` map per image (the query image first, then the references),
            values in [-1, 1]; the query patch's own entry is 1.
    """

    point: tuple[float, float]
    patch: tuple[int, int]
    maps: list[torch.Tensor]


def cosine_maps(query: torch.Tensor, grids: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Cosine similarity of a ``D`` vector to every position of each ``D×h×w`` grid -> ``h×w`` maps."""
    q = F.normalize(query.float(), dim=0)
    return [torch.einsum("d,dhw->hw", q, F.normalize(g.float(), dim=0)) for g in grids]


def token_grids(model: torch.nn.Module, pixels: Sequence[torch.Tensor], batch_size: int = 8) -> list[torch.Tensor]:
    """:func:`patch_tokens` of each normalised ``3×H_i×W_i`` image (CPU), images of one size batched together."""
    grids: list[torch.Tensor | None] = [None] * len(pixels)
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(pixels):
        by_size.setdefault(tuple(x.shape), []).append(i)
    for members in by_size.values():
        for k in range(0, len(members), batch_size):
            chunk = members[k:k + batch_size]
            for i, g in zip(chunk, patch_tokens(model, torch.stack([pixels[i] for i in chunk])).cpu()):
                grids[i] = g
    return grids


def patch_similarity(model: torch.nn.Module, image: torch.Tensor, points: Sequence[tuple[float, float]],
                     refs: Sequence[torch.Tensor] = (), *, image_size: int | None = None, preprocess: Any = None,
                     batch_size: int = 8) -> tuple[list[SimilarityMaps], list[torch.Tensor]]:
    """Similarity of the patch under each point of ``image`` to every patch of ``image`` and of ``refs``.

    Args:
        model: a dinolab ``VisionTransformer`` (in eval mode; run under the caller's autocast).
        image: ``uint8 3×H×W`` RGB query image.
        points: ``(x, y)`` pixels of ``image`` (original coordinates; floats allowed).
        refs: further ``uint8 3×H_i×W_i`` images to compare against.
        image_size: shorter side fed to the model (default :func:`dense_image_size`).
        preprocess: normalisation (a :class:`dinolab.models.Preprocess`; default the model's).
        batch_size: images of one size per forward pass.

    Returns:
        ``(maps, resized)``: one :class:`SimilarityMaps` per point, and the resized ``uint8 3×H'×W'``
        images (query first) the maps belong to (for overlays).
    """
    size = image_size or dense_image_size(model)
    prepared = [prepare_image(im, model.patch_size, size, preprocess) for im in [image, *refs]]
    resized0 = tuple(prepared[0][0].shape[-2:])
    cells = [point_to_patch(pt, tuple(image.shape[-2:]), resized0, model.patch_size) for pt in points]
    grids = token_grids(model, [x for _, x in prepared], batch_size)
    out = [SimilarityMaps(tuple(pt), cell, cosine_maps(grids[0][:, cell[0], cell[1]], grids))
           for pt, cell in zip(points, cells)]
    return out, [r for r, _ in prepared]


def similarity_pictures(result: SimilarityMaps, images: Sequence[torch.Tensor], original: tuple[int, int],
                        cmap: str = "inferno") -> list:
    """Heat-map overlays (``uint8 H'×W'×3``, one per image) of one point's maps, bilinearly upsampled.

    Colours share one scale over all the point's maps (min to max), so the query image and the references
    compare; the point is marked on the query image (``original = (H, W)``: the query's size before resizing).
    """
    from .viz import blend, colorize, mark_point, to_hwc, upsample

    lo = min(float(m.min()) for m in result.maps)
    hi = max(float(m.max()) for m in result.maps)
    pictures = []
    for k, (m, im) in enumerate(zip(result.maps, images)):
        heat = upsample(m, tuple(im.shape[-2:]), mode="bilinear")
        scaled = ((heat - lo) / (hi - lo) if hi > lo else torch.zeros_like(heat)).numpy()
        pic = blend(to_hwc(im), colorize(scaled, cmap), alpha=0.6)
        if k == 0:
            x, y = result.point
            pic = mark_point(pic, (x * im.shape[-1] / original[1], y * im.shape[-2] / original[0]),
                             radius=max(2, min(im.shape[-2:]) // 40))
        pictures.append(pic)
    return pictures
