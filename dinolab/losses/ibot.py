"""The iBOT masked-patch self-distillation loss.

Zhou et al. 2022, "iBOT: Image BERT Pre-Training with Online Tokenizer", as used by Oquab et al. 2023
(DINOv2) and Siméoni et al. 2025 (DINOv3): the student sees some patches of its global crops replaced
by a mask token and predicts, for each masked patch, the teacher's distribution on the unmasked crop.
"""

from __future__ import annotations

import torch
from torch import nn

from .centering import ema_center_update, sinkhorn_knopp, softmax_center
from .dino import check_centering, row_cross_entropy


def masked_token_weights(masks: torch.Tensor) -> torch.Tensor:
    """``1 / (number of masked tokens in its image)`` for every masked token, in ``x[masks]`` order.

    Shapes: ``masks (B, N)`` bool -> ``(M,)`` float32 with ``M = masks.sum()``.
    """
    per_image = 1.0 / masks.sum(dim=-1, keepdim=True).clamp(min=1).float()
    return per_image.expand(masks.shape)[masks]


def ibot_patch_loss(student_patch_logits: torch.Tensor, teacher_patch_probs: torch.Tensor, masks: torch.Tensor,
                    student_temp: float) -> torch.Tensor:
    """Mean over images of each image's mean cross-entropy over its masked tokens (dense form).

    Images without a masked token contribute 0 but still count in the mean (divide by all B), as the
    official ``forward_masked`` does.

    Shapes: ``student_patch_logits (B, N, K)``, ``teacher_patch_probs (B, N, K)``, ``masks (B, N)`` bool
    -> scalar (float32).
    """
    ce = row_cross_entropy(student_patch_logits, teacher_patch_probs, student_temp)
    m = masks.float()
    return ((ce * m).sum(dim=-1) / m.sum(dim=-1).clamp(min=1.0)).mean()


def ibot_patch_loss_gathered(student_masked_logits: torch.Tensor, teacher_masked_probs: torch.Tensor,
                             weights: torch.Tensor, n_images: int, student_temp: float) -> torch.Tensor:
    """The same loss on the masked tokens only (DINOv2 ``forward_masked``): ``Σ_m w_m · CE_m / n_images``.

    With ``weights = masked_token_weights(masks)`` and ``n_images = B`` it equals
    :func:`ibot_patch_loss`, without ever building ``(B, N, K)`` tensors.

    Shapes: ``student_masked_logits (M, K)``, ``teacher_masked_probs (M, K)``, ``weights (M,)`` -> scalar.
    """
    ce = row_cross_entropy(student_masked_logits, teacher_masked_probs, student_temp)
    return (ce * weights.float()).sum() / n_images


class iBOTPatchLoss(nn.Module):  # noqa: N801 (the paper's spelling)
    """iBOT masked-patch loss with its own teacher centering (Zhou et al. 2022; DINOv2/v3 ``iBOTPatchLoss``).

    Teacher targets for the masked tokens are ``softmax((t - center) / teacher_temp)``
    (``centering="softmax"``) or Sinkhorn-Knopp over all masked tokens of the global batch
    (``centering="sinkhorn_knopp"``). The center is an EMA (momentum ``center_momentum``) of the raw
    teacher logits of the masked tokens, all-reduced across processes; :meth:`forward` and
    :meth:`forward_masked` update it after computing the loss, so it is used from the next step.

    Args:
        out_dim: number of patch prototypes K.
        student_temp: student temperature (0.1).
        center_momentum: EMA momentum of the center (0.9).
        centering: ``"softmax"`` or ``"sinkhorn_knopp"``.

    Attributes:
        center: ``(1, 1, K)`` float32 buffer, initially zeros.

    Shapes: dense :meth:`forward`: ``(B, N, K)`` student and teacher patch logits and ``(B, N)`` bool
    masks; gathered :meth:`forward_masked` (what a trainer should use): ``(M, K)`` logits of the M
    masked tokens in ``x[masks]`` order plus the ``(B, N)`` masks.

    Examples:
        >>> loss_fn = iBOTPatchLoss(out_dim=32)
        >>> masks = torch.zeros(4, 9, dtype=torch.bool); masks[:2, :3] = True   # 2 of 4 images masked
        >>> student, teacher = torch.randn(4, 9, 32), torch.randn(4, 9, 32)
        >>> dense = loss_fn(student, teacher, masks, teacher_temp=0.07)
        >>> loss_fn.center.shape
        torch.Size([1, 1, 32])
        >>> gathered = iBOTPatchLoss(out_dim=32).forward_masked(student[masks], teacher[masks], masks, 0.07)
        >>> torch.allclose(dense, gathered)
        True
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9,
                 centering: str = "softmax") -> None:
        super().__init__()
        self.out_dim = out_dim
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.centering = check_centering(centering)
        self.register_buffer("center", torch.zeros(1, 1, out_dim))

    @torch.no_grad()
    def teacher_targets(self, teacher_logits: torch.Tensor, teacher_temp: float,
                        n_samples: int | torch.Tensor | None = None) -> torch.Tensor:
        """Targets, float32, same shape as ``teacher_logits``. Does not touch ``center``.

        Softmax centering takes any ``(..., K)``; Sinkhorn-Knopp takes the ``(M, K)`` masked tokens
        (``n_samples``, the global masked-token count, is optional: see :func:`sinkhorn_knopp`).
        """
        if self.centering == "sinkhorn_knopp":
            return sinkhorn_knopp(teacher_logits, teacher_temp, n_samples=n_samples)
        return softmax_center(teacher_logits, self.center, teacher_temp).view(teacher_logits.shape)

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        """EMA update of ``center``: ``(M, K)`` masked-token logits (mean over tokens) or ``(B, N, K)``
        (the reference's mean over images of per-image token means)."""
        ema_center_update(self.center, teacher_logits, self.center_momentum)

    def forward(self, student_patch_logits: torch.Tensor, teacher_patch_logits: torch.Tensor, masks: torch.Tensor,
                teacher_temp: float) -> torch.Tensor:
        """Dense convenience form: gathers the masked tokens and calls :meth:`forward_masked`."""
        return self.forward_masked(student_patch_logits[masks], teacher_patch_logits[masks], masks, teacher_temp)

    def forward_masked(self, student_masked_logits: torch.Tensor, teacher_masked_logits: torch.Tensor,
                       masks: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """Loss from the raw logits of the masked tokens; then updates the center (softmax centering).

        Args:
            student_masked_logits: ``(M, K)`` student logits of the masked tokens, ``x[masks]`` order.
            teacher_masked_logits: ``(M, K)`` raw teacher logits of the same tokens.
            masks: ``(B, N)`` bool masks of all B student global crops (unmasked images count in the mean).
            teacher_temp: teacher temperature of this step.

        Returns:
            Scalar float32 loss.
        """
        targets = self.teacher_targets(teacher_masked_logits, teacher_temp)
        loss = ibot_patch_loss_gathered(student_masked_logits, targets, masked_token_weights(masks),
                                        masks.shape[0], self.student_temp)
        if self.centering == "softmax":
            self.update_center(teacher_masked_logits)
        return loss
