"""The KoLeo objective (Sablayrolles et al. 2019, as in DINOv2 / DINOv3).

:func:`dinolab.losses.koleo_loss` on the student's backbone CLS token (after the final norm, before
any head), computed on each global crop separately (the B images of crop 0, then of crop 1, ...) and
summed over the crops; the trainer multiplies the sum by ``koleo.loss_weight`` (DINOv2: 0.1).

Examples:
    >>> from dinolab.train.config import load_config
    >>> from dinolab.train.objectives import Objectives
    >>> [o.name for o in Objectives.from_config(load_config("default", ["koleo.loss_weight=0.1"]))]
    ['dino', 'koleo']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ...losses import koleo_loss
from .base import Objective

if TYPE_CHECKING:
    from ..config import KoleoConfig


class KoLeoObjective(Objective):
    """Σ over global crops of KoLeo on the ``(B, D)`` backbone CLS tokens of that crop.

    Statistics: ``koleo_loss`` (unweighted term).
    """

    name = "koleo"
    uses_teacher = False

    def __init__(self, cfg: KoleoConfig) -> None:
        super().__init__(cfg.loss_weight)

    def forward(self, student, teacher, out, inputs):
        cls = out.student_global["cls"]  # (G·B, D), crop-major
        term = torch.stack([koleo_loss(chunk) for chunk in cls.chunk(inputs.n_global)]).sum()
        return term, {"koleo_loss": term.detach()}
