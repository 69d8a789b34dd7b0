"""Class probabilities of the frozen-feature classifiers, from features: k-NN, prototypes, linear.

Every function maps ``(B, D)`` features to ``(B, C)`` probabilities (rows sum to 1), so that a saved
classifier (:mod:`dinolab.predict.saved`) and ``dinolab compare`` score images the same way.

- :func:`knn_proba`: DINO's weighted k-NN (cosine, votes ``exp(cos / T)`` over the ``k`` nearest
  reference images, :mod:`dinolab.eval.knn`), the votes normalised to sum to 1. With
  ``class_counts`` each class's votes are divided by its number of reference images first
  (class-frequency-normalised votes: a rare class is not outvoted by sheer numbers).
- :func:`prototype_proba`: ``softmax(cos(x, centroid_c) / T)`` over the classes' L2-normalised
  means of L2-normalised features (the few-shot prototype classifier); absent classes get 0.
- :func:`linear_proba`: ``softmax(x W^T + b - adjust)``; ``adjust = tau * log prior`` is the post-hoc
  logit adjustment of Menon et al. 2021 ("Long-tail learning via logit adjustment").

Examples:
    >>> ref, labels = torch.eye(3), torch.tensor([0, 1, 1])
    >>> knn_proba(torch.tensor([[1.0, 0.1, 0.0]]), ref, labels, k=1, num_classes=2).tolist()
    [[1.0, 0.0]]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def knn_proba(x: torch.Tensor, reference: torch.Tensor, labels: torch.Tensor, *, k: int, temperature: float = 0.07,
              num_classes: int, class_counts: torch.Tensor | None = None, chunk: int = 1024) -> torch.Tensor:
    """``(B, D)`` queries, ``(N, D)`` reference features with ``(N,)`` labels -> ``(B, C)`` vote shares."""
    ref = F.normalize(reference.float(), dim=1)
    k = min(k, ref.shape[0])
    rows = []
    for s in range(0, x.shape[0], chunk):
        sims = F.normalize(x[s:s + chunk].float(), dim=1) @ ref.T
        top, idx = sims.topk(k, dim=1)
        w = torch.exp((top.double() - top[:, :1].double()) / temperature)  # float64: no underflow (see eval.knn)
        votes = torch.zeros(len(top), num_classes, dtype=torch.float64).scatter_add_(1, labels.long()[idx], w)
        if class_counts is not None:
            votes = votes / class_counts.double().clamp_min(1)
        rows.append((votes / votes.sum(1, keepdim=True)).float())
    return torch.cat(rows) if rows else torch.zeros(0, num_classes)


def prototype_proba(x: torch.Tensor, centroids: torch.Tensor, present: torch.Tensor | None = None, *,
                    temperature: float = 0.07) -> torch.Tensor:
    """``(B, D)`` features, ``(C, D)`` centroids (``present`` (C,) bool) -> ``(B, C)``."""
    sims = F.normalize(x.float(), dim=1) @ F.normalize(centroids.float(), dim=1).T
    if present is not None:
        sims = sims.masked_fill(~present.bool(), float("-inf"))
    return torch.softmax(sims / temperature, dim=1)


def linear_proba(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                 adjust: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, D)`` features, ``(C, D)`` weight, ``(C,)`` bias, optional ``(C,)`` logit adjustment -> ``(B, C)``."""
    logits = x.float() @ weight.float().T + bias.float()
    return torch.softmax(logits - adjust.float() if adjust is not None else logits, dim=1)

