"""Evaluations on frozen features: embeddings, k-NN, linear probes, few-shot, retrieval, copy detection.

Typical use: embed once, evaluate many ways::

    import dinolab
    from dinolab.eval import embed, knn_classify, linear_probe, few_shot_episodes

    model = dinolab.load_model("weights.pth")
    train, val = embed(model, "data/train"), embed(model, "data/val")
    knn = knn_classify(train.cls, train.labels, val.cls, val.labels)        # {k: {"top1", ...}}
    probe = linear_probe(train.cls, train.labels, val.cls, val.labels)      # ProbeResult
    shots = few_shot_episodes(train.cls, train.labels, shots=(1, 5, 10))  # {k: mean ± 95% interval}

Names are imported on first use, so ``import dinolab.eval`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "embed": "features", "Embeddings": "features",
    "knn_classify": "knn", "nearest_neighbours": "knn",
    "linear_probe": "linear", "logistic_regression_probe": "linear", "ProbeResult": "linear",
    "classification_report": "metrics",
    "nearest_centroid_classify": "fewshot", "class_centroids": "fewshot", "few_shot_episodes": "fewshot",
    "mean_confidence_interval": "fewshot",
    "retrieval_metrics": "retrieval", "average_precision": "retrieval", "gem_pool": "retrieval",
    "copy_detection_descriptor": "retrieval", "copy_detection_eval": "retrieval", "augment_copy": "retrieval",
    "evaluate_objects": "objects", "object_masks": "objects", "ObjectsResult": "objects",
    "patch_tokens": "dense", "patch_similarity": "dense", "dense_image_size": "dense",
    "segment_video": "video", "LabelPropagation": "propagation", "PropagationSettings": "propagation",
    "VideoScores": "davis", "f_measure": "davis",
    "InferenceOptions": "options", "add_inference_arguments": "options",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
