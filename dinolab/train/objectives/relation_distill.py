"""Relational distillation: the student's neighbourhoods of images match the frozen teacher's.

An optional term of distillation (``distill.relation_loss_weight > 0`` with ``distill.teacher``), next
to the DINOv2 recipe's DINO / iBOT / KoLeo terms. Those terms see the teacher only through its
heads' softmax targets; when the targets are nearly uniform (a small teacher trained on little data,
or frozen random heads) the student gets almost no signal from them. This term transfers what a
k-NN search, retrieval or dedup reads from an embedding, its neighbourhoods, whatever the teacher's
heads and whatever the two widths (CompRess, Abbasi Koohpayegani et al. 2020; SEED, Fang et al. 2021).

For each student global-crop CLS ``s_i`` and the teacher's CLS ``t_i`` of the same crop, against
anchors ``j`` (the other global crops of the batch, and the last ``distill.relation_queue`` crops
of earlier steps, kept as detached student and teacher features):

    P_t(j|i) = softmax_j(cos(t_i, t_j) / T)        P_s(j|i) = softmax_j(cos(s_i, s_j) / T)
    L = mean_i KL(P_t(.|i) || P_s(.|i))

with ``T = distill.relation_temp``. Regressing the teacher's features through a trained projection
was tried first and transferred less on ``builtin:digits`` (see BENCHMARKS.md): the student's own
geometry, the one its users search in, is what this term shapes.

The loss is :func:`dinolab.losses.relation_kl`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ...losses import relation_kl
from .base import Objective

if TYPE_CHECKING:
    from ..config import DistillConfig


class RelationDistillObjective(Objective):
    """:func:`relation_kl` on the ``(G·B, d)`` student and ``(G·B, D)`` teacher global-crop CLS tokens.

    The queue (``distill.relation_queue`` rows of each) is a buffer, saved in checkpoints; the step's
    features enter it in :meth:`commit` (the optimizer step succeeded) and are dropped by
    :meth:`discard`. Each process keeps its own queue (as KoLeo, the term is per process).

    ``d`` is the ``distill`` section (``relation_loss_weight``, ``relation_temp``, ``relation_queue``).
    Statistics: ``relation_loss`` (unweighted).
    """

    name = "relation"

    def __init__(self, d: DistillConfig) -> None:
        super().__init__(d.relation_loss_weight)
        self.temp, self.size = d.relation_temp, d.relation_queue
        self.register_buffer("queue_student", torch.zeros(0), persistent=True)
        self.register_buffer("queue_teacher", torch.zeros(0), persistent=True)
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, student, teacher, out, inputs):
        s, t = out.student_global["cls"], out.teacher_global["cls"]
        term = relation_kl(s, t, self.temp, self.queue_student, self.queue_teacher)  # an empty queue adds nothing
        if self.size > 0:
            self._pending.append((s.detach().float(), t.detach().float()))
        return term, {"relation_loss": term.detach()}

    def commit(self) -> None:
        if self._pending:
            new_s = torch.cat([p[0] for p in self._pending])
            new_t = torch.cat([p[1] for p in self._pending])
            if self.queue_student.numel():
                new_s, new_t = torch.cat([new_s, self.queue_student]), torch.cat([new_t, self.queue_teacher])
            self.queue_student, self.queue_teacher = new_s[: self.size].clone(), new_t[: self.size].clone()
        self._pending.clear()

    def discard(self) -> None:
        self._pending.clear()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("queue_student", "queue_teacher"):  # the saved queue's length is not known in advance
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
