"""Export a backbone (or a backbone with a classifier head) to ONNX, verified with ONNX Runtime.

The graph is traced by ``torch.onnx.export(dynamo=True)`` (``torch.export`` underneath) with a
dynamic batch and, by default, dynamic height and width in whole patches: learned position tables
are resized inside the graph (:func:`dinolab.models.layers.pos_embed.bicubic_matrix`) and RoPE is
computed for the input's grid. Only ``pixel_values`` goes in (no iBOT mask input). Outputs:

- backbone: ``cls`` (B, D), ``patches`` (B, N, D), ``registers`` (B, R, D) when R > 0;
- with a ``head``: ``logits`` (B, K), ``probabilities`` (B, K, softmax) and ``cls`` (B, D).

The model's metadata (``metadata_props``) records the preprocessing (``dinolab.preprocess``: image
size, mean, std, resize rule), the architecture and the class names. After writing, ONNX Runtime
runs each file at two batch sizes and two image sizes (one non-square) and its outputs are compared
with dinolab's (:class:`ExportCheck`); a file that fails is not kept.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import ConfigError, DinolabError
from ..models.preprocess import Preprocess

# what a model without a recorded preprocessing is fed: dinolab's defaults (models/preprocess.py), not a copy
_DEFAULT = Preprocess()
DEFAULT_PREPROCESS = {"image_size": _DEFAULT.image_size, "mean": list(_DEFAULT.mean), "std": list(_DEFAULT.std),
                      "resize": _DEFAULT.resize}
DEFAULT_OPSET = 18
# fp32 must match dinolab to this relative error (max |a-b| / max |b| per output); fp16 (whose error
# is relative to each value, not to the largest) must keep this cosine to dinolab's fp32 outputs
TOLERANCE = {"fp32": 1e-4}
MIN_COSINE = {"fp16": 0.999}


def require_onnx():
    """``(onnx, onnxruntime)``, or a :class:`DinolabError` saying how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise DinolabError("ONNX export and the ONNX runtime need the onnx and onnxruntime packages; "
                           "pip install 'dinolab[onnx]'") from None
    return onnx, onnxruntime


class ExportModule(nn.Module):
    """What is traced: ``pixel_values`` (B, C, H, W) -> the named outputs (see the module docstring).

    ``head_input``: ``"cls"`` feeds the head the CLS token (B, D); ``"cls_patch_mean"`` the CLS token
    concatenated with the mean patch token (B, 2D), DINOv2's linear-probe feature.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module | None = None, head_input: str = "cls") -> None:
        super().__init__()
        if head_input not in ("cls", "cls_patch_mean"):
            raise ConfigError(f"head_input={head_input!r}; use 'cls' or 'cls_patch_mean'")
        self.backbone, self.head, self.head_input = backbone, head, head_input

    @property
    def output_names(self) -> list[str]:
        if self.head is not None:
            return ["logits", "probabilities", "cls"]
        return ["cls", "patches"] + (["registers"] if self.backbone.num_register_tokens else [])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.backbone.forward_features(x)
        if self.head is not None:
            feat = out["cls"] if self.head_input == "cls" else torch.cat([out["cls"], out["patches"].mean(1)], -1)
            logits = self.head(feat)
            return logits, logits.softmax(dim=-1), out["cls"]
        outputs = (out["cls"], out["patches"])
        return outputs + ((out["registers"],) if self.backbone.num_register_tokens else ())


@dataclass
class ExportCheck:
    """One ONNX Runtime run compared with dinolab: input shape, per-output relative error and cosine."""

    variant: str
    shape: tuple[int, ...]
    rel_error: dict[str, float]
    cosine: dict[str, float]
    tolerance: float | None = None
    min_cosine: float | None = None

    @property
    def ok(self) -> bool:
        return ((self.tolerance is None or max(self.rel_error.values()) <= self.tolerance)
                and (self.min_cosine is None or min(self.cosine.values()) >= self.min_cosine))

    def line(self) -> str:
        errs = ", ".join(f"{k} {v:.1e}" for k, v in self.rel_error.items())
        cos = min(self.cosine.values())
        limit = f" (limit {self.tolerance:.0e})" if self.tolerance is not None else ""
        cos_limit = f" (limit {self.min_cosine})" if self.min_cosine is not None else ""
        verdict = "ok" if self.ok else "FAILED"
        if self.tolerance is None and self.min_cosine is None:
            verdict = "reported"
        return (f"{self.variant:5s} {'x'.join(map(str, self.shape)):>14s}: relative error {errs}{limit}; "
                f"cosine min {cos:.6f}{cos_limit}: {verdict}")


@dataclass
class ExportResult:
    """Files written (variant -> path) and the checks run on them."""

    paths: dict[str, Path]
    checks: list[ExportCheck] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    def report(self) -> str:
        return "\n".join(c.line() for c in self.checks)


def preprocess_of(model: nn.Module, image_size: int | None = None) -> dict[str, Any]:
    """The model's preprocessing (``model.preprocess`` where set, else the ImageNet defaults) as a dict."""
    pre = getattr(model, "preprocess", None)
    if pre is None:
        info = dict(DEFAULT_PREPROCESS)
    elif isinstance(pre, dict):
        info = {**DEFAULT_PREPROCESS, **pre}
    elif hasattr(pre, "to_dict"):  # dinolab.models.Preprocess
        info = pre.to_dict()
    else:
        from dataclasses import asdict, is_dataclass
        info = {**DEFAULT_PREPROCESS, **(asdict(pre) if is_dataclass(pre) else vars(pre))}
    if image_size is not None:
        info["image_size"] = image_size
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in info.items()}


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def check_export_inputs(model: nn.Module, image_size: tuple[int, int], preprocess: dict[str, Any],
                        head: nn.Module | None, class_names: Sequence[str] | None) -> None:
    """Refuse what would export a wrong or unusable graph, naming the value and the fix."""
    if not hasattr(model, "forward_features") or not hasattr(model, "patch_size"):
        raise ConfigError(f"export_onnx needs a dinolab VisionTransformer, got {type(model).__name__}; "
                          "load one with dinolab.load_model")
    p = model.patch_size
    if min(image_size) < p or any(s % p for s in image_size):
        raise ConfigError(f"image size {image_size[0]}x{image_size[1]} is not a multiple of the patch size {p}; "
                          f"use e.g. {max(p, image_size[0] // p * p)}")
    chans = model.patch_embed.proj.in_channels
    for key in ("mean", "std"):
        if len(preprocess[key]) != chans:
            raise ConfigError(f"preprocess {key} has {len(preprocess[key])} values but the model takes {chans} "
                              f"input channels; give one value per channel")
    if class_names is not None and head is None:
        raise ConfigError("class_names need a classifier head; pass head=... as well")
    if head is not None and class_names is not None:
        out = getattr(head, "out_features", None)
        if out is not None and out != len(class_names):
            raise ConfigError(f"the head has {out} outputs but {len(class_names)} class names were given")


def metadata(model: nn.Module, preprocess: dict[str, Any], wrapper: ExportModule, dynamic: bool,
             class_names: Sequence[str] | None, variant: str) -> dict[str, str]:
    """The ``metadata_props`` written into the file (strings; JSON where structured)."""
    from .. import __version__

    config = {k: v for k, v in getattr(model, "config", {}).items()}
    meta = {"dinolab.version": __version__, "dinolab.kind": "classifier" if wrapper.head is not None else "backbone",
            "dinolab.variant": variant, "dinolab.preprocess": json.dumps(preprocess),
            "dinolab.config": json.dumps(config, default=str), "dinolab.outputs": json.dumps(wrapper.output_names),
            "dinolab.patch_size": str(model.patch_size), "dinolab.embed_dim": str(model.embed_dim),
            "dinolab.depth": str(model.depth), "dinolab.num_register_tokens": str(model.num_register_tokens),
            "dinolab.in_chans": str(model.patch_embed.proj.in_channels),
            "dinolab.dynamic_size": json.dumps(dynamic)}
    if class_names is not None:
        meta["dinolab.class_names"] = json.dumps(list(class_names))
        meta["dinolab.head_input"] = wrapper.head_input
    return meta


def _trace(wrapper: ExportModule, path: Path, size: tuple[int, int], dynamic: bool, opset: int,
           meta: dict[str, str]) -> None:
    from torch.export import Dim

    p = wrapper.backbone.patch_size
    x = torch.zeros(2, wrapper.backbone.patch_embed.proj.in_channels, *size)
    dims: dict[int, Any] = {0: Dim("batch", min=1, max=65536)}
    if dynamic:
        dims[2] = p * Dim("grid_h", min=1, max=1024)
        dims[3] = p * Dim("grid_w", min=1, max=1024)
    names = wrapper.output_names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(wrapper, (x,), dynamo=True, input_names=["pixel_values"], output_names=names,
                                    dynamic_shapes=({k: v for k, v in dims.items()},), opset_version=opset,
                                    verbose=False, optimize=True)
    program.model.metadata_props.update(meta)
    program.save(str(path))


def _convert(fp32_path: Path, out: Path, variant: str) -> None:
    """The fp16 (float16 weights and compute, float32 inputs/outputs) or int8 (dynamic quantisation) file."""
    onnx, _ = require_onnx()
    if variant == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    else:
        import logging

        from onnxruntime.quantization import QuantType, quantize_dynamic

        quiet = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # its "consider pre-processing" advice, on every call
        try:
            quantize_dynamic(str(fp32_path), str(out), weight_type=QuantType.QInt8)
        finally:
            logging.getLogger().setLevel(quiet)
        m = onnx.load(str(out))
    for prop in m.metadata_props:
        if prop.key == "dinolab.variant":
            prop.value = variant
    onnx.save(m, str(out))


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = float(b.abs().max()) if b.numel() else 0.0
    return float((a - b).abs().max()) / scale if scale > 0 else float((a - b).abs().max()) if b.numel() else 0.0


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    if not b.numel():
        return 1.0
    return float(nn.functional.cosine_similarity(a.flatten(0, -2).double(), b.flatten(0, -2).double(), dim=-1).min())


def verify(path: str | os.PathLike, wrapper: ExportModule, shapes: Sequence[tuple[int, ...]], variant: str = "fp32",
           seed: int = 0) -> list[ExportCheck]:
    """Run ``path`` with ONNX Runtime at each input shape and compare with ``wrapper`` in PyTorch (fp32)."""
    _, ort = require_onnx()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    checks = []
    for shape in shapes:
        x = torch.randn(*shape, generator=g)
        with torch.inference_mode():
            ref = wrapper(x)
        got = session.run(wrapper.output_names, {"pixel_values": x.numpy()})
        rel, cos = {}, {}
        for name, r, o in zip(wrapper.output_names, ref, got):
            o = torch.from_numpy(o).float()
            rel[name], cos[name] = _relative(o, r.float()), _cosine(o, r.float())
        checks.append(ExportCheck(variant, tuple(shape), rel, cos, TOLERANCE.get(variant), MIN_COSINE.get(variant)))
    return checks


def check_shapes(model: nn.Module, size: tuple[int, int], dynamic: bool) -> list[tuple[int, ...]]:
    """Two runs covering two batch sizes and, for a dynamic graph, a second (non-square) image size."""
    c, p = model.patch_embed.proj.in_channels, model.patch_size
    h, w = size
    other = (h + p, w + 2 * p) if h == w else (w, h)
    return [(1, c, h, w), (3, c, *other)] if dynamic else [(1, c, h, w), (3, c, h, w)]


def export_onnx(model: nn.Module, path: str | os.PathLike, *, head: nn.Module | None = None,
                class_names: Sequence[str] | None = None, head_input: str = "cls",
                image_size: int | Sequence[int] | None = None, opset: int = DEFAULT_OPSET, dynamic: bool = True,
                fp16: bool = False, int8: bool = False, verify_export: bool = True,
                force: bool = False) -> ExportResult:
    """Write ``model`` (a dinolab backbone, optionally with a classifier ``head``) as ONNX at ``path``.

    Args:
        model: a :class:`~dinolab.models.VisionTransformer` (eval mode is used; its mode is restored).
        path: the fp32 ``.onnx`` file; ``fp16`` / ``int8`` variants go beside it as ``NAME.fp16.onnx`` /
            ``NAME.int8.onnx``.
        head: a module mapping the head features (see ``head_input``) to ``(B, K)`` logits.
        class_names: K names recorded in the metadata (``dinolab.class_names``).
        head_input: ``"cls"`` or ``"cls_patch_mean"`` (see :class:`ExportModule`).
        image_size: the traced (and, with ``dynamic=False``, the only) input size; default the
            preprocessing's image size (``model.preprocess`` or 224).
        opset: ONNX opset (18 or later).
        dynamic: dynamic height and width (multiples of the patch size); the batch is always dynamic.
        fp16, int8: also write those variants.
        verify_export: run every file with ONNX Runtime and compare with dinolab (fp32 must stay within
            :data:`TOLERANCE`, fp16 above :data:`MIN_COSINE`; int8 is reported).
        force: overwrite existing files.

    Returns:
        :class:`ExportResult` (paths, checks). Raises :class:`ConfigError` for invalid arguments (before
        tracing) and :class:`DinolabError` when a check fails (nothing is written then).
    """
    from ..io import check_writable

    require_onnx()
    if not isinstance(opset, int) or opset < 18:
        raise ConfigError(f"opset {opset} is not supported; use 18 or later (default {DEFAULT_OPSET})")
    pre = preprocess_of(model)
    size = _size_hw(image_size if image_size is not None else pre["image_size"])
    pre = preprocess_of(model, size[0] if size[0] == size[1] else list(size))
    check_export_inputs(model, size, pre, head, class_names)
    path = Path(path)
    variants = ["fp32"] + (["fp16"] if fp16 else []) + (["int8"] if int8 else [])
    targets = {v: path if v == "fp32" else path.with_name(f"{path.stem}.{v}{path.suffix or '.onnx'}")
               for v in variants}
    for t in targets.values():
        check_writable(t, force=force)
    wrapper = ExportModule(model, head, head_input)
    modes = [(m, m.training) for m in (model, head) if m is not None]
    wrapper.eval()
    result = ExportResult(targets)
    try:
        with tempfile.TemporaryDirectory(prefix="dinolab-export-", dir=path.parent if path.parent.exists() else None) as tmp:
            tmp_paths = {v: Path(tmp) / t.name for v, t in targets.items()}
            meta = metadata(model, pre, wrapper, dynamic, class_names, "fp32")
            _trace(wrapper, tmp_paths["fp32"], size, dynamic, opset, meta)
            for v in variants[1:]:
                _convert(tmp_paths["fp32"], tmp_paths[v], v)
            if verify_export:
                shapes = check_shapes(model, size, dynamic)
                for v in variants:
                    result.checks += verify(tmp_paths[v], wrapper, shapes, v)
                failed = [c for c in result.checks if not c.ok]
                if failed:
                    raise DinolabError("the exported graph does not reproduce dinolab's outputs, nothing was "
                                       "written:\n" + "\n".join(c.line() for c in failed))
            for v in variants:
                shutil.move(str(tmp_paths[v]), str(targets[v]))
            result.metadata = dict(meta)
    finally:
        for m, mode in modes:
            m.train(mode)
    return result
