"""Low-rank adapters (LoRA, Hu et al. 2021) on a ViT's linear layers, and their merge for export.

:class:`LoRALinear` wraps a frozen ``nn.Linear`` ``W x + b`` as ``W x + b + (α / r)·B A x`` with
``A`` (r, in) initialised like a linear layer (Kaiming uniform) and ``B`` (out, r) at zero, so
training starts from the backbone's own function. :func:`merge_lora` folds ``(α / r)·B A`` into
``W`` and puts the plain linear layer back: the merged model is an ordinary backbone (same keys
as the original) whose outputs equal the adapted one's up to float rounding.

Examples:
    >>> import torch
    >>> lin = torch.nn.Linear(4, 3)
    >>> m = torch.nn.Sequential(lin)
    >>> add_lora(m, rank=2, alpha=4, targets=("0",))
    ['0']
    >>> with torch.no_grad():
    ...     _ = m[0].lora_b.normal_()
    >>> x = torch.randn(5, 4)
    >>> y = m(x)
    >>> merge_lora(m)
    1
    >>> bool(torch.allclose(m(x), y, atol=1e-6)), type(m[0]).__name__
    (True, 'Linear')
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

# the attention and feed-forward projections of dinolab's ViT blocks (SwiGLU: w1, w2, w3)
DEFAULT_TARGETS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "mlp.w1", "mlp.w2", "mlp.w3")


class LoRALinear(nn.Module):
    """``base(x) + (alpha / rank) · x Aᵀ Bᵀ``; ``base`` stays frozen. Shapes: ``(..., in) -> (..., out)``."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}")
        self.base = base.requires_grad_(False)
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t().to(x.dtype) @ self.lora_b.t().to(x.dtype)) * self.scale

    def delta(self) -> torch.Tensor:
        """``(out, in)``: what merging adds to ``base.weight``."""
        return (self.lora_b.float() @ self.lora_a.float()) * self.scale

    def merged(self) -> nn.Linear:
        """``base`` with the adapter folded into its weight (in place)."""
        with torch.no_grad():
            self.base.weight.add_(self.delta().to(self.base.weight.dtype))
        return self.base


def add_lora(model: nn.Module, rank: int, alpha: float, targets: Sequence[str] = DEFAULT_TARGETS) -> list[str]:
    """Wrap every ``nn.Linear`` of ``model`` whose name ends with one of ``targets``; returns their names."""
    names = [name for name, m in model.named_modules()
             if isinstance(m, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets)]
    for name in names:
        parent, _, attr = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, attr, LoRALinear(getattr(owner, attr), rank, alpha))
    return names


def merge_lora(model: nn.Module) -> int:
    """Replace every :class:`LoRALinear` in ``model`` by its merged linear layer; returns how many."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name, m in found:
        parent, _, attr = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, attr, m.merged())
    return len(found)
