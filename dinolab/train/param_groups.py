"""Optimizer parameter groups: weight-decay exclusions, layer-wise lr decay, last-layer flag.

Rules (DINO v1 ``get_params_groups`` and DINOv2 ``param_groups.py`` combined):

- **no weight decay** on biases (``*.bias``), on every 1-D parameter (LayerNorm/BatchNorm
  weights, LayerScale ``gamma``) and on names containing ``norm`` or ``gamma``. With
  ``decay_tokens=False`` also on ``cls_token``, ``pos_embed``, ``register_tokens``,
  ``mask_token`` and the weight-norm gain ``weight_g`` (both official code bases decay them);
- **layer-wise lr decay** (DINOv2, backbone only): the tokens and the patch embedding are layer
  0, block ``i`` is layer ``i + 1``, the rest (final norm) layer ``depth + 1``; the lr multiplier
  is ``layerwise_decay ** (depth + 1 - layer)``; heads get 1;
- ``patch_embed`` parameters get an extra ``patch_embed_lr_mult``;
- ``is_last_layer``: names containing ``last_layer`` (the prototypes, frozen at the start).

Parameters with identical ``(lr_multiplier, wd_multiplier, is_last_layer)`` share one group.
Frozen parameters (``requires_grad=False``) are left out.

Examples:
    >>> import torch
    >>> m = torch.nn.ModuleDict({"head": torch.nn.Linear(4, 2)})
    >>> [(g["wd_multiplier"], g["names"]) for g in param_groups(m)]
    [(1.0, ['head.weight']), (0.0, ['head.bias'])]
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

_TOKENS = ("cls_token", "pos_embed", "register_tokens", "mask_token")


def is_no_decay(name: str, ndim: int, decay_tokens: bool = True) -> bool:
    """True if the parameter ``name`` (with ``ndim`` dimensions) gets no weight decay."""
    last = name.rsplit(".", 1)[-1]
    if name.endswith(".bias") or ndim <= 1 or "norm" in name or "gamma" in last:
        return True
    return not decay_tokens and (last in _TOKENS or last == "weight_g")


def backbone_layer_id(name: str, depth: int) -> int:
    """Layer index of a backbone parameter for layer-wise lr decay (0 .. depth + 1)."""
    if name.split(".", 1)[0] in _TOKENS or name.startswith("patch_embed"):
        return 0
    match = re.match(r"blocks\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    return depth + 1


def param_groups(model: nn.Module, *, backbone_key: str = "backbone", depth: int | None = None,
                 layerwise_decay: float = 1.0, patch_embed_lr_mult: float = 1.0,
                 decay_tokens: bool = True) -> list[dict[str, Any]]:
    """Groups for ``torch.optim`` from a model whose backbone parameters start with ``backbone_key.``.

    Each group has ``params``, ``names``, ``lr_multiplier``, ``wd_multiplier`` and ``is_last_layer``;
    the trainer sets ``lr = lr_now * lr_multiplier`` and ``weight_decay = wd_now * wd_multiplier``.
    """
    prefix = backbone_key + "."
    if depth is None:
        backbone = getattr(model, backbone_key, None) if isinstance(model, nn.ModuleDict) else None
        depth = getattr(backbone, "depth", 0)
    groups: dict[tuple[float, float, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lr_mult = 1.0
        if name.startswith(prefix):
            inner = name[len(prefix):]
            lr_mult = layerwise_decay ** (depth + 1 - backbone_layer_id(inner, depth))
            if inner.startswith("patch_embed"):
                lr_mult *= patch_embed_lr_mult
        wd_mult = 0.0 if is_no_decay(name, p.ndim, decay_tokens) else 1.0
        key = (lr_mult, wd_mult, "last_layer" in name)
        group = groups.setdefault(key, {"params": [], "names": [], "lr_multiplier": key[0],
                                        "wd_multiplier": key[1], "is_last_layer": key[2]})
        group["params"].append(p)
        group["names"].append(name)
    return list(groups.values())
