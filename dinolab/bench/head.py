"""How much signal a DINO head's targets carry: the figures behind ``bench/bench_head.py``.

A run whose DINO loss stays near ``ln K`` has a near-uniform student; :func:`head_report` says why,
from the head's outputs on a batch of CLS tokens. The L2-normalised bottleneck outputs ``z`` can sit
in a narrow cone: their common part adds the same offset ``m · w_k`` to prototype ``k``'s logit for
every image, which softmax centering and Sinkhorn-Knopp both cancel, so only ``z - m`` separates
images, and a cone at cosine 0.96 (``|z - m|`` ~0.26) makes a teacher temperature act ~4x higher.

Examples:
    >>> from dinolab.models import DINOHead
    >>> head = DINOHead(16, 32, hidden_dim=24, bottleneck_dim=8).eval()
    >>> list(head_report(torch.randn(64, 16), head, 0.04, 0.1))[:2]
    ['cone: cos(z, batch mean)', 'cone: |z - batch mean|']
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..losses.centering import sinkhorn_knopp


def effective_rank(a: torch.Tensor) -> float:
    """``exp(H(s / Σ s))`` of the singular values ``s`` of the centred rows of ``a`` ``(N, D)``
    (Roy & Vetterli 2007): ``r`` for ``r`` equal directions, less when a few dominate."""
    s = torch.linalg.svdvals(a - a.mean(0))
    p = s / s.sum()
    return float(torch.exp(-torch.special.xlogy(p, p).sum()))


def mean_entropy(p: torch.Tensor) -> float:
    """Mean over rows of the entropy of the distributions ``p`` ``(N, K)``, in nats."""
    return float(-torch.special.xlogy(p, p).sum(1).mean())


def head_report(cls: torch.Tensor, head: torch.nn.Module, teacher_temp: float, student_temp: float) -> dict[str, float]:
    """Cone, logit spread, target entropies and effective ranks of a DINO ``head`` on ``cls`` ``(N, D)``.

    ``head`` is a :class:`~dinolab.models.DINOHead` (in eval mode: BatchNorm uses its running
    statistics). Entropies are per image, in nats, against ``ln K``: the teacher's targets at
    ``teacher_temp`` with a plain softmax and with Sinkhorn-Knopp over the ``N`` images, and the
    student-temperature softmax (how sharp the student can be with these logits). "random unit
    vectors" is the logit spread of isotropic inputs with the same prototypes (about
    ``1 / sqrt(bottleneck_dim)``).
    """
    with torch.no_grad():
        z = head.forward_bottleneck(cls.float())  # (N, bottleneck), unit rows
        logits = head.last_layer(z)  # (N, K)
        protos = F.normalize(head.last_layer.weight.detach().float(), dim=1)  # (K, bottleneck)
    mean = z.mean(0, keepdim=True)
    rand = F.normalize(torch.randn(len(z), z.shape[1], generator=torch.Generator().manual_seed(0)), dim=1)
    return {
        "cone: cos(z, batch mean)": float(F.cosine_similarity(z, mean).mean()),
        "cone: |z - batch mean|": float((z - mean).norm(dim=1).mean()),
        "logit std over prototypes": float(logits.std(1).mean()),
        "  random unit vectors": float((rand @ protos.T).std(1).mean()),
        "target entropy, softmax": mean_entropy(torch.softmax(logits / teacher_temp, 1)),
        "target entropy, Sinkhorn-Knopp": mean_entropy(sinkhorn_knopp(logits, teacher_temp)),
        "student-temperature entropy": mean_entropy(torch.softmax(logits / student_temp, 1)),
        "ln K": math.log(logits.shape[1]),
        "effective rank: CLS": effective_rank(cls.float()),
        "effective rank: bottleneck": effective_rank(z),
        "effective rank: prototypes": effective_rank(protos),
    }
