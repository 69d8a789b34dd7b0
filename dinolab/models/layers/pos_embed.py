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

    While a graph is exported (``torch.export`` / ONNX) the same resize is computed by
    :func:`bicubic_matrix` products, which trace with symbolic ``h, w`` (``F.interpolate``'s
    ``scale_factor`` does not); eager results come from ``F.interpolate`` as before.
    """
    n = pos_embed.shape[1] - 1
    h, w = grid_hw
    side = int(math.isqrt(n))
    if side * side != n:
        raise ValueError(f"position embedding holds {n} patch entries, which is not a square grid")
    if torch.compiler.is_exporting():
        return _interpolate_traceable(pos_embed, side, h, w, offset=offset if mode == "official" else 0.0,
                                      antialias=antialias)
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


def _cubic(x: torch.Tensor, a: float) -> torch.Tensor:
    """Keys' cubic convolution kernel with parameter ``a`` at ``x`` (zero for ``|x| >= 2``)."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def bicubic_matrix(out_size: int, in_size: int, inv_scale: torch.Tensor, antialias: bool = False) -> torch.Tensor:
    """``(out_size, in_size)`` weights ``W`` with ``W @ v`` = ``F.interpolate(v, mode="bicubic")`` along one axis.

    ``inv_scale`` (a 0-d float32 tensor) is input pixels per output pixel, as PyTorch uses it
    (``1/scale_factor``, or ``in/out`` for a ``size``). Without ``antialias``: ``a = -0.75`` on the
    four neighbours of ``inv_scale*(i+0.5)-0.5``, indices clamped to the border. With it (PyTorch's
    ``_upsample_bicubic2d_aa``): ``a = -0.5`` stretched by ``max(inv_scale, 1)``, weights outside the
    input dropped and each row normalised. ``out_size`` may be symbolic (export).
    """
    i = torch.arange(out_size, dtype=torch.float32)
    j = torch.arange(in_size, dtype=torch.float32)
    if antialias:
        stretch = torch.clamp(inv_scale, min=1.0)
        centre = inv_scale * (i + 0.5)
        weights = _cubic((j[None, :] - centre[:, None] + 0.5) / stretch, a=-0.5)
        return weights / weights.sum(dim=1, keepdim=True)
    src = inv_scale * (i + 0.5) - 0.5
    first = torch.floor(src)
    t = src - first
    weights = torch.zeros(out_size, in_size)
    for k in range(4):  # neighbours first-1 .. first+2
        idx = torch.clamp(first + (k - 1), 0, in_size - 1)
        weights = weights + _cubic(t - (k - 1), a=-0.75)[:, None] * (idx[:, None] == j[None, :])
    return weights


def _interpolate_traceable(pos_embed: torch.Tensor, side: int, h, w, *, offset: float,
                           antialias: bool) -> torch.Tensor:
    """:func:`interpolate_pos_embed` with tensor arithmetic only (``h``, ``w`` may be symbolic).

    Where eager code returns the table unresized (grids equal; with ``antialias`` also one axis of
    equal length, which PyTorch's antialiased kernel copies) the inverse scale is 1, for which the
    cubic weights are exactly 0, 1, 0, 0: a tensor ``where`` instead of a Python branch on the sizes.
    """
    dim = pos_embed.shape[-1]
    hs = torch.arange(h, dtype=torch.float64)[-1:] + 1  # (1,) tensors holding h and w
    ws = torch.arange(w, dtype=torch.float64)[-1:] + 1
    same_h, same_w = hs == side, ws == side
    if not antialias:
        same_h = same_w = same_h & same_w
    one = torch.ones_like(hs)
    # float32(1 / scale_factor) as PyTorch's kernel takes it, the quotient formed in float64
    inv_h = torch.where(same_h, one, side / (hs + offset)).float().reshape(())
    inv_w = torch.where(same_w, one, side / (ws + offset)).float().reshape(())
    grid = pos_embed[0, 1:].float().reshape(side, side * dim)
    rows = bicubic_matrix(h, side, inv_h, antialias) @ grid  # (h, side*D)
    rows = rows.reshape(h, side, dim).transpose(0, 1).reshape(side, h * dim)
    cols = bicubic_matrix(w, side, inv_w, antialias) @ rows  # (w, h*D)
    patch_pos = cols.reshape(w, h, dim).transpose(0, 1).reshape(1, h * w, dim).to(pos_embed.dtype)
    return torch.cat([pos_embed[:, :1], patch_pos], dim=1)
