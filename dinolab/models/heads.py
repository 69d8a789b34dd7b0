"""Projection heads of DINO, iBOT and DINOv2/v3."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WeightNormLinear(nn.Module):
    """A bias-free linear layer with weight normalisation ``W = g * V / ||V||`` (row-wise).

    Parameters are named ``weight_g`` (K, 1) and ``weight_v`` (K, D), the names of the official DINO
    checkpoints (``torch.nn.utils.weight_norm``). With ``g`` fixed at 1 (``norm_last_layer``) the logits
    are cosine similarities between the input and K unit prototypes.

    Shapes: ``(B, D) -> (B, K)``.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        v = nn.Linear(in_features, out_features, bias=False).weight.detach().clone()  # PyTorch default init
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(torch.ones(out_features, 1))

    @property
    def weight(self) -> torch.Tensor:
        return self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class DINOHead(nn.Module):
    """DINO projection head: MLP -> L2-normalised bottleneck -> prototype layer (Caron et al. 2021).

    Args:
        in_dim: backbone width D.
        out_dim: number of prototypes K.
        hidden_dim, bottleneck_dim, nlayers: the MLP (``nlayers`` Linear layers with GELU between them).
        use_bn: BatchNorm after each hidden Linear (DINO v1 option).
        norm_last_layer: freeze the weight-norm gain at 1 (DINO v1; DINOv2 leaves it trainable).
        weight_norm: weight-normalised prototypes (DINO v1/v2); DINOv3 uses a plain Linear.

    Shapes: ``(B, D) -> (B, K)``; :meth:`forward_bottleneck` gives the normalised ``(B, bottleneck_dim)``.

    Examples:
        >>> head = DINOHead(384, 4096, hidden_dim=512, bottleneck_dim=128)
        >>> head(torch.randn(8, 384)).shape
        torch.Size([8, 4096])
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256, nlayers: int = 3,
                 use_bn: bool = False, norm_last_layer: bool = True, weight_norm: bool = True) -> None:
        super().__init__()
        nlayers = max(nlayers, 1)
        if nlayers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim)]
            for _ in range(nlayers - 2):
                layers += [nn.BatchNorm1d(hidden_dim)] if use_bn else []
                layers += [nn.GELU(), nn.Linear(hidden_dim, hidden_dim)]
            layers += [nn.BatchNorm1d(hidden_dim)] if use_bn else []
            layers += [nn.GELU(), nn.Linear(hidden_dim, bottleneck_dim)]
            self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        if weight_norm:
            self.last_layer: nn.Module = WeightNormLinear(bottleneck_dim, out_dim)
            self.last_layer.weight_g.requires_grad = not norm_last_layer
        else:
            self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)
            nn.init.trunc_normal_(self.last_layer.weight, std=0.02)

    def forward_bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        return F.normalize(x, dim=-1, p=2, eps=1e-6 if x.dtype == torch.float16 else 1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(self.forward_bottleneck(x))
