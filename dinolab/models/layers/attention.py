from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .rope import apply_rope


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention, ``(B, heads, T, head_dim)`` each -> ``(B, heads, T, head_dim)``.

    ``F.scaled_dot_product_attention``, except for bfloat16 on a CPU: there the explicit
    ``softmax(q k^T / sqrt(d)) v`` (two oneDNN bf16 matrix products; the CPU softmax accumulates in
    float32) is 1.4-1.7x faster than PyTorch's CPU flash kernel at ViT token counts, forward and backward,
    and up to 6x for local crops (37 tokens). ``attn_mask`` is boolean (True = attend) or additive.
    """
    if q.device.type != "cpu" or q.dtype != torch.bfloat16:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if attn_mask is not None:
        logits = (logits.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool
                  else logits + attn_mask)
    return logits.softmax(dim=-1) @ v


class KMaskedBiasLinear(nn.Linear):
    """The fused qkv projection of DINOv3: its bias is multiplied by a buffer that is 0 on the K third.

    A key bias adds the same amount to every logit of a query and cancels in the softmax, so DINOv3
    drops it; the buffer keeps the official checkpoint layout (``qkv.bias_mask``) loadable.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.register_buffer("bias_mask", torch.ones(out_features) if bias else None)
        if bias:
            self.reset_bias_mask()

    def reset_bias_mask(self) -> None:
        d = self.out_features // 3
        self.bias_mask.fill_(1.0)
        self.bias_mask[d:2 * d] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias * self.bias_mask.to(self.bias.dtype)
        return F.linear(x, self.weight, bias)


class Attention(nn.Module):
    """Multi-head self-attention through :func:`attend` (``F.scaled_dot_product_attention`` but on CPU bf16).

    One fused ``qkv`` projection (rows ordered ``[q; k; v]``), optional rotary embedding of the patch
    tokens' queries and keys, then ``proj``.

    Shapes: ``x`` ``(B, T, D)`` -> ``(B, T, D)``; ``rope`` is ``(sin, cos)`` of shape ``(N, head_dim)``
    for the last N tokens; ``attn_mask`` is broadcastable to ``(B, heads, T, T)`` (True = attend).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True,
                 mask_k_bias: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        linear = KMaskedBiasLinear if (mask_k_bias and qkv_bias) else nn.Linear
        self.qkv = linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def _qkv(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None):
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return q, k, v

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self._qkv(x, rope)
        out = attend(q, k, v, attn_mask)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))

    def attention_map(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """The softmaxed attention weights ``(B, heads, T, T)`` (computed explicitly, for visualisation)."""
        q, k, _ = self._qkv(x, rope)
        logits = (q.float() @ k.float().transpose(-2, -1)) * self.head_dim ** -0.5
        return logits.softmax(dim=-1)
