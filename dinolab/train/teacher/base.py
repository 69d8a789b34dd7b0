"""The teacher as a strategy: what the objectives compare the student with, and how it moves.

A :class:`TeacherStrategy` owns the teacher models the objectives read (``model``: a ``ModuleDict``
with ``backbone`` and the heads) and everything that differs between kinds of teacher:

- :meth:`~TeacherStrategy.update` after each optimizer step (the EMA of the student, or nothing);
- :meth:`~TeacherStrategy.eval_backbone`: the backbone to evaluate and export (the EMA teacher, or
  the EMA of the distilled student);
- :meth:`~TeacherStrategy.state_dict` / :meth:`~TeacherStrategy.load_state_dict`: its entries of
  ``checkpoint.pt`` (``teacher`` and ``distill``);
- :meth:`~TeacherStrategy.export`: the backbone file written at each epoch end (``export_name``).

:class:`~dinolab.train.teacher.ema.EMATeacher` is self-distillation (DINO, DINOv2, DINOv3);
:class:`~dinolab.train.teacher.frozen.FrozenTeacher` distillation from a frozen pretrained model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from torch import nn

from ...models import VisionTransformer


class TeacherStrategy(ABC):
    """One kind of teacher (see the module docstring). ``model`` is what the objectives read."""

    model: nn.ModuleDict
    export_name: str  # the exported backbone's file name in the run directory
    export_files: tuple[str, ...]  # every file export writes (the run directory's clean-up lists them)
    frozen: bool  # True: the teacher never moves (distillation)

    def on_wrapped(self) -> None:
        """Called once the models are final: after DDP / FSDP wrapping (FSDP shards them in place)."""

    @abstractmethod
    def update(self, momentum: float) -> None:
        """After a successful optimizer step: move what follows the student (EMA with ``momentum``)."""

    @abstractmethod
    def eval_backbone(self) -> nn.Module:
        """The backbone to use, evaluate (k-NN) and export."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Entries of ``checkpoint.pt``: ``{"teacher": ..., "distill": ...}`` (tensors and plain data)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any], run_dir: Path) -> None:
        """Restore from a whole checkpoint ``state`` (``run_dir`` names it in errors)."""

    @abstractmethod
    def export(self, run_dir: Path, iteration: int, epoch: int, backbone: nn.Module | None = None,
               preprocess=None) -> Path:
        """Write :meth:`eval_backbone` (or ``backbone``, a gathered copy of it) as ``run_dir / export_name``,
        recording ``preprocess`` (a :class:`~dinolab.models.Preprocess`: how the backbone sees)."""

    def describe(self) -> str | None:
        """A line for the run's messages, or None."""
        return None


def ema_copy(backbone: VisionTransformer) -> VisionTransformer:
    """A copy of ``backbone`` without stochastic depth: the start of an EMA of it.

    Built as a new module (drawing its discarded initialisation from the global RNG, as the run's
    random heads are drawn after it) and then loaded with ``backbone``'s weights.
    """
    copy = VisionTransformer(**{**backbone.config, "drop_path_rate": 0.0})
    copy.load_state_dict(backbone.state_dict())
    return copy
