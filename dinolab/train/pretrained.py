"""Start pretraining from released weights (``model.pretrained=PATH``).

The file may be anything :func:`dinolab.load_model` reads (dinolab, official DINO/DINOv2/DINOv3
``.pth``, Hugging Face). Its architecture must be the one the config asks for: a mismatch (width,
depth, heads, patch size, FFN, registers, position embedding, ...) is an error that lists the
differences and names the preset that matches the file. The backbone keeps the file's own
position-embedding table and resize rule; the trainer's heads start fresh.

Examples:
    >>> backbone = load_pretrained_backbone("dinov2_vits14_pretrain.pth", "dinov2_vits14",
    ...                                     {"drop_path_rate": 0.1})  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import ConfigError
from ..models import VisionTransformer
from ..models.presets import PRESETS, preset_config

# Options that change the tensors or the computation; img_size (the table size) and the
# interpolation details are taken from the file.
STRUCTURAL = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "ffn_layer", "qkv_bias", "proj_bias",
              "ffn_bias", "num_register_tokens", "pos_embed_type", "layerscale", "mask_k_bias",
              "untie_local_cls_norm", "in_chans")

_DEFAULTS = {k: p.default for k, p in inspect.signature(VisionTransformer.__init__).parameters.items()
             if k != "self"}


def _structure(config: dict[str, Any]) -> dict[str, Any]:
    full = {**_DEFAULTS, **config}
    full["layerscale"] = full.get("layerscale_init") is not None
    full["mlp_ratio"] = float(full["mlp_ratio"])
    return {k: full.get(k) for k in STRUCTURAL}


def matching_presets(config: dict[str, Any]) -> list[str]:
    """Preset names whose architecture equals that of ``config``."""
    want = _structure(config)
    return [name for name, cfg in sorted(PRESETS.items()) if _structure(cfg) == want]


def load_pretrained_backbone(path: str, arch: str, kwargs: dict[str, Any]) -> VisionTransformer:
    """The backbone in ``path``, checked against ``create_model(arch, **kwargs)``; drop-path from ``kwargs``."""
    from ..models.weights import build_model, read_weights

    weights = read_weights(path)
    wanted = _structure({**preset_config(arch), **kwargs})
    found = _structure(weights.config)
    diffs = [f"{k}: config {wanted[k]!r}, file {found[k]!r}" for k in STRUCTURAL if wanted[k] != found[k]]
    if diffs:
        names = matching_presets(weights.config)
        fix = (f"set model.arch={names[0]} (and crop sizes that are multiples of its patch size {found['patch_size']})"
               if names else "set model.arch and model.options to the architecture of the file")
        raise ConfigError(f"model.pretrained={path} does not fit model.arch={arch}: " + "; ".join(diffs) + f". {fix}")
    weights.config.update(drop_path_rate=kwargs.get("drop_path_rate", 0.0),
                          drop_path_uniform=kwargs.get("drop_path_uniform", False))
    return build_model(weights)
