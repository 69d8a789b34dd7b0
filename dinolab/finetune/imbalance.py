"""Imbalanced labels: class weights, class-balanced sampling and logit adjustment, as pure functions.

- **inverse frequency** weights ``w_c ∝ 1 / n_c``;
- **effective number** weights (Cui et al. 2019, "Class-Balanced Loss Based on Effective Number of
  Samples"): ``w_c ∝ (1 - β) / (1 - β^n_c)``; β → 0 gives equal weights, β → 1 inverse frequency;
- both normalised so that ``Σ_c w_c = C`` (the number of classes), the normalisation of the paper;
- **class-balanced sampling**: image ``i`` drawn with probability ``∝ 1 / n_{y_i}``, so that every
  class is seen equally often in expectation;
- **logit adjustment** (Menon et al. 2021, "Long-tail learning via logit adjustment"): in the loss
  the logits become ``z + τ·log π`` (``π`` the training class priors), in the post-hoc form the
  trained logits become ``z − τ·log π`` at prediction time.

A class with no training image has no prior; every function refuses ``counts`` with a zero, the
caller makes sure each class has at least one image.

Examples:
    >>> inverse_frequency_weights([3, 1]).tolist()
    [0.5, 1.5]
    >>> [round(w, 4) for w in effective_number_weights([3, 1], beta=0.5).tolist()]
    [0.7273, 1.2727]
    >>> round(float(log_priors([3, 1])[0]), 4)
    -0.2877
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import DataError

WEIGHTINGS = ("none", "inverse", "effective")


def class_counts(labels: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    """``(C,)`` int64: images per class."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)


def _counts(counts: Sequence[int] | np.ndarray) -> np.ndarray:
    n = np.asarray(counts, dtype=np.float64)
    if n.ndim != 1 or n.size == 0 or (n <= 0).any():
        raise DataError(f"class counts {n.tolist()} must be positive (every class needs a training image)")
    return n


def _sum_to_classes(w: np.ndarray) -> np.ndarray:
    return w * (len(w) / w.sum())


def inverse_frequency_weights(counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """``(C,)`` loss weights ``∝ 1 / n_c``, summing to ``C``."""
    return _sum_to_classes(1.0 / _counts(counts))


def effective_number_weights(counts: Sequence[int] | np.ndarray, beta: float = 0.999) -> np.ndarray:
    """``(C,)`` loss weights ``∝ (1 - β) / (1 - β^n_c)`` (Cui et al. 2019), summing to ``C``; ``0 <= β < 1``."""
    if not 0.0 <= beta < 1.0:
        raise DataError(f"beta={beta} must be in [0, 1)")
    n = _counts(counts)
    return _sum_to_classes((1.0 - beta) / (1.0 - np.power(beta, n)))


def class_weights(kind: str, counts: Sequence[int] | np.ndarray, beta: float = 0.999) -> np.ndarray | None:
    """The weights of ``kind`` (``none`` -> None, ``inverse``, ``effective``)."""
    if kind == "none":
        return None
    if kind == "inverse":
        return inverse_frequency_weights(counts)
    if kind == "effective":
        return effective_number_weights(counts, beta)
    raise DataError(f"loss weighting {kind!r} is not one of {', '.join(WEIGHTINGS)}")


def log_priors(counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """``(C,)`` ``log π_c`` with ``π_c = n_c / Σ n``."""
    n = _counts(counts)
    return np.log(n / n.sum())


def adjust_logits_for_loss(logits: torch.Tensor, log_prior: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """``(B, C)`` logits ``+ τ·log π`` (the logit-adjusted loss is the cross-entropy of these)."""
    return logits + tau * log_prior.to(logits)


def adjust_logits_posthoc(logits: torch.Tensor, log_prior: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """``(B, C)`` logits ``− τ·log π`` (post-hoc logit adjustment of a classifier trained without it)."""
    return logits - tau * log_prior.to(logits)


def balanced_sample_weights(labels: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    """``(N,)`` probabilities of drawing each image: ``1 / (C · n_{y_i})`` (each class ``1/C`` in total)."""
    y = np.asarray(labels, dtype=np.int64)
    n = _counts(class_counts(y, num_classes))
    return 1.0 / (num_classes * n[y])


def balanced_indices(labels: Sequence[int] | np.ndarray, num_classes: int, n: int,
                     generator: torch.Generator) -> np.ndarray:
    """``(n,)`` image indices drawn with replacement by :func:`balanced_sample_weights`."""
    p = torch.as_tensor(balanced_sample_weights(labels, num_classes))
    return torch.multinomial(p, n, replacement=True, generator=generator).numpy()
