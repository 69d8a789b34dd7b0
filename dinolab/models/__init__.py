"""Backbones (:class:`VisionTransformer`), heads and named presets."""

from .heads import DINOHead, WeightNormLinear
from .presets import PRESETS, create_model, list_models
from .vit import VisionTransformer

__all__ = ["VisionTransformer", "DINOHead", "WeightNormLinear", "create_model", "list_models", "PRESETS"]
