"""A small transformer text tower trained from scratch (LiT / dino.txt style).

Token embedding + learned position embedding, ``depth`` pre-norm blocks (dinolab's
:class:`~dinolab.models.layers.Block`), a final LayerNorm, the feature at the ``<eos>`` token,
then a bias-free linear projection to the joint embedding dimension, L2-normalised.

Attention is **causal** by default (as CLIP and dino.txt's text tower): position ``t`` sees
positions ``<= t``, so the ``<eos>`` feature summarises the whole caption and padding after it
has no effect. ``causal=False`` gives bidirectional attention with padded positions masked out
as keys; the ``<eos>`` pooling is the same.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models.layers import Block


class TextEncoder(nn.Module):
    """Token ids ``(B, L)`` -> text embeddings ``(B, out_dim)`` (L2-normalised).

    Args:
        vocab_size: number of token ids (the tokenizer's ``len``).
        out_dim: joint image-text embedding dimension.
        context_length: longest sequence (size of the position table).
        width, depth, num_heads, mlp_ratio: transformer shape.
        causal: causal (default) or bidirectional attention (see the module doc).
        eos_id, pad_id: the tokenizer's ``<eos>`` and ``<pad>`` ids.

    Examples:
        >>> enc = TextEncoder(vocab_size=20, out_dim=16, context_length=8, width=32, depth=1, num_heads=2)
        >>> ids = torch.tensor([[1, 5, 6, 2, 0, 0, 0, 0]])
        >>> enc(ids).shape, round(enc(ids).norm().item(), 4)
        (torch.Size([1, 16]), 1.0)
    """

    def __init__(self, vocab_size: int, out_dim: int, *, context_length: int = 32, width: int = 128, depth: int = 2,
                 num_heads: int = 4, mlp_ratio: float = 4.0, causal: bool = True, eos_id: int = 2,
                 pad_id: int = 0) -> None:
        super().__init__()
        self._config = dict(vocab_size=vocab_size, out_dim=out_dim, context_length=context_length, width=width,
                            depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, causal=causal, eos_id=eos_id,
                            pad_id=pad_id)
        self.context_length, self.causal, self.eos_id, self.pad_id = context_length, causal, eos_id, pad_id
        self.token_embed = nn.Embedding(vocab_size, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, context_length, width))
        self.blocks = nn.ModuleList(Block(width, num_heads, mlp_ratio=mlp_ratio, norm_eps=1e-5) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-5)
        self.proj = nn.Linear(width, out_dim, bias=False)
        self._init_weights()

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments: ``TextEncoder(**enc.config)`` rebuilds the architecture."""
        return dict(self._config)

    def _init_weights(self) -> None:
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.01)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def attention_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """Boolean mask (True = may attend): ``(L, L)`` causal, or ``(B, 1, 1, L)`` over non-pad keys."""
        length = ids.shape[1]
        if self.causal:
            return torch.ones(length, length, dtype=torch.bool, device=ids.device).tril()
        return (ids != self.pad_id)[:, None, None, :]

    def eos_positions(self, ids: torch.Tensor) -> torch.Tensor:
        """``(B,)`` index of the first ``<eos>`` of each row (the last position if a row has none)."""
        is_eos = ids == self.eos_id
        first = is_eos.int().argmax(dim=1)
        return torch.where(is_eos.any(dim=1), first, torch.full_like(first, ids.shape[1] - 1))

    def forward(self, ids: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """``(B, L)`` long token ids (``L <= context_length``) -> ``(B, out_dim)``."""
        if ids.shape[1] > self.context_length:
            raise ValueError(f"sequences of {ids.shape[1]} tokens exceed context_length={self.context_length}")
        x = self.token_embed(ids) + self.pos_embed[:, : ids.shape[1]]
        mask = self.attention_mask(ids)
        for blk in self.blocks:
            x = blk(x, attn_mask=mask)
        x = self.norm(x)
        pooled = x[torch.arange(x.shape[0], device=x.device), self.eos_positions(ids)]
        out = self.proj(pooled)
        return F.normalize(out, dim=-1) if normalize else out
