"""The settings of ``dinolab segment fit`` / :func:`dinolab.segment.fit`: one dataclass with every default.

Saved as ``config.yaml`` in the HEAD folder; ``--resume`` starts from it (flags still apply).

Examples:
    >>> cfg = SEGMENT_SCHEMA.load(None, ["steps=10", "head=logreg"])
    >>> cfg.steps, cfg.head, cfg.layers
    (10, 'logreg', 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..runtime.config_loader import ConfigSchema, bounded, device_name

CONFIG_NAME = "config.yaml"


@dataclass
class SegmentConfig:
    """Semantic segmentation on a frozen backbone's patch tokens (see :func:`dinolab.segment.fit`)."""

    weights: str | None = bounded(None, help="backbone weights, any file dinolab.load_model reads (kept frozen)")
    images: str | None = bounded(None, help="folder of images, or builtin:shapes[?n=..] (masks included)")
    masks: str | None = bounded(None, help="folder of palette PNG masks named after the images (255 = ignore)")
    head: Literal["linear", "logreg"] = bounded("linear", help="linear: BatchNorm + 1x1 conv trained with "
                                                              "cross-entropy (DINOv2); logreg: sklearn logistic "
                                                              "regression on patch labels (few images)")
    layers: int = bounded(1, ge=1, help="concatenate the patch tokens of this many last blocks (DINOv2: 1 or 4)")
    classes: str | None = bounded(None, help="class names, comma-separated (default: the set's, else 0..K-1)")
    steps: int = bounded(1000, ge=1, help="linear head: optimizer steps")
    batch_size: int = bounded(8, ge=1, help="linear head: crops per step; prediction: windows per forward pass")
    lr: float = bounded(1e-3, gt=0, help="linear head: peak AdamW learning rate (cosine to lr/100)")
    weight_decay: float = bounded(1e-4, ge=0, help="linear head: AdamW weight decay")
    scale_min: float = bounded(0.5, gt=0, help="augmentation: smallest random rescale of an image")
    scale_max: float = bounded(2.0, gt=0, help="augmentation: largest random rescale of an image")
    flip: bool = bounded(True, help="no random horizontal flips")
    C: float = bounded(0.1, gt=0, help="logreg: inverse L2 strength (DINOv3's foreground notebook keeps 0.1)")
    purity: float = bounded(0.99, gt=0.5, le=1, help="logreg: a patch is labelled with a class covering at least "
                                                     "this share of its pixels; mixed patches are left out")
    max_iter: int = bounded(1000, ge=1, help="logreg: solver iterations")
    image_size: int | None = bounded(None, ge=1, help="shorter side fed to the backbone and training crop size "
                                                      "(null: twice the backbone's recorded size)")
    mean: tuple[float, float, float] | None = bounded(None, help="normalisation mean (null: the backbone's)")
    std: tuple[float, float, float] | None = bounded(None, gt=0, help="normalisation std (null: the backbone's)")
    device: str = bounded("auto", check=device_name, help="auto, cpu, cuda, cuda:N or mps")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = bounded("auto", help="backbone pass precision")
    seed: int = bounded(0, ge=0, le=2**32 - 1, help="seed of the head's initialisation and the augmentation")
    checkpoint_every: int = bounded(100, ge=1, help="linear head: steps between checkpoints")
    progress: bool = bounded(True, help="no progress bars")

    def class_names(self) -> list[str] | None:
        return None if not self.classes else [c.strip() for c in self.classes.split(",")]


SEGMENT_SCHEMA = ConfigSchema(SegmentConfig, command="dinolab segment fit")
