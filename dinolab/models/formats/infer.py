"""The architecture of a canonical state dict, read from its tensor shapes.

What the shapes say: width D (``cls_token``), depth (block indices), patch size and input channels
(``patch_embed.proj.weight``), the training grid (``pos_embed`` rows -> ``img_size``), registers,
MLP vs SwiGLU and its hidden width, LayerScale, biases, learned vs RoPE positions, K-bias masking
(``qkv.bias_mask``) and an untied local-crop CLS norm.

What they do not say, and the rules used:

- **heads**: from RoPE ``periods`` when present (``head_dim = 4 * len(periods)``); otherwise the
  released models' table (192->3, 384->6, 768->12, 1024->16, 1280->20, 1536->24, 4096->32), else D/64
  (head dim 64). Pass ``num_heads=`` to override for other models.
- **family defaults** (LayerNorm eps, position-embedding resize, LayerScale init, RoPE training
  augmentation) come from the released presets: DINO v1 and DINOv2 eps 1e-6 and resize with offset
  0.1, DINOv2 with registers offset 0 + antialias, DINOv3 eps 1e-5.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

import torch

from ...errors import WeightsError
from ..layers import swiglu_hidden_dim
from ..presets import preset_config

KNOWN_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 20, 1536: 24, 4096: 32}
FAMILY_PRESETS = {"dino": "dino_vits16", "dinov2": "dinov2_vits14", "dinov2_reg": "dinov2_vits14_reg",
                  "dinov3": "dinov3_vits16"}
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def detect_family(sd: Mapping[str, torch.Tensor]) -> str:
    """``"dino"`` | ``"dinov2"`` | ``"dinov2_reg"`` | ``"dinov3"`` for a canonical state dict."""
    if "pos_embed" not in sd:
        return "dinov3"
    if "register_tokens" in sd:
        return "dinov2_reg"
    if "mask_token" in sd or "blocks.0.ls1.gamma" in sd or "blocks.0.mlp.w1.weight" in sd:
        return "dinov2"
    return "dino"


def infer_config(sd: Mapping[str, torch.Tensor], family: str | None = None, path: str = "",
                 num_heads: int | None = None) -> dict[str, Any]:
    """:class:`VisionTransformer` keyword arguments that fit the tensors of ``sd``.

    Raises :class:`WeightsError` (naming ``path`` and the keys) when ``sd`` is not a ViT backbone.
    """
    where = f"{path}: " if path else ""
    required = ("cls_token", "patch_embed.proj.weight", "norm.weight")
    missing = [k for k in required if k not in sd]
    if missing:
        raise WeightsError(f"{where}not a ViT backbone state dict: missing {', '.join(missing)}; found keys like "
                           f"{', '.join(list(sd)[:6])}. Supported: dinolab, DINO v1/v2/v3 official .pth, "
                           f"Hugging Face Dinov2/DINOv3 folders")
    family = family or detect_family(sd)
    cfg = preset_config(FAMILY_PRESETS[family])
    dim = sd["cls_token"].shape[-1]
    proj = sd["patch_embed.proj.weight"]
    depth = 1 + max((int(m.group(1)) for k in sd if (m := _BLOCK.match(k))), default=-1)
    if depth == 0:
        raise WeightsError(f"{where}no transformer blocks (keys 'blocks.<i>.*') in this state dict")
    b = "blocks.0."
    cfg.update(embed_dim=dim, depth=depth, patch_size=proj.shape[-1], in_chans=proj.shape[1],
               num_register_tokens=sd["register_tokens"].shape[1] if "register_tokens" in sd else 0,
               qkv_bias=b + "attn.qkv.bias" in sd, proj_bias=b + "attn.proj.bias" in sd,
               mask_k_bias=b + "attn.qkv.bias_mask" in sd, untie_local_cls_norm="local_cls_norm.weight" in sd)
    if proj.shape[-1] != proj.shape[-2]:
        raise WeightsError(f"{where}patch_embed.proj.weight has non-square patches {tuple(proj.shape[-2:])}")

    if "pos_embed" in sd:
        n = sd["pos_embed"].shape[1] - 1
        side = math.isqrt(n)
        if side * side != n:
            raise WeightsError(f"{where}pos_embed has {n} patch rows, not a square grid; dinolab needs a square "
                               f"training grid")
        cfg.update(pos_embed_type="learned", img_size=side * cfg["patch_size"])
    else:
        cfg["pos_embed_type"] = "rope"

    periods = sd.get("rope_embed.periods")
    if num_heads is None and periods is not None:
        num_heads = dim // (4 * periods.numel())
    if num_heads is None:
        num_heads = KNOWN_HEADS.get(dim) or (dim // 64 if dim % 64 == 0 else None)
    if not num_heads or dim % num_heads:
        raise WeightsError(f"{where}cannot tell the number of attention heads of a width-{dim} model from its "
                           f"shapes; pass num_heads=<heads> (e.g. load_model(path, num_heads=...))")
    cfg["num_heads"] = num_heads
    if periods is not None and periods.numel() > 1 and not periods.is_meta:
        head_dim = dim // num_heads
        cfg["rope_base"] = float(f"{float(periods[1]) ** (head_dim / 4):.6g}")

    if b + "mlp.w1.weight" in sd:
        hidden = sd[b + "mlp.w1.weight"].shape[0]
        ratio, align = swiglu_ratio(dim, hidden)
        cfg.update(ffn_layer="swiglu", mlp_ratio=ratio, swiglu_align=align, ffn_bias=b + "mlp.w1.bias" in sd)
    elif b + "mlp.fc1.weight" in sd:
        hidden = sd[b + "mlp.fc1.weight"].shape[0]
        cfg.update(ffn_layer="mlp", mlp_ratio=mlp_ratio(dim, hidden), ffn_bias=b + "mlp.fc1.bias" in sd)
    else:
        raise WeightsError(f"{where}block 0 has neither mlp.fc1 nor mlp.w1/w12 weights; unknown feed-forward layout")

    if b + "ls1.gamma" in sd:
        cfg["layerscale_init"] = cfg.get("layerscale_init") or 1.0
    else:
        cfg["layerscale_init"] = None
    return cfg


def mlp_ratio(dim: int, hidden: int) -> float:
    """A ratio r with ``int(dim * r) == hidden`` (the MLP rule)."""
    r = hidden / dim
    return r if int(dim * r) == hidden else (hidden + 0.5) / dim


def swiglu_ratio(dim: int, hidden: int) -> tuple[float, int]:
    """``(mlp_ratio, align)`` for which :func:`swiglu_hidden_dim` gives ``hidden``."""
    base = hidden * 3 // 2
    for align in (8, 64, 1):
        for num in sorted(range(base - 3, base + 4), key=lambda n: abs(n - base)):
            r = num / dim
            if swiglu_hidden_dim(dim, r, align) == hidden:
                return r, align
    raise WeightsError(f"no SwiGLU ratio gives hidden width {hidden} for width {dim}")
