"""The KoLeo (Kozachenko-Leonenko) spreading regulariser.

Sablayrolles et al. 2019, "Spreading vectors for similarity search"; used on the backbone CLS token
by Oquab et al. 2023 (DINOv2) and Siméoni et al. 2025 (DINOv3):
``L = -(1/n) Σ_i log min_{j≠i} ||x_i - x_j||`` on L2-normalised features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Minus the mean log distance of each L2-normalised row to its nearest other row.

    Always computed in float32 with autocast off, whatever the input dtype: the reference's
    ``log(d + 1e-8)`` in fp16 underflows to ``log(0)`` for exact duplicates. Distances are clamped at
    ``eps``, so duplicate rows give a finite loss (``-log eps`` for them) and zero, not NaN, gradient;
    near-duplicates give finite gradients. A batch of fewer than 2 rows has no neighbours and gives 0.

    Shapes: ``x (B, D)`` -> scalar float32.
    """
    if x.dim() != 2:
        raise ValueError(f"koleo_loss expects (B, D) features, got shape {tuple(x.shape)}")
    if x.shape[0] < 2:
        return x.float().sum() * 0.0  # keeps the graph, so `total.backward()` still works
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = F.normalize(x.float(), p=2, dim=-1, eps=eps)
        with torch.no_grad():
            cos = x @ x.T
            cos.fill_diagonal_(-float("inf"))  # a row is not its own neighbour
            nearest = cos.argmax(dim=1)
        sq_dist = (x - x[nearest]).square().sum(dim=-1)
        # sqrt after the clamp: finite value and zero gradient at distance 0 (sqrt'(0) is inf)
        dist = sq_dist.clamp(min=eps * eps).sqrt()
        return -torch.log(dist).mean()


class KoLeoLoss(nn.Module):
    """KoLeo regulariser (Sablayrolles et al. 2019; DINOv2/v3 ``KoLeoLoss``), see :func:`koleo_loss`.

    DINOv2 applies it, weight 0.1, to the pre-head CLS token of each global crop separately, per process.

    Shapes: ``(B, D) -> ()``.

    Examples:
        >>> koleo = KoLeoLoss()
        >>> cls = torch.randn(16, 384, requires_grad=True)
        >>> loss = koleo(cls)
        >>> loss.backward()
        >>> bool(torch.isfinite(cls.grad).all())
        True
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return koleo_loss(x, eps=self.eps)
