from __future__ import annotations

import torch
from torch import nn

from .attention import Attention
from .drop_path import DropPath, drop_path_scale
from .layer_scale import LayerScale
from .mlp import Mlp, SwiGLU, swiglu_hidden_dim


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``.

    Stochastic depth: rates up to 0.1 (or ``drop_path_mode="sample"``) zero the residual of random
    samples (DropPath); larger rates with ``drop_path_mode="subset"`` compute each residual on a random
    subset of the batch only and add it back scaled by ``B/subset`` (DINOv2's efficient variant, which
    saves compute in proportion to the rate).

    With LayerScale and/or per-sample drop-path, each residual is added as one
    ``torch.addcmul(x, y, scale)``, ``scale`` being ``gamma`` (D,) times the per-sample drop-path
    factor (B, 1, 1): one pass over the tokens instead of up to four, and no temporaries.

    Shapes: ``(B, T, D) -> (B, T, D)``.
    """

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 proj_bias: bool = True, ffn_bias: bool = True, ffn_layer: str = "mlp", swiglu_align: int = 8,
                 layerscale_init: float | None = None, drop_path: float = 0.0, drop_path_mode: str = "auto",
                 mask_k_bias: bool = False, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias, mask_k_bias=mask_k_bias)
        self.ls1 = LayerScale(dim, layerscale_init) if layerscale_init is not None else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        if ffn_layer == "mlp":
            self.mlp = Mlp(dim, int(dim * mlp_ratio), bias=ffn_bias)
        elif ffn_layer == "swiglu":
            self.mlp = SwiGLU(dim, swiglu_hidden_dim(dim, mlp_ratio, swiglu_align), bias=ffn_bias)
        else:
            raise ValueError(f"ffn_layer must be 'mlp' or 'swiglu', got {ffn_layer!r}")
        self.ls2 = LayerScale(dim, layerscale_init) if layerscale_init is not None else nn.Identity()
        self.drop_path_rate = drop_path
        self.subset_drop = drop_path > 0.1 if drop_path_mode == "auto" else drop_path_mode == "subset"
        self.drop_path = DropPath(drop_path) if drop_path > 0 and not self.subset_drop else nn.Identity()

    def _attn_residual(self, x, rope, attn_mask):
        return self.ls1(self.attn(self.norm1(x), rope=rope, attn_mask=attn_mask))

    def _ffn_residual(self, x):
        return self.ls2(self.mlp(self.norm2(x)))

    def _add(self, x: torch.Tensor, y: torch.Tensor, ls: nn.Module) -> torch.Tensor:
        """``x + drop_path(ls(y))``."""
        scale = ls.gamma if isinstance(ls, LayerScale) else None
        if isinstance(self.drop_path, DropPath):
            keep = drop_path_scale(y, self.drop_path.p, self.training)
            if keep is not None:
                scale = keep if scale is None else keep * scale
        return x + y if scale is None else torch.addcmul(x, y, scale)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.training and self.subset_drop and self.drop_path_rate > 0 and attn_mask is None:
            x = _subset_residual(x, lambda y: self._attn_residual(y, rope, None), self.drop_path_rate)
            return _subset_residual(x, self._ffn_residual, self.drop_path_rate)
        x = self._add(x, self.attn(self.norm1(x), rope=rope, attn_mask=attn_mask), self.ls1)
        return self._add(x, self.mlp(self.norm2(x)), self.ls2)


def _subset_residual(x: torch.Tensor, residual, rate: float) -> torch.Tensor:
    b = x.shape[0]
    keep = max(int(b * (1 - rate)), 1)
    idx = torch.randperm(b, device=x.device)[:keep]
    out = residual(x[idx])
    return torch.index_add(x, 0, idx, out.to(x.dtype), alpha=b / keep)
