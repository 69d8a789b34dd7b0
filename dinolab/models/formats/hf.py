"""Hugging Face transformers folders: ``Dinov2Model``, ``Dinov2WithRegistersModel``, ``DINOv3ViTModel``.

A folder holds ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``, or shards with an
``*.index.json``). Key names on disk (dinov3_and_ecosystem.md §3.2-3.3) differ from the canonical
ones; transformers 5 renames some of them in memory (``attention.q_proj``, ``mlp.gate_proj``,
``model.layer.``), and both spellings are read here. Writing uses the on-disk names, which every
transformers version since 4.56 loads.

Interpolation: transformers resizes DINOv2 position embeddings with ``size=(h, w)`` (bicubic,
``align_corners=False``, in float32; antialias only in the registers model), not with the official
``scale_factor`` + 0.1 offset. Models loaded from an HF folder therefore get ``pos_embed_resize="hf"``,
except folders written by :func:`export_hf`, whose ``config.json`` remembers the original model's rule
under ``"dinolab"`` (an entry transformers keeps and ignores), so that dinolab -> HF -> dinolab gives the
same model back.
The config.json is written directly, so exporting does not need transformers installed.

Preprocessing: a folder's ``preprocessor_config.json`` (when present) gives ``model.preprocess``;
without one the processor of the converted checkpoints applies (:func:`~dinolab.models.preprocess.release_defaults`).
:func:`export_hf` writes a ``preprocessor_config.json`` equivalent to the model's preprocess.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

import torch

from ...errors import WeightsError
from ...io import atomic_save_text, escapes_root
from ..layers import swiglu_hidden_dim
from ..preprocess import Preprocess, from_hf_processor, release_defaults, to_hf_processor
from ..presets import preset_config
from .dinolab_format import unwrap
from .infer import FAMILY_PRESETS, mlp_ratio, swiglu_ratio
from .tensor_files import read_safetensors, read_torch_file, refuse_non_float, write_safetensors

MODEL_TYPES = {"dinov2": "Dinov2Model", "dinov2_with_registers": "Dinov2WithRegistersModel",
               "dinov3_vit": "DINOv3ViTModel"}
PROCESSOR_FILE = "preprocessor_config.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")

# canonical name <-> on-disk HF name (non-block tensors), then in-block suffixes
_V2_TOP = {"cls_token": "embeddings.cls_token", "mask_token": "embeddings.mask_token",
           "pos_embed": "embeddings.position_embeddings", "register_tokens": "embeddings.register_tokens",
           "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
           "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
           "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}
_V3_TOP = {"cls_token": "embeddings.cls_token", "mask_token": "embeddings.mask_token",
           "register_tokens": "embeddings.register_tokens",
           "patch_embed.proj.weight": "embeddings.patch_embeddings.weight",
           "patch_embed.proj.bias": "embeddings.patch_embeddings.bias",
           "norm.weight": "norm.weight", "norm.bias": "norm.bias"}
_V2_BLOCK = {"attn.proj": "attention.output.dense", "ls1.gamma": "layer_scale1.lambda1",
             "ls2.gamma": "layer_scale2.lambda1", "mlp.w3": "mlp.weights_out"}
_V3_BLOCK = {"attn.proj": "attention.o_proj", "ls1.gamma": "layer_scale1.lambda1",
             "ls2.gamma": "layer_scale2.lambda1", "mlp.fc1": "mlp.up_proj", "mlp.fc2": "mlp.down_proj",
             "mlp.w1": "mlp.gate_proj", "mlp.w2": "mlp.up_proj", "mlp.w3": "mlp.down_proj"}
# in-memory spellings of transformers 5 for DINOv2 (read only)
_V2_ALIASES = {"attention.o_proj": "attn.proj", "mlp.down_proj": "mlp.w3", "mlp.gate_proj": "mlp.w1",
               "mlp.up_proj": "mlp.w2"}
_QKV_NAMES = (("attention.attention.query", "attention.attention.key", "attention.attention.value"),
              ("attention.q_proj", "attention.k_proj", "attention.v_proj"))
_RESIZE_KEYS = ("pos_embed_resize", "interpolate_offset", "interpolate_antialias")
_LAYER = re.compile(r"^(?:encoder\.|model\.)?layer\.(\d+)\.(.+)$")


# ------------------------------------------------------------------------------------------------
# reading

def is_hf_state_dict(sd: Mapping[str, Any]) -> bool:
    return any(_strip_prefix(k).startswith(("embeddings.", "encoder.layer.")) for k in sd)


def read_preprocessor(folder: str | Path, family: str | None) -> Preprocess:
    """The folder's ``preprocessor_config.json`` as a :class:`Preprocess`, or the release defaults without one."""
    f = Path(folder) / PROCESSOR_FILE
    if not f.is_file():
        return release_defaults(family, folder, "hf")
    try:
        cfg = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"{f}: cannot read the Hugging Face processor config ({e}); fix or remove it") from None
    if not isinstance(cfg, dict):
        raise WeightsError(f"{f}: expected a JSON object, got {type(cfg).__name__}; fix or remove it")
    return from_hf_processor(cfg, str(f))


def read_hf_folder(folder: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config, state_dict)`` of an HF model folder (weights as stored)."""
    folder = Path(folder)
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"{folder / 'config.json'}: cannot read the Hugging Face config ({e})") from None
    for name in WEIGHT_FILES:
        f = folder / name
        if not f.exists():
            continue
        if name.endswith(".index.json"):
            shards = _shard_names(f)
            sd: dict[str, torch.Tensor] = {}
            for s in shards:
                sd.update(_read_weights(folder / s))
            return cfg, sd
        return cfg, _read_weights(f)
    raise WeightsError(f"{folder}: a Hugging Face folder needs one of {', '.join(WEIGHT_FILES)} next to config.json")


def _shard_names(index: Path) -> list[str]:
    """The shard files an ``*.index.json`` names; each must lie in the index's own folder."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise WeightsError(f"{index}: not a valid shard index (expected a 'weight_map' of tensor name -> shard "
                           f"file; {type(e).__name__}: {e}); check that the download is complete") from None
    for shard in shards:
        if not isinstance(shard, str) or escapes_root(shard):
            raise WeightsError(f"{index}: shard {shard!r} lies outside the model folder {index.parent}; an index may "
                               f"only name files next to it, so this file was not read")
    return shards


def _read_weights(f: Path) -> dict[str, torch.Tensor]:
    if f.suffix == ".safetensors":
        sd = read_safetensors(f)[0]
    else:
        sd = {k: v for k, v in read_torch_file(f).items() if isinstance(v, torch.Tensor)}
    refuse_non_float(f, sd)  # before q/k/v are concatenated: torch.cat would promote int8 / bool to float
    return sd


def config_from_hf(cfg: Mapping[str, Any], where: str = "") -> tuple[dict[str, Any], str]:
    """:class:`VisionTransformer` kwargs and dinolab family for an HF ``config.json`` dict."""
    mt = cfg.get("model_type")
    if mt not in MODEL_TYPES:
        raise WeightsError(f"{where}: model_type {mt!r} is not one of {', '.join(MODEL_TYPES)}; dinolab reads "
                           f"Dinov2Model, Dinov2WithRegistersModel and DINOv3ViTModel folders")
    dim = cfg.get("hidden_size", 768 if mt != "dinov3_vit" else 384)
    common = dict(embed_dim=dim, depth=cfg.get("num_hidden_layers", 12),
                  num_heads=cfg.get("num_attention_heads", 12 if mt != "dinov3_vit" else 6),
                  patch_size=_square(cfg.get("patch_size", 14 if mt != "dinov3_vit" else 16), "patch_size", where),
                  img_size=_square(cfg.get("image_size", 224), "image_size", where),
                  in_chans=cfg.get("num_channels", 3), layerscale_init=cfg.get("layerscale_value", 1.0))
    act = cfg.get("hidden_act", "gelu")
    if mt == "dinov3_vit":
        family = "dinov3"
        out = preset_config(FAMILY_PRESETS[family])
        gated = cfg.get("use_gated_mlp", False)
        if act != ("silu" if gated else "gelu"):
            raise WeightsError(f"{where}: hidden_act={act!r} with use_gated_mlp={gated} is not supported (dinolab "
                               f"uses GELU for the MLP and SiLU for the gated MLP, as the released models)")
        inter = cfg.get("intermediate_size", 4 * dim)
        if gated:
            ratio, align = swiglu_ratio(dim, inter)
            out.update(ffn_layer="swiglu", mlp_ratio=ratio, swiglu_align=align)
        else:
            out.update(ffn_layer="mlp", mlp_ratio=mlp_ratio(dim, inter))
        qb, kb, vb = cfg.get("query_bias", True), cfg.get("key_bias", False), cfg.get("value_bias", True)
        out.update(common, qkv_bias=qb or kb or vb, mask_k_bias=(qb or vb) and not kb,
                   proj_bias=cfg.get("proj_bias", True), ffn_bias=cfg.get("mlp_bias", True),
                   num_register_tokens=cfg.get("num_register_tokens", 0), norm_eps=cfg.get("layer_norm_eps", 1e-5),
                   rope_base=float(cfg.get("rope_theta", 100.0)), rope_shift_coords=cfg.get("pos_embed_shift"),
                   rope_jitter_coords=cfg.get("pos_embed_jitter"), rope_rescale_coords=cfg.get("pos_embed_rescale"))
        return out, family
    reg = mt == "dinov2_with_registers"
    family = "dinov2_reg" if reg else "dinov2"
    out = preset_config(FAMILY_PRESETS[family])
    if act != "gelu":
        raise WeightsError(f"{where}: hidden_act={act!r} is not supported; dinolab's DINOv2 uses GELU")
    ratio = cfg.get("mlp_ratio", 4)
    out.update(common, mlp_ratio=float(ratio), qkv_bias=cfg.get("qkv_bias", True), proj_bias=True, ffn_bias=True,
               ffn_layer="swiglu" if cfg.get("use_swiglu_ffn", False) else "mlp", swiglu_align=8,
               num_register_tokens=cfg.get("num_register_tokens", 4) if reg else 0,
               norm_eps=cfg.get("layer_norm_eps", 1e-6), pos_embed_resize="hf",
               interpolate_antialias=reg, interpolate_offset=0.0 if reg else 0.1)
    out.update({k: v for k, v in (cfg.get("dinolab") or {}).items() if k in _RESIZE_KEYS})
    return out, family


def hf_to_canonical(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename HF keys (on-disk or transformers-5 in-memory spellings) to canonical names.

    Keys that are not part of the backbone are kept under their own name so that a later shape check
    reports them as unexpected; classification heads (``classifier.*``) are dropped.
    """
    sd = {_strip_prefix(k): v for k, v in sd.items() if not k.startswith("classifier.")}
    v3 = not any(k.startswith("embeddings.position_embeddings") for k in sd) and not any(
        k.startswith("embeddings.patch_embeddings.projection") for k in sd)
    top = {hf: c for c, hf in (_V3_TOP if v3 else _V2_TOP).items()}
    out: dict[str, torch.Tensor] = {}
    blocks: dict[int, dict[str, torch.Tensor]] = defaultdict(dict)
    for k, v in sd.items():
        if m := _LAYER.match(k):
            blocks[int(m.group(1))][m.group(2)] = v
        elif k in top:
            if top[k] == "register_tokens" and v.numel() == 0:
                continue  # DINOv3ViTConfig(num_register_tokens=0) still stores a (1, 0, D) tensor
            out[top[k]] = v.reshape(1, -1) if top[k] == "mask_token" else v
        elif k == "rope_embeddings.inv_freq":
            out["rope_embed.periods"] = 1.0 / v
        else:
            out[k] = v
    for i, b in sorted(blocks.items()):
        out.update({f"blocks.{i}.{k}": v for k, v in _block_to_canonical(b, v3).items()})
    return out


def _block_to_canonical(b: dict[str, torch.Tensor], v3: bool) -> dict[str, torch.Tensor]:
    b = dict(b)
    out: dict[str, torch.Tensor] = {}
    for names in _QKV_NAMES:
        if names[0] + ".weight" not in b:
            continue
        out["attn.qkv.weight"] = torch.cat([b.pop(n + ".weight") for n in names])
        biases = [b.pop(n + ".bias", None) for n in names]
        if any(x is not None for x in biases):
            dim = out["attn.qkv.weight"].shape[1]
            ref = next(x for x in biases if x is not None)
            out["attn.qkv.bias"] = torch.cat([x if x is not None else ref.new_zeros(dim) for x in biases])
    if "mlp.weights_in.weight" in b:  # DINOv2 packed SwiGLU = [w1; w2]
        for p in ("weight", "bias"):
            if f"mlp.weights_in.{p}" in b:
                out[f"mlp.w1.{p}"], out[f"mlp.w2.{p}"] = b.pop(f"mlp.weights_in.{p}").chunk(2, dim=0)
    renames = _block_renames(v3, gated="mlp.gate_proj.weight" in b)
    for k, v in b.items():
        stem, _, leaf = k.rpartition(".")
        if k in renames:  # parameter-level names (LayerScale)
            out[renames[k]] = v
        elif stem in renames:
            out[f"{renames[stem]}.{leaf}"] = v
        else:  # norm1/norm2/mlp.fc1/mlp.fc2 keep their names; anything else surfaces as unexpected
            out[k] = v
    return out


def _block_renames(v3: bool, gated: bool) -> dict[str, str]:
    """HF in-block module name -> canonical one (``up_proj`` is SwiGLU's w2 when gated, else fc1)."""
    if not v3:
        return {hf: c for c, hf in _V2_BLOCK.items()} | _V2_ALIASES
    mlp = ("mlp.w1", "mlp.w2", "mlp.w3") if gated else ("mlp.fc1", "mlp.fc2")
    return {hf: c for c, hf in _V3_BLOCK.items() if not c.startswith("mlp.") or c in mlp}


def _strip_prefix(k: str) -> str:
    for p in ("dinov2.", "dinov2_with_registers.", "backbone."):
        if k.startswith(p):
            return k[len(p):]
    if k.startswith("model.") and not k.startswith("model.layer."):
        return k[len("model."):]
    return k


def _square(v: Any, name: str, where: str) -> int:
    if isinstance(v, (list, tuple)):
        if len(set(v)) != 1:
            raise WeightsError(f"{where}: {name}={list(v)} is not square; dinolab models use square patches and "
                               f"a square position-embedding grid")
        v = v[0]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v < 1:
        raise WeightsError(f"{where}: {name}={v!r} in config.json is not a positive whole number; the file is "
                           f"damaged or not a DINOv2 / DINOv3 config")
    return int(v)


# ------------------------------------------------------------------------------------------------
# writing

def export_hf(model: torch.nn.Module, folder: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``model`` as a Hugging Face folder (``config.json`` + ``model.safetensors`` +
    ``preprocessor_config.json`` from ``model.preprocess``, the defaults when it has none).

    Learned position embeddings become ``Dinov2Model`` (``Dinov2WithRegistersModel`` with registers),
    RoPE models ``DINOv3ViTModel``; ``transformers.AutoModel.from_pretrained(folder)`` loads the result.
    Missing LayerScale or biases are written as ones / zeros (the same function). Raises
    :class:`WeightsError` for what HF cannot express (a non-integer MLP ratio in DINOv2, custom RoPE periods).
    The untied local-crop CLS norm of DINOv3 7B is training-only and is not exported.

    Examples:
        >>> from dinolab.models import create_model
        >>> export_hf(create_model("vit_small", depth=2), "hf_out")  # doctest: +SKIP
    """
    folder = Path(folder)
    targets = [folder / "config.json", folder / "model.safetensors", folder / PROCESSOR_FILE]
    if not overwrite and any(t.exists() for t in targets):
        raise WeightsError(f"{folder} already holds a Hugging Face model; choose another folder or pass "
                           f"overwrite=True (--force on the command line)")
    model = unwrap(model)
    sd, hf_cfg = canonical_to_hf(model.state_dict(), model.config)
    write_safetensors(targets[1], sd, {"format": "pt"})
    atomic_save_text(targets[0], json.dumps(hf_cfg, indent=2, sort_keys=True) + "\n")
    processor = to_hf_processor(model.preprocess or Preprocess())
    atomic_save_text(targets[2], json.dumps(processor, indent=2, sort_keys=True) + "\n")
    return folder


def canonical_to_hf(sd: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    """HF on-disk state dict and ``config.json`` dict for a canonical state dict and its model config."""
    dim, rope = config["embed_dim"], config["pos_embed_type"] == "rope"
    dtype = sd["cls_token"].dtype
    hf_cfg = _hf_config(sd, config)
    out: dict[str, torch.Tensor] = {}
    for c, hf in (_V3_TOP if rope else _V2_TOP).items():
        if c in sd:
            out[hf] = sd[c].reshape(1, 1, dim) if (rope and c == "mask_token") else sd[c]
    if rope and "embeddings.register_tokens" not in out:
        out["embeddings.register_tokens"] = torch.zeros(1, 0, dim, dtype=dtype)
    prefix = "layer" if rope else "encoder.layer"
    for i in range(config["depth"]):
        b = {k[len(f"blocks.{i}."):]: v for k, v in sd.items() if k.startswith(f"blocks.{i}.")}
        out.update({f"{prefix}.{i}.{k}": v for k, v in _block_to_hf(b, config, rope, dim, dtype).items()})
    return {k: v.contiguous() for k, v in out.items()}, hf_cfg


def _block_to_hf(b: dict[str, torch.Tensor], config: Mapping[str, Any], rope: bool, dim: int,
                 dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """One block. Absent LayerScale is written as ones and absent biases HF always has as zeros."""
    out: dict[str, torch.Tensor] = {}
    qn, kn, vn = _QKV_NAMES[1] if rope else _QKV_NAMES[0]
    for n, w in zip((qn, kn, vn), b["attn.qkv.weight"].chunk(3)):
        out[f"{n}.weight"] = w
    if "attn.qkv.bias" in b:
        bias = b["attn.qkv.bias"] * b.get("attn.qkv.bias_mask", torch.ones_like(b["attn.qkv.bias"])).to(dtype)
        q, k, v = bias.chunk(3)
        out[f"{qn}.bias"], out[f"{vn}.bias"] = q, v
        if not (rope and config.get("mask_k_bias")):
            out[f"{kn}.bias"] = k
    proj = "attention.o_proj" if rope else "attention.output.dense"
    out[f"{proj}.weight"] = b["attn.proj.weight"]
    if "attn.proj.bias" in b or not rope:  # Dinov2's output projection always has a bias
        out[f"{proj}.bias"] = b.get("attn.proj.bias", torch.zeros(dim, dtype=dtype))
    for j in (1, 2):
        out[f"norm{j}.weight"], out[f"norm{j}.bias"] = b[f"norm{j}.weight"], b[f"norm{j}.bias"]
        out[f"layer_scale{j}.lambda1"] = b.get(f"ls{j}.gamma", torch.ones(dim, dtype=dtype))

    def ffn(name: str, p: str) -> torch.Tensor:
        w = b[f"mlp.{name}.weight"]
        return w if p == "weight" else b.get(f"mlp.{name}.bias", w.new_zeros(w.shape[0]))

    with_bias = ("weight", "bias") if (not rope or config.get("ffn_bias", True)) else ("weight",)
    for p in with_bias:
        if config.get("ffn_layer", "mlp") == "swiglu" and rope:
            out[f"mlp.gate_proj.{p}"], out[f"mlp.up_proj.{p}"] = ffn("w1", p), ffn("w2", p)
            out[f"mlp.down_proj.{p}"] = ffn("w3", p)
        elif config.get("ffn_layer", "mlp") == "swiglu":
            out[f"mlp.weights_in.{p}"] = torch.cat([ffn("w1", p), ffn("w2", p)])
            out[f"mlp.weights_out.{p}"] = ffn("w3", p)
        else:
            names = ("mlp.up_proj", "mlp.down_proj") if rope else ("mlp.fc1", "mlp.fc2")
            out[f"{names[0]}.{p}"], out[f"{names[1]}.{p}"] = ffn("fc1", p), ffn("fc2", p)
    return out


def _hf_config(sd: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, Any]:
    dim = config["embed_dim"]
    swiglu = config.get("ffn_layer", "mlp") == "swiglu"
    hidden = sd["blocks.0.mlp.w1.weight" if swiglu else "blocks.0.mlp.fc1.weight"].shape[0]
    ls = config.get("layerscale_init")
    common = dict(hidden_size=dim, num_hidden_layers=config["depth"], num_attention_heads=config["num_heads"],
                  image_size=config["img_size"], patch_size=config["patch_size"], num_channels=config["in_chans"],
                  layer_norm_eps=config["norm_eps"], layerscale_value=float(ls) if ls is not None else 1.0,
                  initializer_range=0.02, drop_path_rate=0.0, apply_layernorm=True, reshape_hidden_states=True,
                  dtype=str(sd["cls_token"].dtype).replace("torch.", ""))
    if config["pos_embed_type"] == "rope":
        periods = sd["rope_embed.periods"].double()
        head_dim = dim // config["num_heads"]
        expected = float(config["rope_base"]) ** (torch.arange(head_dim // 4, dtype=torch.float64) * 4 / head_dim)
        if not torch.allclose(periods, expected, rtol=1e-5):
            raise WeightsError(f"this model's RoPE periods are not rope_base ** (4i / head_dim) with rope_base="
                               f"{config['rope_base']}; transformers recomputes them from rope_theta, so the model "
                               f"cannot be exported to DINOv3ViTModel faithfully. Use the dinolab or official format")
        qkv_bias = config.get("qkv_bias", True)
        return dict(common, architectures=["DINOv3ViTModel"], model_type="dinov3_vit", intermediate_size=hidden,
                    hidden_act="silu" if swiglu else "gelu", use_gated_mlp=swiglu, attention_dropout=0.0,
                    rope_theta=float(config["rope_base"]), query_bias=qkv_bias, value_bias=qkv_bias,
                    key_bias=bool(qkv_bias and not config.get("mask_k_bias")), proj_bias=config.get("proj_bias", True),
                    mlp_bias=config.get("ffn_bias", True), num_register_tokens=config.get("num_register_tokens", 0),
                    pos_embed_shift=config.get("rope_shift_coords"), pos_embed_jitter=config.get("rope_jitter_coords"),
                    pos_embed_rescale=config.get("rope_rescale_coords"))
    ratio = _hf_mlp_ratio(dim, hidden, swiglu)
    reg = config.get("num_register_tokens", 0)
    _warn_if_resize_differs(config, antialias=bool(reg))
    # transformers ignores this entry; dinolab reads it back so that ours -> HF -> ours is lossless
    remembered = {k: config.get(k) for k in _RESIZE_KEYS}
    out = dict(common, dinolab=remembered, mlp_ratio=ratio, hidden_act="gelu", hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0, qkv_bias=config.get("qkv_bias", True), use_swiglu_ffn=swiglu)
    if reg:
        return dict(out, architectures=["Dinov2WithRegistersModel"], model_type="dinov2_with_registers",
                    num_register_tokens=reg)
    return dict(out, architectures=["Dinov2Model"], model_type="dinov2", use_mask_token=True)


def _hf_mlp_ratio(dim: int, hidden: int, swiglu: bool) -> int:
    for r in range(1, 65):
        if (swiglu_hidden_dim(dim, r, 8) if swiglu else int(dim * r)) == hidden:
            return r
    raise WeightsError(f"a {'SwiGLU' if swiglu else 'MLP'} hidden width of {hidden} for width {dim} has no integer "
                       f"mlp_ratio, which Dinov2Config needs; this model cannot be exported to Hugging Face "
                       f"DINOv2 (use the dinolab or official format)")


def _warn_if_resize_differs(config: Mapping[str, Any], antialias: bool) -> None:
    same = (bool(config.get("interpolate_antialias")) == antialias
            and (config.get("pos_embed_resize") == "hf" or not config.get("interpolate_offset")))
    if not same:
        warnings.warn("transformers resizes DINOv2 position embeddings with size=(h, w)"
                      f"{' and antialias' if antialias else ''}; this model uses offset="
                      f"{config.get('interpolate_offset')}, antialias={config.get('interpolate_antialias')}. Outputs "
                      "agree at the training resolution and differ at other input sizes", stacklevel=3)
