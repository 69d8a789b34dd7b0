"""The loss terms of a training method, one module each, built from their own config sections.

- :mod:`.base`: :class:`StepInputs`, :class:`Objective`, the :class:`Objectives` collection (the
  shared student/teacher forward pass) and the registry (:func:`register_objective`);
- :mod:`.dino_cls`: DINO CLS self-distillation, and :func:`dino_head` (every DINO/iBOT head);
- :mod:`.ibot_patch`: iBOT masked-patch self-distillation (DINOv2/v3);
- :mod:`.koleo_cls`: the KoLeo spreading term on the backbone CLS (DINOv2/v3);
- :mod:`.gram_anchoring`: DINOv3 Gram anchoring to a frozen Gram teacher;
- :mod:`.relation_distill`: relational distillation from a frozen teacher.

The maths of each term is in :mod:`dinolab.losses`; these modules add what a training step needs
(heads, masks, deferred center updates, the Gram teacher). The factories below read the config and
pass each objective its own section plus the explicit values it needs (the patch size, whether a
frozen teacher is used); their order is the order of the terms in the loss and in checkpoints.

Examples:
    >>> from dinolab.train.config import load_config
    >>> [o.name for o in Objectives.from_config(load_config("dinov2_shapes"))]
    ['dino', 'ibot', 'koleo']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import (
    OBJECTIVES,
    CenteredObjective,
    Forward,
    Objective,
    Objectives,
    StepInputs,
    register_objective,
    unregister_objective,
)
from .dino_cls import DINOObjective, dino_head
from .gram_anchoring import GramObjective, GramSchedule
from .ibot_patch import iBOTObjective
from .koleo_cls import KoLeoObjective
from .relation_distill import RelationDistillObjective

if TYPE_CHECKING:
    from ..config import Config, ModelConfig

__all__ = ["OBJECTIVES", "CenteredObjective", "DINOObjective", "Forward", "GramObjective", "GramSchedule",
           "KoLeoObjective", "Objective", "Objectives", "RelationDistillObjective", "StepInputs", "dino_head",
           "iBOTObjective", "patch_size_of", "register_objective", "unregister_objective"]


def patch_size_of(model: ModelConfig) -> int:
    """The student's patch size: ``model.patch_size`` or the architecture's."""
    from ...models.presets import preset_config

    return model.patch_size or int(preset_config(model.arch).get("patch_size", 16))


def _dino(c: Config) -> DINOObjective | None:
    return DINOObjective(c.dino) if c.dino.loss_weight > 0 else None


def _ibot(c: Config) -> iBOTObjective | None:
    if c.ibot.loss_weight <= 0:
        return None
    return iBOTObjective(c.ibot, dino=c.dino, patch_size=patch_size_of(c.model),
                         all_tokens=c.distill.teacher is not None)


def _koleo(c: Config) -> KoLeoObjective | None:
    return KoLeoObjective(c.koleo) if c.koleo.loss_weight > 0 else None


def _gram(c: Config) -> GramObjective | None:
    return GramObjective(c.gram, patch_size=patch_size_of(c.model)) if c.gram.loss_weight > 0 else None


def _relation(c: Config) -> RelationDistillObjective | None:
    if c.distill.teacher is None or c.distill.relation_loss_weight <= 0:
        return None
    return RelationDistillObjective(c.distill)


for _name, _factory in (("dino", _dino), ("ibot", _ibot), ("koleo", _koleo), ("gram", _gram),
                        ("relation", _relation)):
    register_objective(_name, _factory)
