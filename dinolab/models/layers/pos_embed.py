"""Resizing a learned position-embedding table to another patch grid."""

import math

import torch
import torch.nn.functional as F


def interpolate_pos_embed(pos_embed: torch.Tensor, grid_hw: tuple[int, int], *, offset: float = 0.1,
                          antialias: bool = False, mode: str = "official") -> torch.Tensor:
    """Bicubically resize the patch part of ``pos_embed`` to ``grid_hw``; the CLS entry is kept.

    Args:
        pos_embed: ``(1, 1 + M*M, D)`` table learned on a square ``M x M`` grid.
        grid_hw: target grid ``(h, w)`` in patches.
        offset: ``mode="official"`` only. A non-zero offset reproduces DINO v1 / DINOv2's
            ``scale_factor=((h+offset)/M, (w+offset)/M)`` call (0.1 for models without registers);
            0 means ``size=(h, w)`` (DINOv2 models with registers).
        antialias: passed to ``F.interpolate`` (True for DINOv2 register models and for HF's
            ``Dinov2WithRegistersModel``).
        mode: ``"official"`` (as the facebookresearch code) or ``"hf"`` (transformers always uses
            ``size=(h, w)``, ignoring the offset).

    Returns:
        ``(1, 1 + h*w, D)`` in the dtype of ``pos_embed`` (the resize itself runs in float32).
    """
    n = pos_embed.shape[1] - 1
    h, w = grid_hw
    side = int(math.isqrt(n))
    if side * side != n:
        raise ValueError(f"position embedding holds {n} patch entries, which is not a square grid")
    if (h, w) == (side, side):
        return pos_embed
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    grid = patch_pos.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    if mode == "official" and offset:
        resized = F.interpolate(grid, scale_factor=((h + offset) / side, (w + offset) / side), mode="bicubic",
                                antialias=antialias)
    else:
        resized = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False, antialias=antialias)
    assert resized.shape[-2:] == (h, w), (resized.shape, h, w)
    patch_pos = resized.permute(0, 2, 3, 1).reshape(1, h * w, dim).to(pos_embed.dtype)
    return torch.cat([cls_pos, patch_pos], dim=1)
