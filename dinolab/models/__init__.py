"""Backbones (:class:`VisionTransformer`), heads and named presets."""

from .heads import DINOHead, WeightNormLinear
from .preprocess import Preprocess
from .presets import PRESETS, create_model, list_models
from .vit import VisionTransformer
from .weights import export_hf, load_model, save_model

__all__ = ["VisionTransformer", "DINOHead", "WeightNormLinear", "create_model", "list_models", "PRESETS",
           "load_model", "save_model", "export_hf", "Preprocess"]
