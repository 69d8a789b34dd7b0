import torch
from torch import nn


class LayerScale(nn.Module):
    """Per-channel residual scaling ``x * gamma`` (CaiT; used by DINOv2 and DINOv3).

    Args:
        dim: channel count D.
        init_value: initial value of every entry of ``gamma`` (1e-5 in the DINOv2/v3 recipes).

    Shapes: ``x`` is ``(..., D)``, output has the same shape.
    """

    def __init__(self, dim: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.init_value = init_value
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def reset_parameters(self) -> None:
        nn.init.constant_(self.gamma, self.init_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma
