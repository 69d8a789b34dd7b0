"""An exported ``.onnx`` backbone run by ONNX Runtime, with the backbone methods :func:`dinolab.embed` calls.

:class:`OnnxBackbone` reads the architecture facts dinolab wrote into the file's metadata
(:mod:`dinolab.export.onnx`) and offers ``forward_features``, ``get_intermediate_layers`` (the last
block only: the graph outputs the final-norm tokens), ``forward``, ``eval`` / ``train`` / ``to``.
Inputs are ``(B, C, H, W)`` torch tensors; outputs come back as float32 tensors on the input's device.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, WeightsError
from .onnx import DEFAULT_PREPROCESS, require_onnx

RUNTIMES = ("torch", "onnx")


class OnnxBackbone:
    """A dinolab-exported ONNX backbone (or classifier) behind the backbone interface.

    Attributes:
        path, session: the file and its ``onnxruntime.InferenceSession``.
        patch_size, embed_dim, depth, num_register_tokens, num_prefix_tokens, in_chans: from the metadata.
        preprocess: dict (image_size, mean, std, resize), class_names: list or None.
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        _, ort = require_onnx()
        self.path = Path(path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for unreadable files
            raise WeightsError(f"{self.path} is not a readable ONNX model ({str(e).splitlines()[0][:200]}); "
                               "write one with `dinolab export WEIGHTS --out FILE.onnx`") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "dinolab.patch_size" not in meta:
            raise WeightsError(f"{self.path} was not written by `dinolab export` (no dinolab metadata); "
                               "export the weights with `dinolab export WEIGHTS --out FILE.onnx`")
        self.metadata = dict(meta)
        self.patch_size = int(meta["dinolab.patch_size"])
        self.embed_dim = int(meta["dinolab.embed_dim"])
        self.depth = int(meta["dinolab.depth"])
        self.num_register_tokens = int(meta["dinolab.num_register_tokens"])
        self.in_chans = int(meta.get("dinolab.in_chans", 3))
        self.preprocess = _as_preprocess({**DEFAULT_PREPROCESS, **json.loads(meta.get("dinolab.preprocess", "{}"))},
                                         self.path)
        names = meta.get("dinolab.class_names")
        self.class_names = json.loads(names) if names else None
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.training = False
        self._fixed_hw = None
        shape = self.session.get_inputs()[0].shape
        if isinstance(shape[2], int) and isinstance(shape[3], int):
            self._fixed_hw = (shape[2], shape[3])

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.num_register_tokens

    def __repr__(self) -> str:
        return f"OnnxBackbone({str(self.path)!r}, outputs={self.output_names})"

    # the nn.Module calls embed makes ------------------------------------------------------------
    def eval(self) -> OnnxBackbone:
        return self

    def train(self, mode: bool = True) -> OnnxBackbone:
        if mode:
            raise ConfigError(f"{self.path} is an ONNX inference graph; it cannot be trained")
        return self

    def to(self, *args: Any, **kwargs: Any) -> OnnxBackbone:
        return self  # ONNX Runtime runs on the CPU here; inputs are moved to it and outputs back

    # inference ----------------------------------------------------------------------------------
    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ConfigError(f"{self.path.name} takes (B, {self.in_chans}, H, W) images, got shape "
                              f"{tuple(x.shape)}; give {self.in_chans}-channel images")
        p = self.patch_size
        h, w = x.shape[-2] // p * p, x.shape[-1] // p * p
        if h == 0 or w == 0:
            raise ConfigError(f"images of {x.shape[-2]}x{x.shape[-1]} px are smaller than one {p}-px patch")
        if self._fixed_hw is not None and (h, w) != self._fixed_hw:
            raise ConfigError(f"{self.path.name} was exported for {self._fixed_hw[0]}x{self._fixed_hw[1]} px only, "
                              f"got {x.shape[-2]}x{x.shape[-1]}; resize to that or re-export with --dynamic")
        return x[..., :h, :w]  # the backbone's strided patch embedding drops the remainder pixels too

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every graph output for ``x`` (B, C, H, W), as float32 tensors on ``x.device``."""
        x = self._check(x)
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        outs = self.session.run(self.output_names, {"pixel_values": arr})
        return {n: torch.from_numpy(o).to(x.device) for n, o in zip(self.output_names, outs)}

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``cls`` (B, D), ``patches`` (B, N, D), ``registers`` (B, R, D), as the backbone's (final norm)."""
        out = self.run(x)
        if "patches" not in out:
            raise ConfigError(f"{self.path.name} is a classifier export (outputs {self.output_names}); "
                              "export the backbone alone for patch features")
        if "registers" not in out:
            out["registers"] = out["patches"][:, :0]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)["cls"]

    __call__ = forward

    def get_intermediate_layers(self, x: torch.Tensor, n: int | list[int] = 1, reshape: bool = False,
                                norm: bool = True, return_class_token: bool = False):
        """The last block's normed tokens, as :meth:`VisionTransformer.get_intermediate_layers` with ``n=1``."""
        if n not in (1, [self.depth - 1], (self.depth - 1,)) or not norm:
            raise ConfigError(f"{self.path.name} outputs the last block's normed tokens only; use n_last_blocks=1 "
                              "(--n-last-blocks 1) or --runtime torch")
        out = self.forward_features(x)
        patches, cls = out["patches"], out["cls"]
        if reshape:
            h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
            patches = patches.reshape(len(x), h, w, -1).permute(0, 3, 1, 2).contiguous()
        return ((patches, cls) if return_class_token else patches,)


def load_onnx(path: str | os.PathLike, *, threads: int | None = None) -> OnnxBackbone:
    """An :class:`OnnxBackbone` for a file written by :func:`dinolab.export_onnx` / ``dinolab export``."""
    if not Path(path).is_file():
        raise WeightsError(f"ONNX model {path} does not exist; write one with `dinolab export WEIGHTS --out {path}`")
    return OnnxBackbone(path, threads=threads)


def load_runtime_model(weights: str | os.PathLike, runtime: str = "torch"):
    """The model the inference commands run: a torch backbone (``runtime="torch"``) or an :class:`OnnxBackbone`."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    is_onnx = str(weights).lower().endswith(".onnx")
    if runtime == "onnx":
        if not is_onnx:
            raise ConfigError(f"--runtime onnx runs an exported .onnx model, got {weights}; export it first with "
                              f"`dinolab export {weights} --out model.onnx`")
        return load_onnx(weights)
    if is_onnx:
        raise ConfigError(f"{weights} is an ONNX model; run it with --runtime onnx")
    from ..models import load_model

    return load_model(weights)


def _as_preprocess(d: dict, path: Path):
    """The recorded preprocessing as a :class:`~dinolab.models.Preprocess` (what the commands read).

    Files whose record is not in Preprocess's own terms (a non-square export size, a free-text resize
    rule) keep their size, mean and std, with the default resize rule."""
    from ..errors import WeightsError
    from ..models.preprocess import Preprocess

    where = f"ONNX metadata of {path}"
    known = {k: v for k, v in d.items() if k in Preprocess.__dataclass_fields__ and k != "source"}
    try:
        return Preprocess.from_dict(known, where)
    except WeightsError:
        size = d.get("image_size")
        return Preprocess(image_size=size if isinstance(size, int) else 224, mean=tuple(d["mean"]),
                          std=tuple(d["std"]), source=f"size, mean and std {where}")
