"""The iBOT masked-patch objective (Zhou et al. 2022, as in DINOv2 / DINOv3).

Half of the student's global crops get BEiT-style block masks (:func:`dinolab.data.masking.sample_ibot_masks`,
ratios stratified over ``ibot.mask_ratio_min_max``); the backbone swaps the masked patches for its mask
token before the position embedding (``forward_features(x, masks)``). Only the masked tokens go through
the heads: the student's masked patch tokens are trained to predict the teacher's distribution for the
same tokens of the *unmasked* crop. Each image's masked tokens weigh ``1 / (its masked count)`` and the
sum is divided by all global crops (unmasked ones count as 0), as DINOv2's ``forward_masked``.
In distillation with ``ibot.mask_sample_probability=0`` nothing is masked and every patch token of the
global crops is a target (DINOv2 §5), i.e. the loss is the mean token cross-entropy.

The patch head is the DINO head (``ibot.separate_head=false``) or an ``ibot_head`` of its own.
Teacher targets are softmax-centred (center EMA updated after the optimizer step) or Sinkhorn-Knopp.

Examples:
    >>> from dinolab.train.config import load_config
    >>> from dinolab.train.objectives import Objectives
    >>> cfg = load_config("default", ["ibot.loss_weight=1.0", "ibot.separate_head=true"])
    >>> sorted(Objectives.from_config(cfg).make_heads(64))
    ['dino_head', 'ibot_head']
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

from ...data.masking import sample_ibot_masks, sample_ibot_masks_at
from ...losses import ibot_patch_loss_gathered, iBOTPatchLoss, masked_token_weights
from .base import CenteredObjective, StepInputs
from .dino_cls import dino_head

if TYPE_CHECKING:
    from ..config import DinoConfig, IbotConfig


class iBOTObjective(CenteredObjective):  # noqa: N801 (the paper's spelling)
    """Masked-patch self-distillation on the student's global crops.

    Args:
        cfg: the ``ibot`` section.
        dino: the ``dino`` section: the head architecture, and the prototypes and centering when
            ``cfg`` leaves them unset (a shared head *is* the DINO head).
        patch_size: the student's patch size (the masks are drawn on its patch grid).
        all_tokens: with ``cfg.mask_sample_probability == 0``, use every patch token as a target
            (distillation, DINOv2 §5) instead of no token.

    Statistics: ``ibot_loss`` (unweighted term) and ``ibot_masked_share`` (masked share of all global tokens).
    """

    name = "ibot"

    def __init__(self, cfg: IbotConfig, *, dino: DinoConfig, patch_size: int, all_tokens: bool = False) -> None:
        i, d = cfg, dino
        super().__init__(i.loss_weight)
        self.cfg, self.dino_cfg = i, d
        self.patch_size = patch_size
        # distillation without masking (DINOv2 §5): every patch of the unmasked global crops is a target
        self.all_tokens = all_tokens and i.mask_sample_probability == 0
        self.head_name = "ibot_head" if i.separate_head else "dino_head"
        out_dim = (i.out_dim or d.out_dim) if i.separate_head else d.out_dim
        self.loss = iBOTPatchLoss(out_dim, student_temp=i.student_temp, center_momentum=i.center_momentum,
                                  centering=i.centering or d.centering)

    def make_heads(self, embed_dim: int) -> dict[str, nn.Module]:
        if not self.cfg.separate_head:
            return {}  # reuses the DINO objective's dino_head
        return {"ibot_head": dino_head(embed_dim, self.dino_cfg, self.loss.out_dim)}

    def prepare(self, inputs: StepInputs, generator: torch.Generator | None) -> None:
        if inputs.global_masks is not None or self.cfg.mask_sample_probability == 0:
            return  # masks given by the caller are kept
        crops = inputs.global_crops
        grid = (crops.shape[-2] // self.patch_size, crops.shape[-1] // self.patch_size)
        # the masks' python RNG is seeded from the step's torch generator: reproducible and resumable
        seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if generator is not None else None
        if inputs.positions is not None and seed is not None:  # keyed on the images' places in the global batch
            pos = inputs.positions.cpu().long()
            rows = (torch.arange(inputs.n_global)[:, None] * inputs.batch_total + pos[None]).reshape(-1)
            masks = sample_ibot_masks_at(rows, inputs.n_global * inputs.batch_total, grid,
                                         self.cfg.mask_sample_probability, tuple(self.cfg.mask_ratio_min_max), seed)
        else:
            masks = sample_ibot_masks(crops.shape[0], grid, self.cfg.mask_sample_probability,
                                      tuple(self.cfg.mask_ratio_min_max), random.Random(seed))
        inputs.global_masks = masks.to(crops.device)

    def forward(self, student, teacher, out, inputs):
        masks = inputs.global_masks
        if masks is None and self.all_tokens:
            masks = torch.ones(out.student_global["patches"].shape[:2], dtype=torch.bool,
                               device=out.student_global["patches"].device)
        # Under torch.distributed a rank without masked tokens still runs the heads on zero rows: the
        # centering and Sinkhorn-Knopp collectives need every rank, and DDP every used parameter.
        if masks is None or (not bool(masks.any()) and not dist.is_initialized()):
            zero = out.student_global["patches"].sum() * 0.0  # keeps the graph for backward
            return zero, {"ibot_loss": zero.detach(), "ibot_masked_share": zero.detach()}
        with torch.no_grad():  # targets from the teacher's unmasked crops, at the student's masked positions
            teacher_logits = teacher[self.head_name](out.teacher_global["patches"][masks]).float()  # (M, K)
            targets = self.loss.teacher_targets(teacher_logits, inputs.teacher_temp)
        student_logits = student[self.head_name](out.student_global["patches"][masks])  # (M, K)
        loss = ibot_patch_loss_gathered(student_logits, targets, masked_token_weights(masks), masks.shape[0],
                                        self.loss.student_temp)
        self._pending.append(teacher_logits)
        return loss, {"ibot_loss": loss.detach(), "ibot_masked_share": masks.float().mean()}
