"""Relational distillation: the student's neighbourhoods of images match the frozen teacher's.

An optional term of distillation (``distill.relation_loss_weight > 0`` with ``distill.teacher``),
next to the DINOv2 recipe's DINO / iBOT / KoLeo terms. Those terms see the teacher only through its
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

Examples:
    >>> import torch
    >>> x = torch.randn(8, 16)
    >>> float(relation_kl(x, 2 * x, temp=0.1)) < 1e-6  # same neighbourhoods (cosine ignores the scale)
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import Config
from .objectives import Objective

_MASKED = -1e4  # logit of an excluded anchor (the query itself): exp underflows to 0 in float32


def relation_kl(student: torch.Tensor, teacher: torch.Tensor, temp: float,
                student_anchors: torch.Tensor | None = None, teacher_anchors: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the ``B`` queries of KL(P_t || P_s) between their softmax cosine similarities.

    Args:
        student: ``(B, d)`` queries, differentiable; also anchors for each other (not for themselves).
        teacher: ``(B, D)`` the teacher's features of the same inputs (``D`` may differ from ``d``).
        temp: softmax temperature of both distributions.
        student_anchors / teacher_anchors: ``(Q, d)`` / ``(Q, D)`` extra anchors (a queue), or None.

    Returns:
        scalar, float32, computed with autocast off.
    """
    with torch.autocast(student.device.type, enabled=False):
        s = F.normalize(student.float(), dim=-1)
        t = F.normalize(teacher.detach().float(), dim=-1)
        logits_s, logits_t = s @ s.T, t @ t.T
        if student_anchors is not None and teacher_anchors is not None and len(student_anchors):
            qs = F.normalize(student_anchors.detach().float(), dim=-1)
            qt = F.normalize(teacher_anchors.detach().float(), dim=-1)
            logits_s, logits_t = torch.cat([logits_s, s @ qs.T], 1), torch.cat([logits_t, t @ qt.T], 1)
        eye = torch.eye(*logits_s.shape, dtype=torch.bool, device=s.device)  # each query excludes itself, not the queue
        log_ps = F.log_softmax((logits_s / temp).masked_fill(eye, _MASKED), dim=-1)
        log_pt = F.log_softmax((logits_t / temp).masked_fill(eye, _MASKED), dim=-1)
        return (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean()


class RelationDistillObjective(Objective):
    """:func:`relation_kl` on the ``(G·B, d)`` student and ``(G·B, D)`` teacher global-crop CLS tokens.

    The queue (``distill.relation_queue`` rows of each) is a buffer, saved in checkpoints; the step's
    features enter it in :meth:`commit` (the optimizer step succeeded) and are dropped by
    :meth:`discard`. Each process keeps its own queue (as KoLeo, the term is per process).

    Statistics: ``relation_loss`` (unweighted).
    """

    name = "relation"

    def __init__(self, config: Config) -> None:
        d = config.distill
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
