"""Named architectures: generic ViT sizes and every released DINO / DINOv2 / DINOv3 backbone.

``create_model`` builds the architecture only (randomly initialised); weights come from
:func:`dinolab.load_model`. Generic names (``vit_small`` ...) use DINO v1 defaults (patch 16,
learned position embedding) and accept any :class:`VisionTransformer` keyword as an override.
"""

from __future__ import annotations

import difflib
from typing import Any

from ..errors import ConfigError
from .vit import VisionTransformer

SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
    "large": dict(embed_dim=1024, depth=24, num_heads=16),
    "giant": dict(embed_dim=1536, depth=40, num_heads=24, ffn_layer="swiglu"),  # DINOv2 "giant2"
}

_V1 = dict(img_size=224, pos_embed_type="learned", interpolate_offset=0.1, norm_eps=1e-6)
_V2 = dict(img_size=518, patch_size=14, pos_embed_type="learned", layerscale_init=1.0, norm_eps=1e-6,
           interpolate_offset=0.1, interpolate_antialias=False)
_V2_REG = dict(_V2, num_register_tokens=4, interpolate_offset=0.0, interpolate_antialias=True)
_V3 = dict(img_size=224, patch_size=16, pos_embed_type="rope", rope_base=100.0, rope_rescale_coords=2.0,
           num_register_tokens=4, layerscale_init=1e-5, mask_k_bias=True, norm_eps=1e-5)

PRESETS: dict[str, dict[str, Any]] = {
    **{f"vit_{s}": dict(_V1, patch_size=16, **kw) for s, kw in SIZES.items()},
    "dino_vits16": dict(_V1, patch_size=16, **SIZES["small"]),
    "dino_vits8": dict(_V1, patch_size=8, **SIZES["small"]),
    "dino_vitb16": dict(_V1, patch_size=16, **SIZES["base"]),
    "dino_vitb8": dict(_V1, patch_size=8, **SIZES["base"]),
    **{f"dinov2_vit{s[0]}14": dict(_V2, **SIZES[s]) for s in ("small", "base", "large", "giant")},
    **{f"dinov2_vit{s[0]}14_reg": dict(_V2_REG, **SIZES[s]) for s in ("small", "base", "large", "giant")},
    "dinov3_vits16": dict(_V3, **SIZES["small"]),
    "dinov3_vits16plus": dict(_V3, **SIZES["small"], ffn_layer="swiglu", mlp_ratio=6.0),
    "dinov3_vitb16": dict(_V3, **SIZES["base"]),
    "dinov3_vitl16": dict(_V3, **SIZES["large"]),
    "dinov3_vitl16plus": dict(_V3, **SIZES["large"], ffn_layer="swiglu", mlp_ratio=6.0),
    "dinov3_vith16plus": dict(_V3, embed_dim=1280, depth=32, num_heads=20, ffn_layer="swiglu", mlp_ratio=6.0),
    "dinov3_vit7b16": dict(_V3, embed_dim=4096, depth=40, num_heads=32, ffn_layer="swiglu", mlp_ratio=3.0,
                           swiglu_align=64, qkv_bias=False, untie_local_cls_norm=True),
}


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(PRESETS)


def preset_config(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known names: {', '.join(list_models())}"
        raise ConfigError(f"unknown model name {name!r}{hint}")
    return dict(PRESETS[name])


def create_model(name: str, **overrides: Any) -> VisionTransformer:
    """Build a randomly initialised backbone by name, with keyword overrides.

    Examples:
        >>> m = create_model("vit_tiny", patch_size=8, img_size=32, depth=2)
        >>> m.embed_dim, m.depth
        (192, 2)
    """
    cfg = preset_config(name)
    cfg.update(overrides)
    try:
        return VisionTransformer(**cfg)
    except TypeError as e:
        raise ConfigError(f"invalid option for model {name!r}: {e}") from e
