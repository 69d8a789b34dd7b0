"""A fine-tuned image classifier: backbone + linear head + class names, in one safetensors file.

``classifier.safetensors`` holds the tensors ``backbone.*`` (a dinolab :class:`VisionTransformer`,
LoRA adapters already merged) and ``head.weight`` / ``head.bias``; its header's metadata entry
``dinolab_classifier`` is the JSON record::

    {"format": "dinolab-classifier", "format_version": 1, "backbone": {...VisionTransformer kwargs...},
     "classes": [...], "preprocess": {...Preprocess fields...}, "temperature": T,
     "feature": "cls" | "cls+patch", "n_blocks": 1, "metadata": {...how it was trained...}}

``feature`` is what the head reads: the final-norm CLS token of the last ``n_blocks`` blocks
(concatenated, as DINOv2's linear evaluation), with ``+patch`` the mean patch token of the last
block appended (as Hugging Face's ``Dinov2ForImageClassification``).

Examples:
    >>> import torch
    >>> from dinolab.models import VisionTransformer
    >>> bb = VisionTransformer(img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    >>> clf = Classifier(bb, torch.nn.Linear(64, 3), ["a", "b", "c"], feature="cls+patch")
    >>> clf(torch.zeros(2, 3, 16, 16)).shape, round(float(clf.predict_proba(torch.zeros(1, 3, 16, 16)).sum()), 6)
    (torch.Size([2, 3]), 1.0)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import WeightsError
from ..models.preprocess import Preprocess

FORMAT = "dinolab-classifier"
FORMAT_VERSION = 1
HEADER_KEY = "dinolab_classifier"
FILE_NAME = "classifier.safetensors"
FEATURES = ("cls", "cls+patch")


def feature_dim(embed_dim: int, feature: str, n_blocks: int = 1) -> int:
    """Width of the feature :class:`Classifier` feeds its head."""
    return embed_dim * (n_blocks + (1 if feature == "cls+patch" else 0))


def backbone_features(backbone: nn.Module, pixels: torch.Tensor, feature: str = "cls", n_blocks: int = 1
                      ) -> torch.Tensor:
    """``(B, 3, H, W)`` -> ``(B, F)``: the CLS tokens of the last ``n_blocks`` blocks [+ mean patch token]."""
    if n_blocks == 1:
        out = backbone.forward_features(pixels)
        parts, patches = [out["cls"]], out["patches"]
    else:
        layers = backbone.get_intermediate_layers(pixels, n=n_blocks, return_class_token=True, norm=True)
        parts, patches = [cls for _, cls in layers], layers[-1][0]
    if feature == "cls+patch":
        parts.append(patches.mean(dim=1))
    return torch.cat(parts, dim=-1)


class Classifier(nn.Module):
    """``backbone`` features -> ``head`` logits over ``classes``.

    Attributes:
        backbone: the (fine-tuned) :class:`~dinolab.models.VisionTransformer`.
        head: ``nn.Linear(F, C)``.
        classes: the ``C`` class names, in logit order.
        preprocess: how images are prepared (:class:`~dinolab.models.Preprocess`).
        temperature: the calibration temperature (applied by :meth:`predict_proba` only).
        feature: ``"cls"`` or ``"cls+patch"``; n_blocks: CLS tokens of that many last blocks.
        metadata: how it was trained (free-form, JSON).
    """

    def __init__(self, backbone: nn.Module, head: nn.Linear, classes: Sequence[str], *,
                 preprocess: Preprocess | None = None, temperature: float = 1.0, feature: str = "cls",
                 n_blocks: int = 1, metadata: dict[str, Any] | None = None) -> None:
        super().__init__()
        if feature not in FEATURES:
            raise ValueError(f"feature={feature!r} is not one of {FEATURES}")
        self.backbone, self.head = backbone, head
        self.classes = [str(c) for c in classes]
        self.preprocess = preprocess or getattr(backbone, "preprocess", None) or Preprocess()
        self.temperature = float(temperature)
        self.feature, self.n_blocks = feature, int(n_blocks)
        self.metadata = dict(metadata or {})

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised -> ``(B, F)``."""
        return backbone_features(self.backbone, pixels, self.feature, self.n_blocks)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised -> ``(B, C)`` logits (temperature not applied)."""
        return self.head(self.features(pixels))

    @torch.no_grad()
    def predict_proba(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` calibrated probabilities ``softmax(logits / temperature)``."""
        return torch.softmax(self.forward(pixels).float() / self.temperature, dim=-1)


def _record(classifier: Classifier) -> dict[str, Any]:
    from .. import __version__
    from ..models.formats.dinolab_format import _jsonable, unwrap

    return {"format": FORMAT, "format_version": FORMAT_VERSION,
            "backbone": _jsonable(unwrap(classifier.backbone).config), "classes": list(classifier.classes),
            "preprocess": classifier.preprocess.to_dict(), "temperature": classifier.temperature,
            "feature": classifier.feature, "n_blocks": classifier.n_blocks,
            "metadata": json.loads(json.dumps(classifier.metadata, default=str)), "dinolab_version": __version__}


def save_classifier(path: str | os.PathLike, classifier: Classifier) -> None:
    """Write ``classifier`` to ``path`` (a ``.safetensors`` file, atomically; LoRA must be merged first)."""
    from ..models.formats.tensor_files import write_safetensors
    from .lora import LoRALinear

    if any(isinstance(m, LoRALinear) for m in classifier.modules()):
        raise ValueError("merge the LoRA adapters (dinolab.finetune.lora.merge_lora) before saving")
    tensors = {f"backbone.{k}": v.detach().float() for k, v in classifier.backbone.state_dict().items()}
    tensors.update({f"head.{k}": v.detach().float() for k, v in classifier.head.state_dict().items()})
    write_safetensors(path, tensors, {"format": "pt", HEADER_KEY: json.dumps(_record(classifier), sort_keys=True)})


def _bad(path: Path, why: str) -> WeightsError:
    return WeightsError(f"{path}: {why}; expected a classifier.safetensors written by `dinolab finetune`")


def _read_record(path: Path, header: dict[str, str]) -> dict[str, Any]:
    text = header.get(HEADER_KEY)
    if not text:
        raise _bad(path, "no dinolab classifier record in its header (a backbone? load it with dinolab.load_model)")
    try:
        record = json.loads(text)
    except ValueError as e:
        raise _bad(path, f"its classifier record is not valid JSON ({e})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise _bad(path, f"its record's format is not {FORMAT!r}")
    version = record.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise _bad(path, f"format_version {version!r} is newer than this dinolab reads ({FORMAT_VERSION}); upgrade")
    classes, t = record.get("classes"), record.get("temperature")
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise _bad(path, "its record has no list of at least 2 class names")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
        raise _bad(path, f"temperature {t!r} is not a positive number")
    if record.get("feature") not in FEATURES or not isinstance(record.get("n_blocks"), int) \
            or record["n_blocks"] < 1 or not isinstance(record.get("backbone"), dict):
        raise _bad(path, "its record's feature, n_blocks or backbone entry is missing or invalid")
    return record


def _build(path: Path, record: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Classifier:
    from ..models.weights import LoadedWeights, build_model

    sd = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}
    w, b = tensors.get("head.weight"), tensors.get("head.bias")
    try:
        preprocess = Preprocess.from_dict(record.get("preprocess") or {}, str(path))
    except (ValueError, TypeError, WeightsError) as e:
        raise _bad(path, f"its preprocess entry is invalid ({e})") from None
    backbone = build_model(LoadedWeights(path, "dinolab", dict(record["backbone"]), sd, preprocess=preprocess))
    n = len(record["classes"])
    want = feature_dim(backbone.embed_dim, record["feature"], record["n_blocks"])
    if w is None or b is None or tuple(w.shape) != (n, want) or tuple(b.shape) != (n,):
        got = None if w is None else tuple(w.shape)
        raise _bad(path, f"head.weight {got} does not fit {n} classes x {want} features")
    head = nn.Linear(want, n)
    head.load_state_dict({"weight": w.float(), "bias": b.float()})
    return Classifier(backbone, head, record["classes"], preprocess=preprocess, temperature=float(record["temperature"]),
                      feature=record["feature"], n_blocks=record["n_blocks"], metadata=record.get("metadata") or {})


def load_classifier(path: str | os.PathLike) -> Classifier:
    """The :class:`Classifier` in ``path`` (the file, or a ``dinolab finetune`` output folder), in eval mode.

    Raises:
        WeightsError: naming the file, on anything missing, damaged or inconsistent.
    """
    from ..models.formats.tensor_files import read_safetensors

    p = Path(path)
    if p.is_dir():
        p = p / FILE_NAME
    if not p.is_file():
        raise WeightsError(f"{p}: no such classifier file; give the classifier.safetensors (or the folder) that "
                           f"`dinolab finetune --out DIR` wrote")
    tensors, header = read_safetensors(p)
    record = _read_record(p, header)
    return _build(p, record, tensors).eval()
