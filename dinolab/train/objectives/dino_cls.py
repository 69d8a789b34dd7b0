"""The DINO CLS objective (Caron et al. 2021) and the one place the DINO head is built.

:func:`dino_head` builds a :class:`~dinolab.models.DINOHead` from the ``dino`` section's head keys;
iBOT's separate patch head uses it too (same architecture, its own prototype count).

Examples:
    >>> from dinolab.train.config import DinoConfig
    >>> head = dino_head(64, DinoConfig(out_dim=32, head_hidden_dim=48, head_bottleneck_dim=16))
    >>> tuple(head(torch.randn(2, 64)).shape)
    (2, 32)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ...losses import DINOLoss, collapse_stats
from ...models import DINOHead
from .base import CenteredObjective

if TYPE_CHECKING:
    from ..config import DinoConfig


def dino_head(embed_dim: int, cfg: DinoConfig, out_dim: int | None = None) -> DINOHead:
    """``(B, embed_dim) -> (B, out_dim or cfg.out_dim)``: MLP, L2-normalised bottleneck, prototypes."""
    return DINOHead(embed_dim, out_dim or cfg.out_dim, hidden_dim=cfg.head_hidden_dim,
                    bottleneck_dim=cfg.head_bottleneck_dim, nlayers=cfg.head_nlayers, use_bn=cfg.use_bn_in_head,
                    norm_last_layer=cfg.norm_last_layer, weight_norm=cfg.head_weight_norm)


class DINOObjective(CenteredObjective):
    """DINO CLS self-distillation: cross-entropy between teacher targets and student views.

    The teacher's global-view CLS tokens go through the teacher ``dino_head``; its targets are
    centred and sharpened (softmax centering or Sinkhorn-Knopp, :class:`dinolab.losses.DINOLoss`).
    The student's CLS tokens of every view go through the student ``dino_head`` in one call. The
    loss averages every (teacher view, student view) pair except the same-view ones. The center is
    updated once per optimizer step, from the teacher logits of all its micro-batches.

    Statistics: ``dino_loss``, ``teacher_entropy`` and ``kl_uniform`` (collapse monitors).
    """

    name = "dino"

    def __init__(self, cfg: DinoConfig) -> None:
        super().__init__(cfg.loss_weight)
        self.cfg = cfg
        self.loss = DINOLoss(cfg.out_dim, student_temp=cfg.student_temp, center_momentum=cfg.center_momentum,
                             centering=cfg.centering)

    def make_heads(self, embed_dim: int) -> dict[str, nn.Module]:
        return {"dino_head": dino_head(embed_dim, self.cfg)}

    def forward(self, student, teacher, out, inputs):
        with torch.no_grad():
            teacher_logits = teacher["dino_head"](out.teacher_global["cls"]).float()  # (G·B, K)
            targets = self.loss.teacher_targets(teacher_logits, inputs.teacher_temp)  # (G, B, K)
        student_logits = student["dino_head"](out.student_cls())  # (V·B, K)
        loss = self.loss.cross_entropy(student_logits, targets)
        self._pending.append(teacher_logits)
        stats = collapse_stats(targets)
        return loss, {"dino_loss": loss.detach(), "teacher_entropy": stats["entropy"],
                      "kl_uniform": stats["kl_uniform"]}
