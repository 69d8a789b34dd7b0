"""The teacher as an exponential moving average of the student.

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

import torch
from torch import nn


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
