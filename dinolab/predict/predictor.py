"""One prediction interface for every way a classifier was made: :func:`load_predictor` -> :class:`Predictor`.

=======================================  ==========================================================
MODEL                                    what :func:`load_predictor` returns
=======================================  ==========================================================
``C.safetensors`` from ``dinolab knn /   :class:`FeaturePredictor`: the referenced backbone (or
fewshot / linear --save``                ``weights``, same fingerprint) + k-NN / prototype / linear
an aligned model folder (``dinolab       :class:`ZeroShotPredictor`: the classes given as ``classes``
align --out A``)                         (prompt-ensembled class embeddings, softmax of the scaled cosine)
a ``dinolab finetune`` folder or its     the fine-tuned ``Classifier`` of
``classifier.safetensors``               :func:`dinolab.finetune.classifier.load_classifier`
=======================================  ==========================================================

A predictor has ``classes`` (names, in probability-column order), ``preprocess`` (how images are
prepared for it: the :class:`~dinolab.models.Preprocess` it was made with) and
``predict_proba(pixels)``: ``(B, 3, H, W)`` images normalised by ``preprocess`` -> ``(B, C)``
probabilities. :func:`dinolab.predict.run.predict_images` runs it over a data set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, WeightsError
from ..models.preprocess import Preprocess, resolve_preprocess
from .heads import knn_proba, linear_proba, prototype_proba
from .saved import SavedClassifier, is_saved_classifier, read_classifier

FINETUNE_FILE = "classifier.safetensors"


class Predictor(nn.Module):
    """Base class: ``classes``, ``preprocess`` and ``predict_proba`` (see the module docstring)."""

    kind = "predictor"

    def __init__(self, classes: Sequence[str], preprocess: Preprocess):
        super().__init__()
        self.classes, self.preprocess = [str(c) for c in classes], preprocess

    def predict_proba(self, pixels: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def backbone_features(model: nn.Module, pixels: torch.Tensor, n_last_blocks: int = 1,
                      patch_mean: bool = False, unit_parts: bool = False) -> torch.Tensor:
    """``(B, D')`` features as :func:`dinolab.embed` makes them: the normed CLS of the last ``n_last_blocks``
    blocks, then (``patch_mean``) the mean of the last block's patch tokens; ``unit_parts``: each of them
    L2-normalised first (``dinolab knn --patch-mean``)."""
    from ..eval.microbatch import in_micro_batches, micro_batch_size_for

    forward = lambda x: model.get_intermediate_layers(x, n_last_blocks, return_class_token=True)  # noqa: E731
    outputs = in_micro_batches(forward, pixels, micro_batch_size_for(model, pixels))
    parts = [c.float() for _, c in outputs] + ([outputs[-1][0].float().mean(dim=1)] if patch_mean else [])
    if unit_parts:
        parts = [F.normalize(p, dim=-1) for p in parts]
    return torch.cat(parts, dim=-1)


class FeaturePredictor(Predictor):
    """A frozen backbone and a saved k-NN / prototype / linear classifier on its features."""

    def __init__(self, backbone: nn.Module, saved: SavedClassifier, preprocess: Preprocess):
        super().__init__(saved.classes, preprocess)
        self.kind = saved.kind
        self.backbone = backbone.requires_grad_(False).eval()
        self.saved = saved
        for name, t in saved.tensors.items():
            self.register_buffer(name, t.clone(), persistent=False)

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        p, c = self.saved.params, len(self.classes)
        if self.kind == "knn":
            return knn_proba(feats, self.features, self.labels, k=int(p["k"]), temperature=float(p["temperature"]),
                             num_classes=c)
        if self.kind == "prototype":
            return prototype_proba(feats, self.centroids, self.present.bool(), temperature=float(p["temperature"]))
        return linear_proba(feats, self.weight, self.bias)

    def predict_proba(self, pixels: torch.Tensor) -> torch.Tensor:
        f = self.saved.feature
        with torch.no_grad():
            feats = backbone_features(self.backbone, pixels, int(f.get("n_last_blocks", 1)),
                                      bool(f.get("patch_mean", False)), bool(f.get("unit_parts", False)))
            return self.head(feats)


class ZeroShotPredictor(Predictor):
    """An aligned model and class names: ``softmax(scale * cos(image, class))`` over prompt-ensembled classes."""

    kind = "zeroshot"

    def __init__(self, aligned: nn.Module, classes: Sequence[str], templates: Sequence[str] | None = None):
        from ..text.zeroshot import DEFAULT_TEMPLATES, class_embeddings

        super().__init__(classes, aligned.preprocess)
        self.aligned = aligned.eval()
        self.register_buffer("class_emb", class_embeddings(aligned, self.classes, tuple(templates or DEFAULT_TEMPLATES)),
                             persistent=False)

    def predict_proba(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            emb = self.aligned.encode_images(pixels).float()
            return torch.softmax(self.aligned.scale * emb @ self.class_emb.T, dim=1)


class FinetunedPredictor(Predictor):
    """The fine-tuned classifier of ``dinolab finetune`` (its own ``predict_proba``, ``classes``, ``preprocess``)."""

    kind = "finetune"

    def __init__(self, classifier: nn.Module):
        super().__init__(classifier.classes, classifier.preprocess)
        self.classifier = classifier.eval()

    def predict_proba(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.classifier.predict_proba(pixels).float()


def _backbone_for(saved: SavedClassifier, where: Path, weights: Any) -> tuple[nn.Module, str]:
    from ..models.weights import load_model
    from ..text.aligned import state_fingerprint

    info = saved.backbone
    if weights is not None:
        model, source = (weights, "the given weights") if isinstance(weights, nn.Module) else (load_model(weights),
                                                                                                str(weights))
    elif info.get("path") and Path(info["path"]).exists():
        model, source = load_model(info["path"]), info["path"]
    elif info.get("path"):
        raise WeightsError(f"the backbone of classifier {where} is not at {info['path']} any more; pass the weights "
                           f"it was made with: --weights W")
    else:
        raise WeightsError(f"classifier {where} was saved from precomputed embeddings and records no backbone; pass "
                           f"the weights that made those embeddings: --weights W")
    model = model.float()
    expected = info.get("fingerprint")
    if expected and state_fingerprint(model) != expected:
        raise WeightsError(f"{source} is not the backbone classifier {where} was made with (fingerprint "
                           f"{state_fingerprint(model)[:12]} != {expected[:12]}); pass those weights, or leave "
                           f"--weights out to use the recorded {info.get('path')}")
    return model, source


def _finetuned(path: Path) -> Predictor:
    try:
        from ..finetune.classifier import load_classifier
    except ImportError:
        raise WeightsError(f"{path} looks like a `dinolab finetune` classifier, but this dinolab has no "
                           f"dinolab.finetune module to read it; install a dinolab with `dinolab finetune`") from None
    return FinetunedPredictor(load_classifier(path))


def load_predictor(path: str | os.PathLike, *, weights: Any = None, classes: Sequence[str] | None = None,
                   templates: Sequence[str] | None = None, device: str | torch.device = "cpu") -> Predictor:
    """The :class:`Predictor` of ``path`` (see the module docstring).

    Args:
        path: a saved classifier file, an aligned model folder, or a finetune folder / its classifier file.
        weights: backbone weights (path or model) in place of the recorded ones (same fingerprint required).
        classes: class names, for an aligned model (zero-shot) only.
        templates: prompt templates for zero-shot (default those of ``dinolab zeroshot``).
    """
    from ..device import resolve_device

    p = Path(path)
    if not p.exists():
        raise WeightsError(f"{p} does not exist; give a classifier saved with --save, an aligned model folder or "
                           f"a `dinolab finetune` output")
    aligned = p.is_dir() and (p / "aligned.json").is_file() or p.name == "aligned.json"
    if classes is not None and not aligned:
        raise ConfigError(f"--classes is for an aligned model (zero-shot); {p} has its own classes")
    if is_saved_classifier(p):
        saved = read_classifier(p)
        backbone, _ = _backbone_for(saved, p, weights)
        pp = Preprocess.from_dict(saved.preprocess, str(p)) if saved.preprocess else resolve_preprocess(backbone)
        predictor: Predictor = FeaturePredictor(backbone, saved, pp)
    elif aligned:
        from ..text import load_aligned

        if not classes:
            raise ConfigError(f"{p} is an aligned model: zero-shot prediction needs the class names, "
                              f"--classes \"cat,dog,...\"")
        predictor = ZeroShotPredictor(load_aligned(p, weights=weights), classes, templates)
    elif p.is_dir() and (p / FINETUNE_FILE).is_file() or p.name == FINETUNE_FILE:
        if weights is not None:
            raise ConfigError(f"{p} is a fine-tuned classifier with its own backbone; leave --weights out")
        predictor = _finetuned(p)
    else:
        raise WeightsError(f"{p} is none of: a classifier saved with `dinolab knn|fewshot|linear --save`, an aligned "
                           f"model folder (aligned.json), a `dinolab finetune` folder ({FINETUNE_FILE})")
    return predictor.to(resolve_device(device)).eval()
