"""Model building for a run: the student backbone and heads, the teacher strategy, the multi-crop.

The order of the random draws is part of the run's numbers: the student backbone, then its EMA copy
(:func:`~dinolab.train.teacher.ema_copy`), then the heads of the objectives, all from the global RNG
seeded with ``train.seed``.

Examples:
    >>> from dinolab.train.config import load_config
    >>> arch_kwargs(load_config("default"))["patch_size"]
    8
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch
from torch import nn

from ..models import VisionTransformer, create_model
from .config import Config
from .crop_plan import CropSizes
from .objectives import Objectives
from .pretrained import load_pretrained_backbone
from .teacher import TeacherStrategy, build_teacher, ema_copy


def arch_kwargs(config: Config) -> dict[str, Any]:
    """``create_model`` keywords of the ``model`` section (image size: the global crop size)."""
    m = config.model
    kwargs: dict[str, Any] = {"img_size": config.crops.global_crops_size,
                              "drop_path_rate": m.drop_path_rate, "drop_path_uniform": m.drop_path_uniform}
    for key in ("patch_size", "embed_dim", "depth", "num_heads"):
        if getattr(m, key) is not None:
            kwargs[key] = getattr(m, key)
    kwargs.update(m.options)
    return kwargs


def build_backbone(config: Config, announce: Callable[[str], None] | None = None) -> VisionTransformer:
    """The student backbone: random (seeded by the caller) or ``model.pretrained`` (``announce`` gets the line
    naming its file, format and architecture)."""
    m = config.model
    if m.pretrained:
        return load_pretrained_backbone(m.pretrained, m.arch, arch_kwargs(config), announce)
    return create_model(m.arch, **arch_kwargs(config))


def random_init_backbone(config: Config) -> VisionTransformer:
    """The run's architecture at its ``train.seed`` random initialisation, without stochastic depth."""
    torch.manual_seed(config.train.seed)
    return create_model(config.model.arch, **{**arch_kwargs(config), "drop_path_rate": 0.0})


def build_models(config: Config, objectives: Objectives, device: torch.device,
                 announce: Callable[[str], None] | None = None) -> tuple[nn.ModuleDict, TeacherStrategy]:
    """The student (``backbone`` + the objectives' heads, on ``device``, train mode) and the teacher."""
    backbone = build_backbone(config, announce)
    ema_backbone = ema_copy(backbone)
    student = nn.ModuleDict({"backbone": backbone, **objectives.make_heads(backbone.embed_dim)})
    student = student.to(device).train()
    return student, build_teacher(config, student, ema_backbone, objectives.make_heads, device)


def make_multicrop(config: Config, sizes: CropSizes | None = None):
    """The run's :class:`~dinolab.data.MultiCrop`, or one at other ``sizes`` (Gram-teacher crops, high resolution)."""
    from ..data.multicrop import MultiCrop

    cr = config.crops
    sizes = sizes or CropSizes(cr.global_crops_size, cr.local_crops_size, None)
    return MultiCrop(global_size=sizes.global_size, global_scale=tuple(cr.global_crops_scale),
                     n_local=cr.local_crops_number, local_size=sizes.local_size,
                     local_scale=tuple(cr.local_crops_scale), gram_size=sizes.gram_size, **cr.options)


def num_workers(config: Config) -> int:
    """Decoding processes: ``data.num_workers``, else 0 for built-in sets and ``min(8, CPUs)`` for files."""
    n = config.data.num_workers
    if n is not None:
        return n
    return 0 if str(config.data.source).startswith("builtin:") else min(8, os.cpu_count() or 1)
