"""Relational (neighbourhood) distillation loss: KL between softmax cosine similarities.

For student queries ``s_i`` and the teacher's features ``t_i`` of the same inputs, against anchors
``j`` (the other queries, and optional queued features):

    P_t(j|i) = softmax_j(cos(t_i, t_j) / T)        P_s(j|i) = softmax_j(cos(s_i, s_j) / T)
    L = mean_i KL(P_t(.|i) || P_s(.|i))

(CompRess, Abbasi Koohpayegani et al. 2020; SEED, Fang et al. 2021). The widths of ``s`` and ``t``
may differ: only their own cosine similarities are compared.

Examples:
    >>> import torch
    >>> x = torch.randn(8, 16)
    >>> float(relation_kl(x, 2 * x, temp=0.1)) < 1e-6  # same neighbourhoods (cosine ignores the scale)
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
