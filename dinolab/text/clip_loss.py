"""Symmetric contrastive (CLIP / InfoNCE) loss with a learnable temperature.

For L2-normalised image embeddings ``u`` ``(B, E)`` and text embeddings ``v`` ``(B, E)`` where
row ``i`` of each is a matching pair, and ``s = exp(min(logit_scale, log 100))``::

    logits = s * u @ v.T                      # (B, B)
    loss   = (CE(logits, arange(B)) + CE(logits.T, arange(B))) / 2

``logit_scale`` starts at ``log(1/0.07)`` (CLIP, dino.txt) and the scale is capped at 100, as in
CLIP, so the temperature cannot collapse. There is no logit bias.

Repeated captions: with ``groups`` (one id per pair, e.g. the index of its caption string),
pairs of a batch with the same id all count as matches. The targets of row ``i`` are then
uniform over ``{j : groups[j] == groups[i]}`` (soft cross-entropy) instead of ``j = i`` alone, so
two images with the same caption are not pushed apart. With all ids distinct this is exactly
the loss above.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

INIT_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOGIT_SCALE = math.log(100.0)


def clip_loss(img_emb: torch.Tensor, txt_emb: torch.Tensor, logit_scale: torch.Tensor | float,
              groups: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE of matching rows (see the module doc).

    Args:
        img_emb: ``(B, E)`` L2-normalised image embeddings.
        txt_emb: ``(B, E)`` L2-normalised text embeddings; row ``i`` describes image ``i``.
        logit_scale: log of the inverse temperature (a scalar tensor or float), clamped at ``log 100``.
        groups: optional ``(B,)`` ids; pairs with equal ids all count as matches (repeated captions).

    Returns:
        the scalar loss.

    Examples:
        >>> u = F.normalize(torch.randn(4, 8), dim=-1)
        >>> clip_loss(u, u, INIT_LOGIT_SCALE) < clip_loss(u, u.flip(0), INIT_LOGIT_SCALE)
        tensor(True)
    """
    if img_emb.shape != txt_emb.shape or img_emb.ndim != 2:
        raise ValueError(f"expected two (B, E) tensors of one shape, got {tuple(img_emb.shape)} and "
                         f"{tuple(txt_emb.shape)}")
    scale = torch.as_tensor(logit_scale, dtype=torch.float32, device=img_emb.device).clamp(max=MAX_LOGIT_SCALE).exp()
    logits = scale * img_emb.float() @ txt_emb.float().T
    if groups is None:
        target = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    same = (groups[:, None] == groups[None, :]).float()
    target = same / same.sum(dim=1, keepdim=True)  # symmetric, so it serves both directions
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class ClipLoss(nn.Module):
    """:func:`clip_loss` with its own learnable ``logit_scale`` parameter (init ``log(1/0.07)``).

    Attributes:
        logit_scale: scalar parameter, the log inverse temperature.

    Examples:
        >>> loss_fn = ClipLoss()
        >>> u = F.normalize(torch.randn(4, 8), dim=-1)
        >>> loss_fn(u, u).shape, round(loss_fn.scale, 2)
        (torch.Size([]), 14.29)
    """

    def __init__(self, init_logit_scale: float = INIT_LOGIT_SCALE) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))

    @property
    def scale(self) -> float:
        """The inverse temperature in use, ``exp(min(logit_scale, log 100))``."""
        return math.exp(min(float(self.logit_scale.detach()), MAX_LOGIT_SCALE))

    def forward(self, img_emb: torch.Tensor, txt_emb: torch.Tensor) -> torch.Tensor:
        """``(B, E)``, ``(B, E)`` -> scalar loss."""
        return clip_loss(img_emb, txt_emb, self.logit_scale)
