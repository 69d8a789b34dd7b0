"""What each fine-tuning mode trains, and the optimizer groups for it.

======== ==========================================================================================
head     the linear head; the backbone frozen (its features can be computed once)
last:N   the head, the last N blocks and the final norm; the rest frozen
lora     the head and rank-r adapters on every block's qkv / proj / fc1 / fc2 (:mod:`.lora`)
full     every parameter, the backbone with layer-wise learning-rate decay (DINOv2's rule, shared
         with pretraining: :func:`dinolab.train.param_groups.param_groups`) and drop-path
======== ==========================================================================================

Examples:
    >>> from dinolab.models import VisionTransformer
    >>> bb = VisionTransformer(img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    >>> set_trainable(bb, "last", 1, rank=4, alpha=8)
    >>> sorted({n.split(".")[0] + (n.split(".")[1] if n.startswith("blocks") else "")
    ...         for n, p in bb.named_parameters() if p.requires_grad})
    ['blocks1', 'norm']
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import ConfigError
from ..train.param_groups import is_no_decay, param_groups
from .lora import add_lora


def set_trainable(backbone: nn.Module, kind: str, n_last: int = 0, *, rank: int = 8, alpha: float = 16.0) -> None:
    """Freeze ``backbone`` and unfreeze (or add, for lora) what mode ``kind`` trains, in place."""
    backbone.requires_grad_(kind == "full")
    if kind == "last":
        depth = len(backbone.blocks)
        if n_last > depth:
            raise ConfigError(f"mode=last:{n_last} asks for more blocks than the backbone has ({depth}); use "
                              f"last:{depth} or full")
        for blk in backbone.blocks[depth - n_last:]:
            blk.requires_grad_(True)
        backbone.norm.requires_grad_(True)
    elif kind == "lora":
        if not add_lora(backbone, rank, alpha):
            raise ConfigError("mode=lora found no attention / feed-forward linear layers in the backbone")


def optimizer_groups(backbone: nn.Module, head: nn.Module, *, lr: float, head_lr: float, weight_decay: float,
                     layer_decay: float = 1.0) -> list[dict[str, Any]]:
    """AdamW groups, each with ``base_lr`` (its peak; the schedule scales it) and ``weight_decay``."""
    groups = []
    wrapped = nn.ModuleDict({"backbone": backbone})
    for g in param_groups(wrapped, depth=len(backbone.blocks), layerwise_decay=layer_decay):
        groups.append({"params": g["params"], "base_lr": lr * g["lr_multiplier"],
                       "weight_decay": weight_decay * g["wd_multiplier"]})
    decay = [p for n, p in head.named_parameters() if not is_no_decay(n, p.ndim)]
    no_decay = [p for n, p in head.named_parameters() if is_no_decay(n, p.ndim)]
    groups += [{"params": decay, "base_lr": head_lr, "weight_decay": weight_decay},
               {"params": no_decay, "base_lr": head_lr, "weight_decay": 0.0}]
    for g in groups:
        g["lr"] = g["base_lr"]
    return [g for g in groups if g["params"]]
