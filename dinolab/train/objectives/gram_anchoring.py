"""Gram anchoring as a training objective (DINOv3, Siméoni et al. 2025, §4.2-4.3).

The student's patch tokens of its global crops (after the final norm, before any head; iBOT-masked,
as in the official code) are matched image by image to the patch tokens of a frozen **Gram
teacher** with :func:`dinolab.losses.gram_loss` (mean squared difference between the Gram matrices of
L2-normalised features).

- **Gram teacher**: a frozen backbone held by the objective, so it is saved in ``checkpoint.pt``
  with the objectives' state and a resumed run continues with the same one. It is a copy of the EMA
  teacher taken after ``gram.snapshot_iteration`` steps (default: when the Gram loss starts), or the
  weights in ``gram.teacher`` (any file :func:`dinolab.load_model` reads, e.g. an earlier run's
  ``teacher_backbone.safetensors``; the official recipe's ``gram.ckpt``).
- **Refresh** (official ``train.py``): after ``n`` completed steps the EMA teacher is copied in when
  ``n >= first_refresh``, ``n % refresh_every == 0`` and fewer than ``max_refreshes`` refreshes
  happened (DINOv3 config: 1.01M, every 10k, at most 3; the paper: every 10k).
- **Weight**: 0 before ``start``, then a cosine ramp from 0 to ``loss_weight`` over
  ``warmup_iterations`` steps, then constant (DINOv3: 0 until 1M, 2.0 after a 1k ramp). While the
  weight is 0 the Gram teacher does not run.
- **Resolution**: the Gram teacher sees ``StepInputs.gram_crops`` (same boxes and flips as the
  global crops, no photometric changes, ``gram.img_size``; DINOv3: 2x the global size) or, without
  them, the global crops. When its patch grid differs from the student's, its ``(h', w')`` feature
  map is resized to the student's ``(h, w)`` grid (bicubic, ``align_corners=False``, no antialias).

Examples:
    >>> s = GramSchedule(weight=2.0, start=100, warmup=10, snapshot=100, refresh_every=20, first_refresh=120,
    ...                  max_refreshes=3)
    >>> s.weight_at(99), round(s.weight_at(105), 6), s.weight_at(110)
    (0.0, 1.0, 2.0)
    >>> [n for n in range(1, 300) if s.refreshes_after(n)]
    [120, 140, 160]
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ...losses import gram_loss
from .base import Objective, StepInputs

if TYPE_CHECKING:
    from ..config import GramConfig


@dataclass(frozen=True)
class GramSchedule:
    """When the Gram term counts and when the Gram teacher is copied from the EMA teacher.

    ``start`` is a 0-based iteration; ``snapshot``, ``first_refresh`` and the refresh test take ``n``,
    the number of completed steps (the copy happens after step ``n``).
    """

    weight: float
    start: int
    warmup: int
    snapshot: int | None  # None: no snapshot (the Gram teacher comes from a file)
    refresh_every: int
    first_refresh: int
    max_refreshes: int | None

    @classmethod
    def from_config(cls, g: GramConfig, iters_per_epoch: int) -> GramSchedule:
        """The schedule of the ``gram`` section ``g`` for a run of ``iters_per_epoch`` steps per epoch."""
        start = g.start_iteration if g.start_iteration is not None else int(round(g.start_epoch * iters_per_epoch))
        snapshot = None if g.teacher else (g.snapshot_iteration if g.snapshot_iteration is not None else start)
        first = g.first_refresh if g.first_refresh is not None else start + g.refresh_every
        return cls(g.loss_weight, start, g.warmup_iterations, snapshot, g.refresh_every, first, g.max_refreshes)

    def weight_at(self, it: int) -> float:
        """Weight of the term at 0-based iteration ``it``."""
        if it < self.start:
            return 0.0
        i = it - self.start
        if i < self.warmup:
            return self.weight * 0.5 * (1.0 - math.cos(math.pi * i / self.warmup))
        return self.weight

    def refreshes_after(self, n: int) -> bool:
        """True if the EMA teacher is copied into the Gram teacher after ``n`` completed steps."""
        if self.refresh_every <= 0 or n < self.first_refresh or n % self.refresh_every:
            return False
        index = n // self.refresh_every - math.ceil(self.first_refresh / self.refresh_every)  # 0-based
        return self.max_refreshes is None or index < self.max_refreshes

    def copies_after(self, n: int) -> bool:
        """True if the Gram teacher becomes the EMA teacher after ``n`` completed steps (snapshot or refresh)."""
        return (self.snapshot is not None and n == self.snapshot and n > 0) or self.refreshes_after(n)


def resize_patch_grid(patches: torch.Tensor, grid: tuple[int, int], size: tuple[int, int], mode: str = "bicubic",
                      antialias: bool = False) -> torch.Tensor:
    """``(B, h·w, D)`` tokens on a ``grid=(h, w)`` map resized to ``(B, H·W, D)`` on ``size=(H, W)``."""
    if tuple(grid) == tuple(size):
        return patches
    b, n, d = patches.shape
    x = patches.float().transpose(1, 2).reshape(b, d, *grid)
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    if mode in ("bilinear", "bicubic"):
        kwargs["antialias"] = antialias
    x = F.interpolate(x, size=size, mode=mode, **kwargs)
    return x.reshape(b, d, size[0] * size[1]).transpose(1, 2)


class GramObjective(Objective):
    """Gram anchoring of the student's global-crop patch tokens to a frozen Gram teacher.

    ``cfg`` is the ``gram`` section, ``patch_size`` the student's. The trainer calls :meth:`setup`
    once the models exist (builds the Gram teacher) and
    :meth:`end_iteration` after every step (snapshot / refresh). ``self.weight`` follows
    :class:`GramSchedule`. Statistics (only while the weight is positive): ``gram_loss`` (unweighted
    term) and ``gram_weight``.
    """

    name = "gram"
    uses_teacher = False

    def __init__(self, cfg: GramConfig, *, patch_size: int) -> None:
        super().__init__(cfg.loss_weight)
        self.cfg = cfg
        self.schedule: GramSchedule | None = None
        self.gram_teacher: nn.Module | None = None
        self.patch_size = patch_size  # the student's

    def setup(self, student: nn.ModuleDict, teacher: nn.ModuleDict, iters_per_epoch: int) -> None:
        self.schedule = GramSchedule.from_config(self.cfg, iters_per_epoch)
        ema = teacher["backbone"]
        if self.cfg.teacher:
            from ...models.weights import load_model

            device = next(ema.parameters()).device
            gram_teacher = load_model(self.cfg.teacher, device=device)
            if self.cfg.refresh_every > 0 and not _same_tensors(gram_teacher, ema):
                raise ConfigError(f"gram.teacher={self.cfg.teacher} has another architecture than the trained model, "
                                  f"so it cannot be refreshed from the EMA teacher; set gram.refresh_every=0")
        else:
            gram_teacher = copy.deepcopy(ema)
        self.gram_teacher = gram_teacher.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> GramObjective:
        super().train(mode)
        if self.gram_teacher is not None:
            self.gram_teacher.eval()  # no stochastic depth, no RoPE jitter
        return self

    def end_iteration(self, iteration: int, student: nn.ModuleDict, teacher: nn.ModuleDict) -> None:
        if self.schedule is not None and self.schedule.copies_after(iteration + 1):
            self.copy_from(teacher["backbone"])

    @torch.no_grad()
    def copy_from(self, backbone: nn.Module) -> None:
        """The Gram teacher becomes (a copy of) ``backbone``."""
        self.gram_teacher.load_state_dict(backbone.state_dict())

    def prepare(self, inputs: StepInputs, generator: torch.Generator | None) -> None:
        if self.schedule is None or self.gram_teacher is None:
            raise RuntimeError("GramObjective.setup(student, teacher, iters_per_epoch) must run before the first step")
        self.weight = self.schedule.weight_at(inputs.iteration)

    def forward(self, student, teacher, out, inputs):
        student_patches = out.student_global["patches"]  # (G·B, h·w, D), iBOT-masked crops
        if self.weight == 0:
            return torch.zeros((), device=student_patches.device), {}
        images = inputs.gram_crops if inputs.gram_crops is not None else inputs.global_crops
        p_s, p_t = self.patch_size, self.gram_teacher.patch_size
        grid = (inputs.global_crops.shape[-2] // p_s, inputs.global_crops.shape[-1] // p_s)
        with torch.no_grad():
            target = self.gram_teacher.forward_features(images)["patches"]  # (G·B, h'·w', D')
            target = resize_patch_grid(target, (images.shape[-2] // p_t, images.shape[-1] // p_t), grid,
                                       self.cfg.resize_mode, self.cfg.resize_antialias)
        loss = gram_loss(student_patches, target, self.cfg.remove_neg, self.cfg.remove_only_teacher_neg)
        return loss, {"gram_loss": loss.detach(), "gram_weight": torch.tensor(self.weight)}


def _same_tensors(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)
