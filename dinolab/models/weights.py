"""Load a backbone from any supported weights file; save it in dinolab's format.

Formats, detected from the path and the tensors (never from trust in a file name alone):

=====================  ===========================================================================
dinolab                ``X.safetensors`` + ``X.json`` (architecture), or a folder holding them
official DINO v1/v2/v3 hub ``.pth`` backbones and training checkpoints (teacher by default), any of
                       ``teacher``/``student``/``model`` entries, ``module.``/``backbone.`` prefixes
Hugging Face           folders with ``config.json`` + ``model.safetensors`` / ``pytorch_model.bin``
                       of ``Dinov2Model``, ``Dinov2WithRegistersModel``, ``DINOv3ViTModel``
bare state dicts       ``.safetensors``/``.pth`` with official or HF key names, architecture inferred
=====================  ===========================================================================

``.pth`` files are read with ``torch.load(weights_only=True)`` only; a file that needs arbitrary Python
classes is refused, never executed. The architecture is inferred from tensor shapes where no config
exists (see :mod:`dinolab.models.formats.infer`); the position-embedding resize rule defaults to that of
the source (official DINOv2 with registers: ``size=`` + antialias; without: ``scale_factor`` with +0.1;
HF folders: ``pos_embed_resize="hf"``).
"""

from __future__ import annotations

import inspect
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import ConfigError, WeightsError
from ..io import atomic_write
from .formats import dinolab_format, hf, official
from .formats.hf import export_hf
from .formats.infer import detect_family, infer_config
from .formats.tensor_files import (
    file_head,
    is_safetensors_content,
    read_safetensors,
    read_torch_file,
    refuse_non_float,
    write_safetensors,
)
from .preprocess import Preprocess, release_defaults
from .vit import VisionTransformer

__all__ = ["load_model", "save_model", "export_hf", "export_official", "read_weights", "detect_format",
           "LoadedWeights", "Preprocess"]

# Tensors a source may lack that the model can recreate: v1 has no mask token, HF stores no RoPE
# periods and no K-bias mask. Everything else must be present.
_FILLABLE = ("mask_token", "rope_embed.periods", ".attn.qkv.bias_mask")


@dataclass
class LoadedWeights:
    """What :func:`read_weights` found: canonical tensors plus the architecture to put them in."""

    path: Path
    format: str  # "dinolab" | "official" | "hf"
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    family: str | None = None  # "dino" | "dinov2" | "dinov2_reg" | "dinov3" (None for dinolab files)
    source: str = ""  # which entry of a checkpoint was used, e.g. "teacher"
    metadata: dict[str, Any] = field(default_factory=dict)
    preprocess: Preprocess | None = None  # how the model sees (None: the defaults)


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu", pos_embed_resize: str | None = None,
               checkpoint_key: str | None = None, **overrides: Any) -> VisionTransformer:
    """Load a backbone from ``path`` in eval mode.

    Args:
        path: a dinolab ``.safetensors``/``.json``/folder, an official ``.pth``, or an HF folder.
        device: where to put the model (``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``).
        pos_embed_resize: ``"official"`` or ``"hf"`` to override the source's position-embedding
            resize rule (learned position embeddings only).
        checkpoint_key: entry of a training checkpoint to read (default ``"teacher"``; e.g. ``"student"``).
        **overrides: architecture options that shapes cannot tell or that you want changed, e.g.
            ``num_heads=4`` for a non-standard width, ``drop_path_rate=0.1`` for fine-tuning.

    Returns:
        a :class:`VisionTransformer` whose ``forward_features`` gives CLS (B, D), registers (B, R, D)
        and patches (B, N, D) after the final norm, ``prenorm`` (B, 1+R+N, D) and ``masks`` (None unmasked),
        with ``model.preprocess`` (:class:`~dinolab.models.Preprocess`): the input size and normalisation
        recorded in the file, or the documented defaults of the release.

    Raises:
        WeightsError: unknown format, unsafe pickle, or tensors that do not fit (names the keys).

    Examples:
        >>> model = load_model("dinov2_vits14_reg4_pretrain.pth")  # doctest: +SKIP
        >>> model.forward_features(torch.randn(1, 3, 224, 224))["patches"].shape  # doctest: +SKIP
        torch.Size([1, 256, 384])
    """
    from ..device import resolve_device

    weights = read_weights(path, checkpoint_key=checkpoint_key, **overrides)
    if pos_embed_resize is not None:
        if pos_embed_resize not in ("official", "hf"):
            raise ConfigError(f"pos_embed_resize={pos_embed_resize!r}; use 'official' or 'hf'")
        weights.config["pos_embed_resize"] = pos_embed_resize
    model = build_model(weights)
    return model.to(resolve_device(device)).eval()


def save_model(model: VisionTransformer, path: str | os.PathLike, *, overwrite: bool = False,
               metadata: Mapping[str, Any] | None = None, preprocess: Preprocess | None = None) -> Path:
    """Save ``model`` as ``X.safetensors`` + ``X.json`` (for ``X``, ``X.safetensors``, ``X.json`` or a folder).

    ``preprocess`` (default ``model.preprocess``, else the defaults: 224 px, ImageNet mean / std) is
    recorded in the JSON, and :func:`load_model` gives it back as ``model.preprocess``.
    Both files are written atomically; existing files are kept unless ``overwrite=True``.
    Returns the path of the ``.safetensors`` file, which :func:`load_model` accepts.
    """
    return dinolab_format.save(model, path, overwrite=overwrite, metadata=metadata, preprocess=preprocess)


def export_official(model: VisionTransformer, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the official hub layout (DINOv3 for RoPE models, DINOv2, or DINO v1 for plain ViTs).

    ``.pth`` gets ``torch.save`` of a flat state dict (loads with the official code and
    ``weights_only=True``); ``.safetensors`` gets the same keys in safetensors.
    """
    p, model = Path(path), dinolab_format.unwrap(model)
    if p.exists() and not overwrite:
        raise WeightsError(f"{p} already exists; choose another path or pass overwrite=True (--force)")
    sd = official.from_canonical({k: v.detach().cpu() for k, v in model.state_dict().items()}, model.config)
    if p.suffix == ".safetensors":
        write_safetensors(p, sd, {"format": "pt"})
    else:
        with atomic_write(p, "wb") as f:
            torch.save(sd, f)
    return p


# ------------------------------------------------------------------------------------------------

def detect_format(path: str | os.PathLike) -> tuple[str, Path]:
    """``(kind, path)`` with kind ``"dinolab"``, ``"hf"`` (path = folder), ``"torch"`` or ``"safetensors"``."""
    p = Path(path)
    if not p.exists():
        st, js = dinolab_format.paths_for(p)
        if st.exists() or js.exists():
            return "dinolab", st
        raise WeightsError(f"{p}: no such file or folder")
    if p.is_dir():
        if _hf_config(p / "config.json") is not None:
            return "hf", p
        pair = dinolab_format.find_in_folder(p)
        if pair:
            return "dinolab", pair[0]
        found = ", ".join(sorted(x.name for x in p.iterdir())[:8]) or "nothing"
        raise WeightsError(f"{p}: a folder must hold a dinolab model (X.safetensors + X.json) or a Hugging Face "
                           f"model (config.json of Dinov2/DINOv3 + weights); found {found}")
    if dinolab_format.is_dinolab_file(p):
        return "dinolab", p
    if p.name.split(".")[0] in ("model", "pytorch_model") and _hf_config(p.parent / "config.json") is not None:
        return "hf", p.parent
    if p.suffix == ".json":
        raise WeightsError(f"{p}: a JSON file that is neither a dinolab model description nor an HF config.json of "
                           f"a Dinov2/DINOv3 model")
    if p.suffix == ".safetensors" or is_safetensors_content(file_head(p)):  # also a safetensors file named .pth
        return "safetensors", p
    return "torch", p


def read_weights(path: str | os.PathLike, *, checkpoint_key: str | None = None, **overrides: Any) -> LoadedWeights:
    """Read ``path`` into canonical tensors and an architecture config (see :func:`load_model`)."""
    known = set(inspect.signature(VisionTransformer.__init__).parameters) - {"self"}
    bad = sorted(set(overrides) - known)
    if bad:
        raise ConfigError(f"unknown architecture option(s) {', '.join(bad)}; valid: {', '.join(sorted(known))}")
    kind, p = detect_format(path)
    if kind == "dinolab":
        config, sd, meta, preprocess = dinolab_format.read(p)
        w = LoadedWeights(p, "dinolab", config, sd, metadata=meta, preprocess=preprocess)
    elif kind == "hf":
        hf_cfg, raw = hf.read_hf_folder(p)
        config, family = hf.config_from_hf(hf_cfg, str(p / "config.json"))
        w = LoadedWeights(p, "hf", config, hf.hf_to_canonical(raw), family, hf_cfg.get("model_type", ""),
                          preprocess=hf.read_preprocessor(p, family))
    else:
        obj = read_safetensors(p)[0] if kind == "safetensors" else read_torch_file(p)
        raw, where = official.select_backbone_dict(obj, str(p), checkpoint_key)
        if hf.is_hf_state_dict(raw):
            sd = hf.hf_to_canonical(raw)
            family = detect_family(sd)
            config = infer_config(sd, family, str(p), overrides.get("num_heads"))
            if config["pos_embed_type"] == "learned":
                config.update(pos_embed_resize="hf", interpolate_antialias=family == "dinov2_reg")
            w = LoadedWeights(p, "hf", config, sd, family, where, preprocess=release_defaults(family, p, "hf"))
        else:
            sd = official.to_canonical(raw)
            family = detect_family(sd) if "cls_token" in sd else None
            config = infer_config(sd, family, str(p), overrides.get("num_heads"))
            w = LoadedWeights(p, "official", config, sd, family, where, preprocess=release_defaults(family, p))
    w.config.update(overrides)
    return w


def build_model(weights: LoadedWeights) -> VisionTransformer:
    """Instantiate the architecture of ``weights`` and put its tensors in (float32, strict shapes)."""
    check_architecture(weights.path, weights.config, weights.state_dict)
    try:
        with torch.device("meta"):
            model = VisionTransformer(**weights.config)
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{weights.path}: cannot build the model described by this file: {e}") from None
    expected = model.state_dict()
    sd = {k: v.float() for k, v in weights.state_dict.items()}  # check_architecture refused non-float ones
    _check_fit(weights.path, sd, expected)
    for key in expected:
        if key not in sd:  # a fillable tensor: recreate the model's own value
            sd[key] = _recreate(model, key)
    model.load_state_dict(sd, strict=True, assign=True)
    if any(t.is_meta for t in list(model.parameters()) + list(model.buffers())):
        model = VisionTransformer(**weights.config)
        model.load_state_dict(sd, strict=True)
    model.preprocess = weights.preprocess or Preprocess(source=f"dinolab default: {weights.path.name} records no "
                                                               f"preprocessing")
    return model


# (lowest, highest) accepted value of each whole-number architecture option: far beyond any released
# model, low enough that a hostile config cannot make us build millions of blocks before a shape check.
_INT_RANGES = {"img_size": (1, 16384), "patch_size": (1, 1024), "in_chans": (1, 64), "embed_dim": (1, 65536),
               "depth": (1, 1024), "num_heads": (1, 4096), "num_register_tokens": (0, 4096),
               "swiglu_align": (1, 4096)}
_FLOAT_KEYS = ("mlp_ratio", "norm_eps", "interpolate_offset", "rope_base", "layerscale_init", "rope_shift_coords",
               "rope_jitter_coords", "rope_rescale_coords", "drop_path_rate")
_BOOL_KEYS = ("qkv_bias", "proj_bias", "ffn_bias", "interpolate_antialias", "mask_k_bias", "untie_local_cls_norm",
              "drop_path_uniform")


def check_architecture(path: Path, config: Mapping[str, Any], sd: Mapping[str, torch.Tensor]) -> None:
    """Refuse an architecture whose values are of the wrong type or out of range, or that the tensors
    contradict (block count, width, patch size), before anything is built.

    Raises:
        WeightsError: naming the file, the option, its value and what was expected.
    """
    def bad(key: str, value: Any, want: str) -> WeightsError:
        return WeightsError(f"{path}: architecture option {key}={value!r} is invalid ({want}); the file's config "
                            f"is damaged or not a DINO ViT's")

    for key, (lo, hi) in _INT_RANGES.items():
        v = config.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int):
            raise bad(key, v, "a whole number")
        if not lo <= v <= hi:
            raise bad(key, v, f"between {lo} and {hi}")
    for key in _FLOAT_KEYS:
        v = config.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise bad(key, v, "a finite number")
    for key in _BOOL_KEYS:
        v = config.get(key)
        if v is not None and not isinstance(v, bool):
            raise bad(key, v, "true or false")
    if config.get("norm_eps") is not None and config["norm_eps"] <= 0:
        raise bad("norm_eps", config["norm_eps"], "above 0")
    if config.get("mlp_ratio") is not None and config["mlp_ratio"] <= 0:
        raise bad("mlp_ratio", config["mlp_ratio"], "above 0")
    dim, heads = config.get("embed_dim"), config.get("num_heads")
    if dim is not None and heads is not None and dim % heads:
        raise bad("num_heads", heads, f"a divisor of embed_dim={dim}")
    blocks = {int(k.split(".")[1]) for k in sd if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    if blocks and config.get("depth") is not None and config["depth"] != len(blocks):
        raise bad("depth", config["depth"], f"the file holds {len(blocks)} blocks")
    cls = sd.get("cls_token")
    if cls is not None and dim is not None and cls.shape[-1] != dim:
        raise bad("embed_dim", dim, f"the file's cls_token is {cls.shape[-1]} wide")
    proj = sd.get("patch_embed.proj.weight")
    if proj is not None and proj.ndim == 4 and config.get("patch_size") is not None \
            and proj.shape[-1] != config["patch_size"]:
        raise bad("patch_size", config["patch_size"], f"the file's patch embedding is {proj.shape[-1]} px")
    refuse_non_float(path, sd)
    broken = [k for k, v in sd.items() if not bool(torch.isfinite(v).all())]
    if broken:
        raise WeightsError(f"{path}: {len(broken)} tensor(s) hold NaN or infinite values ({', '.join(broken[:3])}"
                           f"{' ...' if len(broken) > 3 else ''}); every output would be NaN. The training that "
                           f"wrote them diverged: use an earlier checkpoint")


def _recreate(model: torch.nn.Module, key: str) -> torch.Tensor:
    owner_name, _, attr = key.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    if key == "mask_token":
        return torch.zeros(tuple(getattr(model, attr).shape))
    owner.to_empty(device="cpu")  # its other tensors are assigned from the file right after
    if attr == "periods":
        owner.reset_parameters()
    else:
        owner.reset_bias_mask()
    return getattr(owner, attr).detach().clone()


def _check_fit(path: Path, sd: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> None:
    missing = [k for k in expected if k not in sd and not _fillable(k)]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [f"{k} {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
                  for k in sd if k in expected and sd[k].shape != expected[k].shape]
    if not (missing or unexpected or mismatched):
        return
    parts = [f"{label} ({len(keys)}): {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}"
             for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                 ("shape mismatches", mismatched)) if keys]
    raise WeightsError(f"{path}: the tensors do not fit the model architecture (dinolab key names): "
                       f"{'; '.join(parts)}. If the architecture was inferred wrongly, pass it explicitly "
                       f"(e.g. load_model(path, num_heads=...)); otherwise the file is not a supported ViT backbone")


def _fillable(key: str) -> bool:
    return key in _FILLABLE[:2] or key.endswith(_FILLABLE[2])


def _hf_config(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text())
    except (ValueError, OSError):
        return None
    if not isinstance(cfg, dict) or cfg.get("model_type") not in hf.MODEL_TYPES:
        if isinstance(cfg, dict) and "model_type" in cfg:
            raise WeightsError(f"{path}: Hugging Face model_type {cfg['model_type']!r} is not supported; dinolab "
                               f"reads {', '.join(hf.MODEL_TYPES.values())}")
        return None
    return cfg
