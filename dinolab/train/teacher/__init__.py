"""The teacher of a run, as a strategy (:class:`TeacherStrategy`): built once, updated after each step,
saved in checkpoints, evaluated and exported.

- :mod:`.ema`: :class:`EMATeacher`, the EMA of the student (DINO / DINOv2 / DINOv3 self-distillation),
  and :class:`EMA`, the parameter averaging it (and the distilled student's EMA) uses;
- :mod:`.frozen`: :class:`FrozenTeacher`, distillation from frozen pretrained weights;
- :mod:`.source`: reading a distillation teacher (weights file, checkpoint or run directory).

:func:`build_teacher` picks the strategy from the config (``distill.teacher`` set: frozen).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from .base import TeacherStrategy, ema_copy
from .ema import EMA, TEACHER_EXPORT, EMATeacher
from .frozen import EXPORT_FILES as STUDENT_EXPORT_FILES
from .frozen import STUDENT_EXPORT, FrozenTeacher, ResizedInput

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["EMA", "EMATeacher", "FrozenTeacher", "ResizedInput", "STUDENT_EXPORT", "STUDENT_EXPORT_FILES",
           "TEACHER_EXPORT", "TeacherStrategy", "build_teacher", "ema_copy"]


def build_teacher(config: Config, student: nn.ModuleDict, ema_backbone: nn.Module,
                  make_heads: Callable[[int], dict[str, nn.Module]], device: torch.device) -> TeacherStrategy:
    """The run's teacher: frozen (``distill.teacher`` set) or the EMA of ``student``.

    ``ema_backbone`` is :func:`ema_copy` of the student backbone, made before the heads were drawn:
    the EMA teacher's backbone, or the distilled student's EMA.
    """
    if config.distill.teacher is not None:
        return FrozenTeacher(config.distill, student=student, student_ema=ema_backbone, make_heads=make_heads,
                             device=device, seed=config.train.seed,
                             global_crops_size=config.crops.global_crops_size,
                             pairs_patches=config.ibot.loss_weight > 0)
    return EMATeacher(student, ema_backbone, device)
