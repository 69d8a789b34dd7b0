"""Self-distillation losses of DINO, iBOT, DINOv2 and DINOv3.

- :class:`DINOLoss`: image-level (CLS) cross-entropy between teacher targets and student predictions.
- :class:`iBOTPatchLoss`: the same on masked patch tokens.
- :class:`KoLeoLoss`: spreading regulariser on the CLS features.
- :class:`GramLoss`: DINOv3 Gram anchoring of patch similarities.
- :func:`relation_kl`: relational distillation (student and teacher neighbourhoods).
- :func:`softmax_center`, :func:`sinkhorn_knopp`: teacher targets; :func:`collapse_stats`: monitors.

All losses compute in float32 and work in one process or across processes (``torch.distributed``).
"""

from .centering import collapse_stats, sinkhorn_knopp, softmax_center
from .dino import DINOLoss, dino_cross_entropy
from .gram import GramLoss, gram_loss
from .ibot import ibot_patch_loss, ibot_patch_loss_gathered, iBOTPatchLoss, masked_token_weights
from .koleo import KoLeoLoss, koleo_loss
from .relation import relation_kl

__all__ = [
    "DINOLoss",
    "iBOTPatchLoss",
    "KoLeoLoss",
    "GramLoss",
    "sinkhorn_knopp",
    "softmax_center",
    "collapse_stats",
    "dino_cross_entropy",
    "ibot_patch_loss",
    "ibot_patch_loss_gathered",
    "masked_token_weights",
    "koleo_loss",
    "gram_loss",
    "relation_kl",
]
