"""EMA of the teacher on a two-parameter toy, against hand-computed values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dinolab.train.teacher.ema import EMA


class Toy(nn.Module):
    def __init__(self, a: float, b: list[float]) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))
        self.b = nn.Parameter(torch.tensor(b))


def test_ema_update_by_hand():
    student, teacher = Toy(1.0, [2.0, -4.0]), Toy(0.0, [0.0, 0.0])
    ema = EMA(student, teacher)
    ema.update(0.9)  # t = 0.9 t + 0.1 s
    assert teacher.a.item() == pytest.approx(0.1)
    assert teacher.b.tolist() == pytest.approx([0.2, -0.4])
    ema.update(0.5)
    assert teacher.a.item() == pytest.approx(0.55)
    assert teacher.b.tolist() == pytest.approx([1.1, -2.2])
    # momentum 1 freezes the teacher; 0 copies the student
    ema.update(1.0)
    assert teacher.a.item() == pytest.approx(0.55)
    ema.update(0.0)
    assert teacher.b.tolist() == pytest.approx([2.0, -4.0])
    assert student.a.item() == 1.0  # the student is never touched


def test_ema_refuses_different_architectures():
    with pytest.raises(ValueError, match="differ"):
        EMA(nn.Linear(2, 2), nn.Linear(2, 2, bias=False))
