import math

import torch
import torch.nn.functional as F
from torch import nn


class Mlp(nn.Module):
    """Transformer feed-forward block ``fc2(gelu(fc1(x)))``.

    Shapes: ``(..., D) -> (..., D)``; the hidden width is ``hidden_dim``.
    """

    def __init__(self, dim: int, hidden_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def swiglu_hidden_dim(dim: int, mlp_ratio: float, align: int = 8) -> int:
    """Hidden width of the SwiGLU FFN: two thirds of ``mlp_ratio * dim``, rounded up to ``align``.

    This single rule gives DINOv2 ViT-g's 4096 (D=1536, ratio 4, align 8), DINOv3 ViT-S+'s 1536
    (D=384, ratio 6) and ViT-7B's 8192 (D=4096, ratio 3, align 64).
    """
    hidden = int(int(dim * mlp_ratio) * 2 / 3)
    return int(math.ceil(hidden / align) * align)


class SwiGLU(nn.Module):
    """Gated feed-forward block ``w3(silu(w1 x) * w2 x)`` (Shazeer 2020).

    DINOv2 stores ``w1`` and ``w2`` packed as one ``w12`` layer; DINOv3 stores them apart, as here.

    Shapes: ``(..., D) -> (..., D)``.
    """

    def __init__(self, dim: int, hidden_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.w2 = nn.Linear(dim, hidden_dim, bias=bias)
        self.w3 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))
