"""The teacher as an exponential moving average of the student: :class:`EMA` and :class:`EMATeacher`.

After each optimizer step, ``teacher <- m·teacher + (1 - m)·student`` for every parameter, with
``m`` rising from 0.996 to 1 along a cosine (DINO v1; 0.992 -> 1 in DINOv2). Only parameters
are averaged, not buffers (as in both official code bases). The update uses ``torch._foreach``
ops, one kernel per operation over all tensors.

Examples:
    >>> student, teacher = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    >>> ema = EMA(student, teacher)
    >>> ema.update(0.99)
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import DinolabError
from .base import TeacherStrategy


class EMA:
    """Pairs the parameters of ``student`` and ``teacher`` by name and averages them in place.

    Both modules must have the same parameter names and shapes (the teacher is built as a copy of
    the student). ``update(m)`` is called after ``optimizer.step()``.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module) -> None:
        s, t = dict(student.named_parameters()), dict(teacher.named_parameters())
        if s.keys() != t.keys():
            missing = sorted(set(s) ^ set(t))[:5]
            raise ValueError(f"student and teacher parameters differ: {missing}")
        for name in s:
            if s[name].shape != t[name].shape:
                raise ValueError(f"parameter {name}: student {tuple(s[name].shape)} vs teacher {tuple(t[name].shape)}")
        self.names = list(s)
        self.student_params = [s[n] for n in self.names]
        self.teacher_params = [t[n] for n in self.names]

    @torch.no_grad()
    def update(self, momentum: float) -> None:
        """``teacher = momentum·teacher + (1 - momentum)·student``."""
        torch._foreach_mul_(self.teacher_params, momentum)
        torch._foreach_add_(self.teacher_params, [p.detach() for p in self.student_params], alpha=1.0 - momentum)


TEACHER_EXPORT = "teacher_backbone.safetensors"


class EMATeacher(TeacherStrategy):
    """Self-distillation: the teacher is an EMA of the whole student (backbone and heads).

    Args:
        student: the student ``ModuleDict`` (``backbone`` + heads).
        backbone: the teacher backbone, :func:`~dinolab.train.teacher.base.ema_copy` of the student's.
        device: where the teacher lives.

    The teacher's heads start as copies of the student's and run in train mode (a BatchNorm in a
    head normalises with the batch, as DINO v1); its backbone runs in eval mode (no stochastic
    depth, no RoPE jitter). The parameter pairing of the EMA is made by :meth:`on_wrapped`, after
    FSDP (if any) has replaced the parameters of both models with their shards.
    """

    export_name = TEACHER_EXPORT
    export_files = (TEACHER_EXPORT, "teacher_backbone.json")
    frozen = False

    def __init__(self, student: nn.ModuleDict, backbone: nn.Module, device: torch.device) -> None:
        heads = {name: copy.deepcopy(module) for name, module in student.items() if name != "backbone"}
        model = nn.ModuleDict({"backbone": backbone, **heads})
        model.requires_grad_(False)
        model.train()
        model["backbone"].eval()
        self.model = model.to(device)
        self.student = student
        self._ema: EMA | None = None

    def on_wrapped(self) -> None:
        self._ema = EMA(self.student, self.model)

    def update(self, momentum: float) -> None:
        if self._ema is None:
            raise RuntimeError("EMATeacher.on_wrapped() must run before the first update")
        self._ema.update(momentum)

    def eval_backbone(self) -> nn.Module:
        return self.model["backbone"]

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.model.state_dict(), "distill": None}

    def load_state_dict(self, state: dict[str, Any], run_dir: Path) -> None:
        if state.get("distill"):
            raise DinolabError(f"the checkpoint in {run_dir} is from a distillation run but the config sets "
                               f"no distill.teacher; resume with the run's own config.yaml")
        self.model.load_state_dict(state["teacher"])

    def export(self, run_dir: Path, iteration: int, epoch: int, backbone: nn.Module | None = None,
               preprocess=None) -> Path:
        from ...models.weights import save_model

        return save_model(backbone or self.model["backbone"], run_dir / TEACHER_EXPORT, overwrite=True,
                          preprocess=preprocess,
                          metadata={"iteration": iteration, "epoch": epoch,
                                    "source": "dinolab train (EMA teacher backbone)"})
