"""Saved frozen-feature classifiers: one ``.safetensors`` file with a JSON record, no pickle.

``dinolab knn|fewshot|linear ... --save C.safetensors`` writes the classifier it evaluated:

======================  =====================================================  =========================
kind                    tensors                                                probabilities
======================  =====================================================  =========================
``knn``                 ``features`` (N, D) reference features, ``labels`` (N,)   vote shares, k and T kept
``prototype``           ``centroids`` (C, D), ``present`` (C,) uint8              softmax(cos / T)
``linear``              ``weight`` (C, D), ``bias`` (C,) (on raw features)        softmax(logits)
======================  =====================================================  =========================

The safetensors metadata holds ``format = "dinolab-feature-classifier"`` and ``record``, a JSON object:
``kind``, ``classes``, ``params`` (k, temperature, method...), ``feature`` (``n_last_blocks``,
``patch_mean``, ``dim`` and, from ``dinolab knn --patch-mean``, ``unit_parts``: each part L2-normalised
before they are joined; how the features are made from the backbone's tokens, as ``dinolab embed``
makes them), ``preprocess`` (what the backbone was fed) and ``backbone``: its ``path`` and
``fingerprint`` (SHA-256 of its state dict, :func:`dinolab.text.aligned.state_fingerprint`).

The backbone is **referenced, not embedded**: a classifier is kilobytes to a few megabytes while
its backbone is 20 MB to over 1 GB, and one backbone usually serves many classifiers (one per
label set, per k, per method). The fingerprint makes the reference safe: loading with any other
weights is refused, so a moved or retrained file cannot silently give wrong predictions; pass the
weights explicitly (``dinolab predict --weights W``) when the recorded path is gone. A classifier
saved from precomputed ``.npz`` embeddings records no backbone and always needs ``--weights``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import WeightsError

FORMAT = "dinolab-feature-classifier"  # the finetune classifier (backbone + head) is "dinolab-classifier"
FORMAT_VERSION = 1
PROTOTYPE_TEMPERATURE = 0.07  # softmax(cos / T) of a saved prototype classifier, as k-NN's vote temperature
KINDS = {"knn": ("features", "labels"), "prototype": ("centroids", "present"), "linear": ("weight", "bias")}


@dataclass
class SavedClassifier:
    """A frozen-feature classifier as stored (see the module docstring)."""

    kind: str
    classes: list[str]
    tensors: dict[str, torch.Tensor]
    params: dict[str, Any] = field(default_factory=dict)
    feature: dict[str, Any] = field(default_factory=lambda: {"n_last_blocks": 1, "patch_mean": False})
    backbone: dict[str, Any] = field(default_factory=dict)
    preprocess: dict[str, Any] | None = None


def backbone_record(model: Any, path: str | os.PathLike | None) -> dict[str, Any]:
    """``{"path", "fingerprint"}`` of the backbone a classifier was made on (fingerprint None for a non-torch model)."""
    from ..text.aligned import state_fingerprint

    fingerprint = state_fingerprint(model) if isinstance(model, torch.nn.Module) else None
    where = None if path is None else str(Path(path).resolve())
    return {"path": where, "fingerprint": fingerprint}


def save_classifier(path: str | os.PathLike, clf: SavedClassifier) -> Path:
    """Write ``clf`` to ``path`` atomically; returns the path."""
    from .. import __version__
    from ..models.formats.tensor_files import write_safetensors

    if clf.kind not in KINDS:
        raise ValueError(f"kind={clf.kind!r} must be one of {', '.join(KINDS)}")
    missing = [k for k in KINDS[clf.kind] if k not in clf.tensors]
    if missing:
        raise ValueError(f"a {clf.kind} classifier needs tensors {missing}")
    record = {"format_version": FORMAT_VERSION, "dinolab_version": __version__, "kind": clf.kind,
              "classes": list(clf.classes), "params": clf.params, "feature": clf.feature, "backbone": clf.backbone,
              "preprocess": clf.preprocess}
    tensors = {k: v.detach().cpu().contiguous() for k, v in clf.tensors.items()}
    write_safetensors(path, tensors, {"format": FORMAT, "record": json.dumps(record)})
    return Path(path)


def is_saved_classifier(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file written by :func:`save_classifier` (reads the header only)."""
    from ..models.formats.tensor_files import file_head, is_safetensors_content

    p = Path(path)
    if not p.is_file() or not is_safetensors_content(file_head(p)):
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            return (f.metadata() or {}).get("format") == FORMAT
    except Exception:  # an unreadable file is not ours; the caller's loader names the problem
        return False


def read_classifier(path: str | os.PathLike) -> SavedClassifier:
    """Read a file written by :func:`save_classifier`, checking its record and tensors."""
    from ..models.formats.tensor_files import read_safetensors

    tensors, meta = read_safetensors(path)
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a saved dinolab classifier; make one with "
                           f"`dinolab knn|fewshot|linear ... --save {Path(path).name}`")
    try:
        r = json.loads(meta["record"])
        kind, classes = r["kind"], [str(c) for c in r["classes"]]
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise WeightsError(f"{path}: damaged classifier record ({e}); save the classifier again") from None
    if r.get("format_version", 0) > FORMAT_VERSION:
        raise WeightsError(f"{path} was written by a newer dinolab; upgrade dinolab")
    if kind not in KINDS or any(k not in tensors for k in KINDS[kind]):
        raise WeightsError(f"{path}: a {kind!r} classifier without its tensors {KINDS.get(kind)}; save it again")
    _check_shapes(path, kind, tensors, classes)
    return SavedClassifier(kind, classes, tensors, r.get("params") or {}, r.get("feature") or {},
                           r.get("backbone") or {}, r.get("preprocess"))


def _check_shapes(path: Any, kind: str, t: dict[str, torch.Tensor], classes: Sequence[str]) -> None:
    c = len(classes)
    if kind == "knn":
        ok = t["features"].ndim == 2 and t["labels"].shape == (t["features"].shape[0],) and \
            (t["labels"].numel() == 0 or 0 <= int(t["labels"].min()) and int(t["labels"].max()) < c)
    elif kind == "prototype":
        ok = t["centroids"].ndim == 2 and t["centroids"].shape[0] == c and t["present"].shape == (c,)
    else:
        ok = t["weight"].ndim == 2 and t["weight"].shape[0] == c and t["bias"].shape == (c,)
    if not ok:
        raise WeightsError(f"{path}: the {kind} tensors do not fit its {c} classes; save the classifier again")
