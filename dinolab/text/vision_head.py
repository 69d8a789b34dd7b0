"""The trainable image side on top of a frozen backbone (dino.txt's vision head).

The frozen backbone gives the final-norm tokens of its last block: CLS ``(B, D)``, registers
``(B, R, D)``, patches ``(B, N, D)``. The head

1. optionally runs ``num_blocks`` pre-norm transformer blocks over ``[CLS, registers, patches]``
   followed by a LayerNorm (dino.txt uses two; they get no position embedding, as there);
2. pools ``concat(CLS, mean(patches))`` -> ``(B, 2D)``;
3. projects to ``out_dim`` with an MLP (``hidden_dim > 0``: Linear-GELU-Linear) or a single
   Linear (``hidden_dim = 0``), and L2-normalises.

The default (no blocks, an MLP) trains in seconds on CPU: with no blocks the head only needs
the pooled ``(B, 2D)`` features, which :func:`pooled_features` computes once per image so that
training never runs the backbone again.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models.layers import Block


def pooled_features(cls: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """``concat(cls, patches.mean(1))``: ``(B, D)`` and ``(B, N, D)`` -> ``(B, 2D)``."""
    return torch.cat([cls, patches.mean(dim=1)], dim=-1)


class VisionHead(nn.Module):
    """Frozen-backbone tokens -> image embeddings ``(B, out_dim)`` (L2-normalised).

    Args:
        embed_dim: the backbone's width ``D``.
        out_dim: joint image-text embedding dimension.
        num_blocks: transformer blocks over the backbone tokens before pooling (0: pool directly).
        num_heads: attention heads of those blocks.
        hidden_dim: hidden width of the projection MLP; 0 for a single linear projection.

    Examples:
        >>> head = VisionHead(embed_dim=64, out_dim=32)
        >>> cls, patches = torch.randn(2, 64), torch.randn(2, 16, 64)
        >>> head.forward_pooled(pooled_features(cls, patches)).shape
        torch.Size([2, 32])
        >>> head2 = VisionHead(embed_dim=64, out_dim=32, num_blocks=1, num_heads=4)
        >>> head2(cls, torch.randn(2, 4, 64), patches).shape
        torch.Size([2, 32])
    """

    def __init__(self, embed_dim: int, out_dim: int, *, num_blocks: int = 0, num_heads: int = 4,
                 hidden_dim: int = 1024) -> None:
        super().__init__()
        self._config = dict(embed_dim=embed_dim, out_dim=out_dim, num_blocks=num_blocks, num_heads=num_heads,
                            hidden_dim=hidden_dim)
        self.embed_dim, self.num_blocks = embed_dim, num_blocks
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, norm_eps=1e-5) for _ in range(num_blocks))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-5) if num_blocks else nn.Identity()
        pooled = 2 * embed_dim
        if hidden_dim:
            self.proj = nn.Sequential(nn.Linear(pooled, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))
        else:
            self.proj = nn.Sequential(nn.Linear(pooled, out_dim))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments: ``VisionHead(**head.config)`` rebuilds the architecture."""
        return dict(self._config)

    @property
    def needs_tokens(self) -> bool:
        """True when the head reads all backbone tokens (it has blocks), False when pooled features suffice."""
        return self.num_blocks > 0

    def pool(self, cls: torch.Tensor, registers: torch.Tensor | None, patches: torch.Tensor) -> torch.Tensor:
        """Backbone tokens -> ``(B, 2D)`` pooled features (through the blocks if any)."""
        if not self.num_blocks:
            return pooled_features(cls, patches)
        r = 0 if registers is None else registers.shape[1]
        parts = [cls[:, None]] + ([registers] if r else []) + [patches]
        x = torch.cat(parts, dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return pooled_features(x[:, 0], x[:, 1 + r:])

    def forward_pooled(self, pooled: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """``(B, 2D)`` pooled features -> ``(B, out_dim)``."""
        out = self.proj(pooled)
        return F.normalize(out, dim=-1) if normalize else out

    def forward(self, cls: torch.Tensor, registers: torch.Tensor | None, patches: torch.Tensor,
                normalize: bool = True) -> torch.Tensor:
        """CLS ``(B, D)``, registers ``(B, R, D)`` or None, patches ``(B, N, D)`` -> ``(B, out_dim)``."""
        return self.forward_pooled(self.pool(cls, registers, patches), normalize)
