"""Self-attention maps of the [CLS] token and DINO's attention-mass masks.

The pictures of DINO (Caron et al., 2021, `visualize_attention.py`): the last block's attention
from the [CLS] query to every patch key, one map per head. Register tokens (DINOv2 "reg",
DINOv3 storage tokens) are dropped with the [CLS] column, so a map is always ``h×w`` patches.

A map holds the raw softmax weights of the [CLS] query over the patch keys: the part of the
[CLS] row that falls on patches, so each head's map sums to ``1 -`` (weight on [CLS] and the
registers) ``≤ 1``. :func:`attention_mask` normalises each head itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .viz import contact_sheet, heat_overlay, mask_image, mask_overlay, to_hwc, upsample


@torch.no_grad()
def attention_maps(model: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Last-block [CLS]→patch attention per head.

    Args:
        model: a :class:`dinolab.models.VisionTransformer` (anything with ``patch_size``,
            ``num_register_tokens`` and ``get_last_selfattention``).
        image: normalised float ``3×H×W`` (or a batch ``B×3×H×W``); pixels beyond the last whole
            patch are dropped.

    Returns:
        float32 ``heads×h×w`` (``B×heads×h×w`` for a batch) with ``h = H // p``, ``w = W // p``,
        on the CPU.

    Examples:
        >>> from dinolab.models import create_model
        >>> m = create_model("vit_tiny", patch_size=8, img_size=32, depth=1, num_register_tokens=4).eval()
        >>> attention_maps(m, torch.randn(3, 32, 48)).shape
        torch.Size([3, 4, 6])
    """
    from .dense import on_patch_grid

    x, single, h, w = on_patch_grid(model, image)
    attn = model.get_last_selfattention(x)  # B×heads×T×T
    prefix = 1 + model.num_register_tokens
    cls_to_patches = attn[:, :, 0, prefix:].float().cpu()
    if cls_to_patches.shape[-1] != h * w:
        raise ValueError(f"model returned {cls_to_patches.shape[-1]} patch tokens for a {h}×{w} grid")
    maps = cls_to_patches.reshape(x.shape[0], -1, h, w)
    return maps[0] if single else maps


def attention_mask(attn: torch.Tensor, keep: float = 0.6) -> torch.Tensor:
    """DINO's threshold: per map, the fewest highest patches that hold ``keep`` of the attention mass.

    Exactly the reference procedure: sort each map ascending, divide by its sum, cumulative-sum,
    keep the entries whose cumulative mass exceeds ``1 - keep``, and undo the sort. A patch is
    therefore kept iff the mass of the patches above it is below ``keep``; the kept set holds at
    least ``keep`` of the mass and no smaller set does (among ties the choice is arbitrary).

    Args:
        attn: non-negative maps ``(..., h, w)``; each map is thresholded on its own.
        keep: share of the mass to keep, in (0, 1].

    Returns:
        bool tensor of the same shape as ``attn``.
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    flat = attn.reshape(-1, attn.shape[-2] * attn.shape[-1]).double()
    val, idx = torch.sort(flat, dim=-1)
    total = val.sum(dim=-1, keepdim=True)
    cum = torch.cumsum(val / total.clamp_min(torch.finfo(torch.float64).tiny), dim=-1)
    kept_sorted = cum > (1.0 - keep)
    mask = torch.gather(kept_sorted, -1, torch.argsort(idx, dim=-1))
    return mask.reshape(attn.shape)


@dataclass
class AttentionPictures:
    """Rendered attention pictures of one image (``uint8`` arrays, ``H×W×3`` or grey ``H×W``).

    ``heads``: one heat-map overlay per head; ``mean``: overlay of the mean over heads;
    ``mask``: the mean map's ``keep``-mass mask (255 = kept); ``sheet``: contact sheet with the
    image, the mean map, its mask, every head and every head's mask.
    """

    heads: list[np.ndarray]
    mean: np.ndarray
    mask: np.ndarray
    sheet: np.ndarray


def render_attention(image: torch.Tensor, attn: torch.Tensor, keep: float = 0.6,
                     cmap: str = "inferno") -> AttentionPictures:
    """Overlay ``heads×h×w`` attention on the ``uint8 3×H×W`` image it came from.

    Maps are upsampled bilinearly, masks with nearest neighbour (one block per patch).
    """
    size = (image.shape[1], image.shape[2])
    rgb = to_hwc(image)
    mean = attn.mean(dim=0)
    maps_px = upsample(torch.cat([attn, mean[None]]), size, mode="bilinear")
    masks_px = upsample(attention_mask(torch.cat([attn, mean[None]]), keep), size, mode="nearest")
    heads = [heat_overlay(rgb, m, cmap) for m in maps_px[:-1]]
    mean_pic = heat_overlay(rgb, maps_px[-1], cmap)
    head_masks = [mask_overlay(rgb, m.numpy()) for m in masks_px[:-1]]
    # rows: image | mean | mean mask, then the heads, then their masks (wrapping after 8 columns)
    n = attn.shape[0]
    columns = min(max(3, n), 8)
    first = [rgb, mean_pic, mask_overlay(rgb, masks_px[-1].numpy())]
    blank: list[np.ndarray | None] = [None] * (columns - 3)
    heads_pad: list[np.ndarray | None] = [None] * (-n % columns)
    tiles = first + blank + heads + heads_pad + head_masks
    labels = (["image", "mean", f"mean {keep:.0%}"] + [""] * len(blank) + [f"head {k}" for k in range(n)]
              + [""] * len(heads_pad) + [f"head {k} {keep:.0%}" for k in range(n)])
    sheet = contact_sheet(tiles, labels, columns=columns)
    return AttentionPictures(heads=heads, mean=mean_pic, mask=mask_image(masks_px[-1].numpy()), sheet=sheet)
