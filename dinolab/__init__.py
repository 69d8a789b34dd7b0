"""dinolab: DINO, DINOv2 and DINOv3 self-supervised vision in one small library.

The public entry points are imported lazily so that ``import dinolab`` is cheap:

- :func:`create_model`, :func:`load_model`, :func:`save_model` (models and weights; ``model.preprocess``
  is a :class:`Preprocess`: how the model sees)
- :func:`embed` (images to embeddings)
- :func:`export_onnx` (ONNX export verified with ONNX Runtime)
- :func:`train`, :class:`Trainer` (pretraining and distillation)
- :func:`finetune` (a classifier on a backbone: head, last blocks, LoRA or full)
- :mod:`dinolab.losses`, :mod:`dinolab.eval`, :mod:`dinolab.curate`
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "create_model": "dinolab.models",
    "load_model": "dinolab.models.weights",
    "save_model": "dinolab.models.weights",
    "Preprocess": "dinolab.models.preprocess",
    "embed": "dinolab.eval.features",
    "train": "dinolab.train.trainer",
    "Trainer": "dinolab.train.trainer",
    "export_onnx": "dinolab.export",
    "finetune": "dinolab.finetune",
}

__all__ = list(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dinolab' has no attribute {name!r}")
