"""The DINO image-level (CLS token) self-distillation loss.

Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers" (DINO); kept unchanged
by Oquab et al. 2023 (DINOv2) and Siméoni et al. 2025 (DINOv3), which switch the teacher targets to
Sinkhorn-Knopp.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .centering import ema_center_update, sinkhorn_knopp, softmax_center

CENTERINGS = ("softmax", "sinkhorn_knopp")

Views = torch.Tensor | Sequence[torch.Tensor]


def row_cross_entropy(student_logits: torch.Tensor, teacher_probs: torch.Tensor, student_temp: float) -> torch.Tensor:
    """``-Σ_k t_k · log_softmax(s / student_temp)_k`` per row, in float32: ``(..., K), (..., K) -> (...)``."""
    return -(teacher_probs.float() * F.log_softmax(student_logits.float() / student_temp, dim=-1)).sum(dim=-1)


def dino_cross_entropy(student_logits: torch.Tensor, teacher_probs: torch.Tensor, student_temp: float) -> torch.Tensor:
    """Batch mean of ``-Σ_k t_k · log_softmax(s / student_temp)_k`` for one (teacher, student) view pair.

    Shapes: ``student_logits (B, K)``, ``teacher_probs (B, K)`` -> scalar (float32).
    """
    return row_cross_entropy(student_logits, teacher_probs, student_temp).mean()


def check_centering(centering: str) -> str:
    if centering not in CENTERINGS:
        raise ConfigError(f"centering={centering!r} is not one of {', '.join(CENTERINGS)}; "
                          "use 'softmax' (DINO v1, DINOv2 default) or 'sinkhorn_knopp' (DINOv2 large, DINOv3)")
    return centering


def _stack_views(views: Views, n_views: int | None = None, batch: int | None = None) -> torch.Tensor:
    """A list of ``(B, K)``, a ``(V, B, K)`` tensor or a view-major ``(V·B, K)`` tensor -> ``(V, B, K)``."""
    if isinstance(views, torch.Tensor):
        if views.dim() == 3:
            return views
        if views.dim() != 2:
            raise ValueError(f"expected (V*B, K), (V, B, K) or a list of (B, K) tensors, got {tuple(views.shape)}")
        if n_views is None:
            if batch is None or views.shape[0] % batch:
                raise ValueError(f"cannot split {views.shape[0]} rows into views of batch size {batch}")
            n_views = views.shape[0] // batch
        if views.shape[0] % n_views:
            raise ValueError(f"cannot split {views.shape[0]} rows into {n_views} views of equal size")
        return views.reshape(n_views, views.shape[0] // n_views, views.shape[1])
    return torch.stack(list(views))


class DINOLoss(nn.Module):
    """DINO loss on the CLS-token head outputs (Caron et al. 2021; DINOv2/v3 ``DINOLoss``).

    The teacher sees the ``n_global_crops`` global views, the student all ``V`` views (globals first,
    in the same order). The loss is the mean, over every (teacher view, student view) pair except the
    same-view pairs, of the batch-mean cross-entropy between the teacher targets and the student's
    ``softmax(s / student_temp)``: ``2·(V-1)`` equally weighted terms for 2 global views (18 with 8
    local crops), as in DINO v1 and the 16+2 terms over 18 of DINOv2/v3.

    Teacher targets are ``softmax((t - center) / teacher_temp)`` (``centering="softmax"``) or
    Sinkhorn-Knopp (``centering="sinkhorn_knopp"``; ``center`` is then unused). The center is an EMA of
    the raw teacher logits (momentum ``center_momentum``), all-reduced across processes; :meth:`forward`
    updates it after computing the loss, so a step's targets use the center of the previous steps, as
    in the official code. For finer control call :meth:`teacher_targets`, :meth:`cross_entropy` and
    :meth:`update_center` yourself.

    Args:
        out_dim: number of prototypes K.
        student_temp: student temperature (0.1 in DINO v1/v2/v3).
        center_momentum: EMA momentum of the center (0.9).
        centering: ``"softmax"`` (DINO v1, DINOv2 default) or ``"sinkhorn_knopp"`` (DINOv2 large, DINOv3).
        n_global_crops: number of teacher views, used to split a ``(G·B, K)`` teacher tensor.

    Attributes:
        center: ``(1, K)`` float32 buffer, initially zeros (saved in the state dict).

    Shapes: student views ``V × (B, K)``, teacher views ``n_global_crops × (B, K)``; either as a list,
    a ``(V, B, K)`` tensor, or a view-major ``(V·B, K)`` tensor (``[view0 rows, view1 rows, ...]``).

    Examples:
        >>> loss_fn = DINOLoss(out_dim=64)
        >>> student = [torch.randn(4, 64) for _ in range(2 + 3)]   # 2 global + 3 local views
        >>> teacher = torch.randn(2 * 4, 64)                        # 2 global views, view-major
        >>> loss = loss_fn(student, teacher, teacher_temp=0.04)     # 2·(5-1) = 8 pairs
        >>> loss.shape, loss_fn.center.shape
        (torch.Size([]), torch.Size([1, 64]))
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9,
                 centering: str = "softmax", n_global_crops: int = 2) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.centering = check_centering(centering)
        self.n_global_crops = n_global_crops
        self.register_buffer("center", torch.zeros(1, out_dim))

    @torch.no_grad()
    def teacher_targets(self, teacher_logits: Views, teacher_temp: float) -> torch.Tensor:
        """Targets for the teacher views: ``(G, B, K)`` float32 rows that sum to 1. Does not touch ``center``."""
        t = _stack_views(teacher_logits, n_views=self.n_global_crops)
        if self.centering == "sinkhorn_knopp":
            # one balancing problem over all teacher rows, as the official code (2·B rows per process)
            return sinkhorn_knopp(t.flatten(0, 1), teacher_temp).view(t.shape)
        return softmax_center(t, self.center, teacher_temp)

    @torch.no_grad()
    def update_center(self, teacher_logits: Views) -> None:
        """EMA update of ``center`` with the mean of the raw teacher logits of this step (all views)."""
        t = _stack_views(teacher_logits, n_views=self.n_global_crops)
        ema_center_update(self.center, t.flatten(0, 1), self.center_momentum)

    def cross_entropy(self, student_logits: Views, teacher_probs: Views, ignore_diagonal: bool = True) -> torch.Tensor:
        """Mean over (teacher view g, student view v) pairs, ``v != g`` if ``ignore_diagonal``, of the
        batch-mean cross-entropy. ``teacher_probs`` are targets (rows sum to 1), not logits."""
        t = _stack_views(teacher_probs, n_views=self.n_global_crops).float()
        s = _stack_views(student_logits, batch=t.shape[1])
        if s.shape[1:] != t.shape[1:]:
            raise ValueError(f"student views {tuple(s.shape)} and teacher views {tuple(t.shape)} differ in batch or K")
        log_p = F.log_softmax(s.float() / self.student_temp, dim=-1)
        # pair_ce[g, v] = -Σ_b Σ_k t[g,b,k] log p[v,b,k]: one matmul over all pairs, in float32 even under
        # autocast (bf16 would round the near-uniform targets of early training and the loss to 3 digits)
        with torch.autocast(device_type=t.device.type, enabled=False):
            pair_ce = -torch.einsum("gbk,vbk->gv", t, log_p)
        n_pairs = t.shape[0] * s.shape[0]
        if ignore_diagonal:
            same_view = torch.eye(t.shape[0], s.shape[0], dtype=torch.bool, device=pair_ce.device)
            pair_ce = pair_ce.masked_fill(same_view, 0.0)
            n_pairs -= min(t.shape[0], s.shape[0])
        if n_pairs == 0:
            raise ValueError("no (teacher, student) view pairs left: give the student more views than the teacher, "
                             "or use ignore_diagonal=False")
        return pair_ce.sum() / (n_pairs * t.shape[1])

    def forward(self, student_logits: Views, teacher_logits: Views, teacher_temp: float,
                ignore_diagonal: bool = True) -> torch.Tensor:
        """Loss from raw student logits and raw teacher logits; then updates the center (softmax centering).

        Args:
            student_logits: ``V`` student views of ``(B, K)`` logits, global views first.
            teacher_logits: the ``n_global_crops`` teacher views of ``(B, K)`` raw logits.
            teacher_temp: teacher temperature of this step.
            ignore_diagonal: skip the pairs where student and teacher see the same crop.

        Returns:
            Scalar float32 loss.
        """
        targets = self.teacher_targets(teacher_logits, teacher_temp)
        loss = self.cross_entropy(student_logits, targets, ignore_diagonal=ignore_diagonal)
        if self.centering == "softmax":
            self.update_center(teacher_logits)
        return loss
