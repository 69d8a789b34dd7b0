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
from typing import Any, Callable

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


def describe_pretrained(weights: Any, arch: str) -> str:
    """One line naming the weights a run starts from, their format and architecture (``weights``: a
    :class:`~dinolab.models.weights.LoadedWeights`)."""
    c = weights.config
    kind = {"dinolab": "dinolab", "official": "official", "hf": "Hugging Face"}.get(weights.format, weights.format)
    family = {"dino": " DINO", "dinov2": " DINOv2", "dinov2_reg": " DINOv2 (registers)", "dinov3": " DINOv3"}.get(
        weights.family or "", "")
    entry = f", entry {weights.source!r}" if weights.source else ""
    registers = f", {c['num_register_tokens']} registers" if c.get("num_register_tokens") else ""
    return (f"model.pretrained: starting from {weights.path} ({kind}{family} weights{entry}; model.arch={arch}: "
            f"width {c.get('embed_dim')}, {c.get('depth')} blocks, {c.get('num_heads')} heads, patch "
            f"{c.get('patch_size')}{registers})")


def load_pretrained_backbone(path: str, arch: str, kwargs: dict[str, Any],
                             announce: Callable[[str], None] | None = None) -> VisionTransformer:
    """The backbone in ``path``, checked against ``create_model(arch, **kwargs)``; drop-path from ``kwargs``.
    ``announce`` receives :func:`describe_pretrained`'s line once the file is read and fits."""
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
    if announce is not None:
        announce(describe_pretrained(weights, arch))
    weights.config.update(drop_path_rate=kwargs.get("drop_path_rate", 0.0),
                          drop_path_uniform=kwargs.get("drop_path_uniform", False))
    return build_model(weights)
