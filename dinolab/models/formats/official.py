"""Official DINO v1 / DINOv2 / DINOv3 weights: hub ``.pth`` backbones and training checkpoints.

Layouts read (dino_v1.md §1.3/§1.12, dinov2.md §3.7, dinov3_and_ecosystem.md §1.8/§3.1):

- hub backbones: a flat state dict with the canonical names, except DINOv3's ``storage_tokens``
  (= ``register_tokens``) and DINOv2 ViT-g's packed SwiGLU ``mlp.w12`` (= ``[w1; w2]``);
- DINO v1 training checkpoints: ``{"teacher": {"backbone.*", "head.*"}, "student": {"module.backbone.*",
  "module.head.*"}, "optimizer", "epoch", "args", ...}``;
- DINOv2/v3 training checkpoints: ``{"teacher": {"backbone.*", "dino_head.*", "ibot_head.*"}}`` and
  ``{"model": {"teacher.backbone.*", "student.backbone.*", ...}, "iteration": ...}``;
- DINOv2 ``block_chunks`` names ``blocks.<chunk>.<i>.*``; ``torch.compile``'s ``_orig_mod.`` prefix.

The teacher is taken by default (the released backbones are teachers); heads are dropped.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from ...errors import WeightsError

_WRAPPERS = ("module.", "_orig_mod.")
_HEAD_PREFIXES = ("head.", "heads.", "dino_head.", "ibot_head.", "fc.")
_CHUNKED = re.compile(r"^blocks\.\d+\.(\d+)\.")


def select_backbone_dict(obj: Any, path: str, checkpoint_key: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """Find the backbone state dict inside a loaded ``.pth`` object.

    Returns ``(state_dict, where)`` with ``where`` describing the entry used (e.g. ``"teacher"``).
    Keys still carry their prefixes; see :func:`to_canonical`.
    """
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a dict of tensors (a state dict or a training checkpoint), "
                           f"found a {type(obj).__name__}")
    if checkpoint_key is not None:
        if isinstance(obj.get(checkpoint_key), Mapping):
            return _tensors(obj[checkpoint_key]), checkpoint_key
        inner = obj.get("model")
        if isinstance(inner, Mapping) and any(str(k).startswith(checkpoint_key + ".") for k in inner):
            return _tensors(_strip(inner, checkpoint_key + ".")), f"model/{checkpoint_key}"
        raise WeightsError(f"{path}: no entry {checkpoint_key!r} in this checkpoint; its top-level keys are "
                           f"{_preview(obj)}. Pass checkpoint_key= one of those (e.g. 'teacher' or 'student')")
    if _has_tensors(obj):
        return _tensors(obj), "state dict"
    for key in ("teacher", "model", "state_dict", "model_ema"):
        inner = obj.get(key)
        if not isinstance(inner, Mapping):
            continue
        if key == "model" and any(str(k).startswith("teacher.") for k in inner):
            return _tensors(_strip(inner, "teacher.")), "model/teacher"
        return _tensors(inner), key
    raise WeightsError(f"{path}: found no tensors and no 'teacher'/'model'/'state_dict' entry; top-level keys: "
                       f"{_preview(obj)}. This is not a DINO/DINOv2/DINOv3 checkpoint dinolab knows; pass "
                       f"checkpoint_key= to pick the entry holding the backbone")


def to_canonical(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrappers and heads and rename official keys to :class:`VisionTransformer` names."""
    keys = {}
    for k in sd:
        name = k
        while name.startswith(_WRAPPERS):
            name = name.split(".", 1)[1]
        keys[k] = name
    if any("backbone." in n for n in keys.values()):  # a backbone next to heads: keep the backbone only
        keys = {k: n.split("backbone.", 1)[1] for k, n in keys.items() if "backbone." in n}
    else:
        keys = {k: n for k, n in keys.items() if not n.startswith(_HEAD_PREFIXES)}
    out: dict[str, torch.Tensor] = {}
    for k, name in keys.items():
        v = sd[k]
        name = _CHUNKED.sub(r"blocks.\1.", name)
        if name == "storage_tokens":
            name = "register_tokens"
        elif name == "mask_token" and v.ndim == 3:
            v = v.reshape(1, -1)
        if ".mlp.w12." in name:  # DINOv2 packed SwiGLU: rows [w1; w2]
            w1, w2 = v.chunk(2, dim=0)
            out[name.replace(".w12.", ".w1.")] = w1
            out[name.replace(".w12.", ".w2.")] = w2
            continue
        out[name] = v
    return out


def from_canonical(sd: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The official layout of a canonical state dict: DINOv3 for RoPE models, DINOv2 otherwise,
    DINO v1 (no mask token) for plain ViTs without LayerScale, registers or SwiGLU."""
    rope = config.get("pos_embed_type") == "rope"
    v1 = (not rope and config.get("layerscale_init") is None and not config.get("num_register_tokens")
          and config.get("ffn_layer", "mlp") == "mlp")
    out: dict[str, torch.Tensor] = {}
    for name, v in sd.items():
        if rope and name == "register_tokens":
            name = "storage_tokens"
        if v1 and name == "mask_token":
            continue
        if not rope and ".mlp.w1." in name:
            out[name.replace(".w1.", ".w12.")] = torch.cat([v, sd[name.replace(".w1.", ".w2.")]], dim=0)
            continue
        if not rope and ".mlp.w2." in name:
            continue
        out[name] = v
    return out


def _has_tensors(obj: Mapping) -> bool:
    return any(isinstance(v, torch.Tensor) for v in obj.values()) and not any(
        isinstance(obj.get(k), Mapping) for k in ("teacher", "student", "model"))


def _tensors(obj: Mapping) -> dict[str, torch.Tensor]:
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _strip(obj: Mapping, prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in obj.items() if str(k).startswith(prefix)}


def _preview(obj: Mapping, n: int = 8) -> str:
    keys = [str(k) for k in obj]
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")
