"""Axial rotary position embedding of DINOv3 (no learned weights, no mixing of coordinates)."""

from __future__ import annotations

import math

import torch
from torch import nn


class RopePositionEmbedding(nn.Module):
    """Sines and cosines for 2-D axial RoPE over a patch grid.

    Patch centres are normalised separately per axis to ``[-1, 1]``; each head channel pair turns
    by ``2*pi*coord/period`` with ``period_i = base ** (4i / head_dim)``, the first half of the
    frequencies for the y coordinate and the second for x, tiled twice for rotate-half.

    During training the coordinates can be augmented (DINOv3 "RoPE box jittering"):
    ``shift_coords`` adds U(-s, s) per axis, ``jitter_coords`` multiplies each axis by its own
    log-uniform factor in [1/j, j], ``rescale_coords`` multiplies both axes by one shared
    log-uniform factor in [1/r, r] (the released models use only ``rescale_coords=2``).

    Shapes: ``forward(h, w)`` returns ``(sin, cos)``, each ``(h*w, head_dim)`` in float32.
    """

    def __init__(self, head_dim: int, base: float = 100.0, shift_coords: float | None = None,
                 jitter_coords: float | None = None, rescale_coords: float | None = None) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"RoPE needs a head dimension divisible by 4, got {head_dim}")
        self.head_dim = head_dim
        self.base = base
        self.shift_coords = shift_coords
        self.jitter_coords = jitter_coords
        self.rescale_coords = rescale_coords
        self.register_buffer("periods", torch.empty(head_dim // 4), persistent=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        i = torch.arange(self.head_dim // 4, dtype=torch.float32)
        self.periods.copy_(self.base ** (2 * i / (self.head_dim // 2)))

    def coords(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """``(h*w, 2)`` patch-centre coordinates (y, x) in [-1, 1], augmented in training mode."""
        ys = (torch.arange(0.5, h, device=device, dtype=torch.float32) / h) * 2 - 1
        xs = (torch.arange(0.5, w, device=device, dtype=torch.float32) / w) * 2 - 1
        coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).flatten(0, 1)
        if self.training:
            if self.shift_coords:
                coords = coords + torch.empty(1, 2, device=device).uniform_(-self.shift_coords, self.shift_coords)
            if self.jitter_coords:
                r = math.log(self.jitter_coords)
                coords = coords * torch.empty(1, 2, device=device).uniform_(-r, r).exp()
            if self.rescale_coords:
                r = math.log(self.rescale_coords)
                coords = coords * torch.empty(1, device=device).uniform_(-r, r).exp()
        return coords

    def forward(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        coords = self.coords(h, w, self.periods.device)
        angles = 2 * math.pi * coords[:, :, None] / self.periods.float()[None, None, :]  # (HW, 2, hd/4)
        angles = angles.flatten(1, 2).tile(2)  # (HW, hd)
        return torch.sin(angles), torch.cos(angles)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate the last ``sin.shape[0]`` tokens of ``x`` (B, heads, T, hd); prefix tokens stay as they are.

    The rotation runs in float32 (as the released DINOv3 models) and the result is cast back.
    """
    n = sin.shape[0]
    prefix, patches = x[:, :, :-n], x[:, :, -n:]
    rotated = (patches.float() * cos + rotate_half(patches.float()) * sin).to(x.dtype)
    return torch.cat([prefix, rotated], dim=2)
