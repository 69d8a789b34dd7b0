import torch
from torch import nn


def drop_path_scale(x: torch.Tensor, p: float, training: bool) -> torch.Tensor | None:
    """The per-sample factor of stochastic depth: ``(B, 1, ..., 1)`` holding 0 or ``1/(1-p)``; None when inactive.

    ``x`` is ``(B, ...)``; the same Bernoulli draw covers every other dimension of a sample.
    """
    if p == 0.0 or not training:
        return None
    keep = 1.0 - p
    return x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep).div_(keep)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero the whole residual of a random subset of samples, rescale the rest by 1/(1-p).

    ``x`` is ``(B, ...)``. The rescale is folded into the (B, 1, ..., 1) mask: one pass over ``x``.
    """
    scale = drop_path_scale(x, p, training)
    return x if scale is None else x * scale


class DropPath(nn.Module):
    """Per-sample stochastic depth (Huang et al. 2016), as in DINO v1 and DINOv2 for rates <= 0.1."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
