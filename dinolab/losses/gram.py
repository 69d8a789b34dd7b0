"""Gram anchoring: keep the student's patch-similarity structure close to an earlier teacher's.

Siméoni et al. 2025, "DINOv3" §4.2: ``L_Gram = ||X_S X_Sᵀ - X_G X_Gᵀ||_F²`` with ``X`` the ``P×D``
L2-normalised patch features of one image (student, Gram teacher). Like the official
``dinov3/loss/gram_loss.py`` we take the mean over the ``B·P·P`` entries (``MSELoss``), not the sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def gram_loss(student_patches: torch.Tensor, teacher_patches: torch.Tensor, remove_neg: bool = False,
              remove_only_teacher_neg: bool = False) -> torch.Tensor:
    """Mean squared difference between the per-image Gram matrices of L2-normalised patch features.

    Computed in float32. The teacher side is a target: it is detached.

    Args:
        student_patches: ``(B, P, D)`` student patch features (after the final norm, before heads).
        teacher_patches: ``(B, P, D')`` Gram-teacher patch features on the same P-patch grid.
        remove_neg: clamp negative similarities to 0 in both Gram matrices.
        remove_only_teacher_neg: clamp the teacher's negative similarities to 0, and the student's only
            where both are negative (a student similarity that is negative where the teacher's is not
            is still pulled up). At most one of the two options may be on; DINOv3's configs use neither.

    Returns:
        Scalar float32 loss (mean over ``B·P·P`` entries).
    """
    if remove_neg and remove_only_teacher_neg:
        raise ValueError("gram_loss: set at most one of remove_neg and remove_only_teacher_neg")
    if student_patches.dim() != 3 or teacher_patches.shape[:2] != student_patches.shape[:2]:
        raise ValueError(f"gram_loss expects (B, P, D) student and (B, P, D') teacher patches on the same grid, "
                         f"got {tuple(student_patches.shape)} and {tuple(teacher_patches.shape)}")
    s = F.normalize(student_patches.float(), dim=-1)
    t = F.normalize(teacher_patches.detach().float(), dim=-1)
    with torch.autocast(device_type=s.device.type, enabled=False):  # bf16 would round away small differences
        gram_s = s @ s.transpose(1, 2)
        gram_t = t @ t.transpose(1, 2)
    if remove_neg:
        gram_s = gram_s.clamp(min=0.0)
        gram_t = gram_t.clamp(min=0.0)
    elif remove_only_teacher_neg:
        gram_s = gram_s.masked_fill((gram_s < 0) & (gram_t < 0), 0.0)
        gram_t = gram_t.clamp(min=0.0)
    return F.mse_loss(gram_s, gram_t)


class GramLoss(nn.Module):
    """Gram anchoring loss (DINOv3, Siméoni et al. 2025), see :func:`gram_loss`.

    Shapes: ``(B, P, D)`` student and ``(B, P, D')`` teacher patch features -> ``()``.

    Examples:
        >>> gram = GramLoss()
        >>> student = torch.randn(2, 16, 64)
        >>> float(gram(student, student.clone()))
        0.0
        >>> gram(student, torch.randn(2, 16, 64)).item() > 0
        True
    """

    def __init__(self, remove_neg: bool = False, remove_only_teacher_neg: bool = False) -> None:
        super().__init__()
        if remove_neg and remove_only_teacher_neg:
            raise ValueError("GramLoss: set at most one of remove_neg and remove_only_teacher_neg")
        self.remove_neg = remove_neg
        self.remove_only_teacher_neg = remove_only_teacher_neg

    def forward(self, student_patches: torch.Tensor, teacher_patches: torch.Tensor) -> torch.Tensor:
        return gram_loss(student_patches, teacher_patches, self.remove_neg, self.remove_only_teacher_neg)
