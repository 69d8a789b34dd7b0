"""Classification metrics that stay honest on small and imbalanced labelled sets.

Plain accuracy hides a classifier that ignores a rare class. Every evaluator in
:mod:`dinolab.eval` therefore reports, next to accuracy, the balanced accuracy (mean per-class
recall), the macro-averaged F1 and the recall and support of each class. The definitions are
those of scikit-learn (``balanced_accuracy_score``, ``f1_score(average="macro")``):

- balanced accuracy averages the recall of the classes present in ``y_true``;
- macro-F1 averages F1 over the classes present in ``y_true`` or ``y_pred``, with F1 = 0 for a
  class that is never predicted or never present (no "zero division" NaNs);
- a class with no true samples has recall NaN and support 0 in the per-class table;
- worst-class recall is the smallest recall among the classes present in ``y_true`` (the rare class
  a long-tailed classifier sacrifices);
- the expected calibration error (Guo et al. 2017, "On Calibration of Modern Neural Networks") bins
  the top-1 confidences into 15 equal-width bins ``((m-1)/15, m/15]`` and averages
  ``|accuracy(bin) - mean confidence(bin)|`` weighted by the share of images in the bin.

95% bootstrap intervals of all of these over a test set: :mod:`dinolab.eval.bootstrap`.

Examples:
    >>> r = classification_report([0, 0, 0, 1], [0, 0, 0, 0], classes=["cat", "dog"])
    >>> r["accuracy"], r["balanced_accuracy"], r["per_class"]["dog"]["recall"]
    (0.75, 0.5, 0.0)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import DataError


def _as_labels(y, name: str) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1:
        raise DataError(f"{name} must be a 1-D array of integer class indices, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise DataError(f"{name} must hold integer class indices, got dtype {a.dtype}")
    return a.astype(np.int64)


def classification_report(y_true, y_pred, classes: Sequence[str] | int | None = None) -> dict:
    """Accuracy, balanced accuracy, macro-F1 and per-class recall / precision / F1 / support.

    Args:
        y_true, y_pred: ``(N,)`` integer class indices.
        classes: class names (index ``i`` is named ``classes[i]``), a number of classes, or None
            (classes ``0 .. max label``, named by their index).

    Returns:
        dict with ``n``, ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``worst_class_recall`` (floats in
        [0, 1]) and
        ``per_class``: ``{name: {"recall", "precision", "f1", "support"}}`` in class order.
    """
    t, p = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise DataError(f"y_true and y_pred differ in length ({t.size} vs {p.size})")
    if t.size == 0:
        raise DataError("cannot score an empty set of predictions; check that the evaluation set has images")
    if min(t.min(), p.min()) < 0:
        raise DataError("class indices must be >= 0")
    if classes is None:
        names = [str(i) for i in range(int(max(t.max(), p.max())) + 1)]
    elif isinstance(classes, (int, np.integer)):
        names = [str(i) for i in range(int(classes))]
    else:
        names = [str(c) for c in classes]
    c = len(names)
    if max(t.max(), p.max()) >= c:
        raise DataError(f"a class index ({int(max(t.max(), p.max()))}) is out of range for {c} classes")

    support = np.bincount(t, minlength=c)
    predicted = np.bincount(p, minlength=c)
    tp = np.bincount(t[t == p], minlength=c)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / np.maximum(support, 1), np.nan)
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        denom = support + predicted  # F1 = 2 tp / (2 tp + fp + fn) = 2 tp / (support + predicted)
        f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    seen = (support > 0) | (predicted > 0)
    per_class = {
        names[i]: {"recall": float(recall[i]), "precision": float(precision[i]) if predicted[i] or support[i] else
                   float("nan"), "f1": float(f1[i]) if seen[i] else float("nan"), "support": int(support[i])}
        for i in range(c)
    }
    return {
        "n": int(t.size),
        "accuracy": float((t == p).mean()),
        "balanced_accuracy": float(np.nanmean(recall[support > 0])),
        "macro_f1": float(f1[seen].mean()),
        "worst_class_recall": float(np.nanmin(recall[support > 0])),
        "per_class": per_class,
    }


def topk_hits(scores, y_true, k: int) -> np.ndarray:
    """``(N,)`` bool: is the true class among the ``k`` highest of each row of ``scores`` (N×C)?"""
    s = np.asarray(scores)
    t = _as_labels(y_true, "y_true")
    k = min(k, s.shape[1])
    if k >= s.shape[1]:
        return np.isin(t, np.arange(s.shape[1]))
    top = np.argpartition(-s, k - 1, axis=1)[:, :k]
    return (top == t[:, None]).any(axis=1)


ECE_BINS = 15


def _as_probabilities(probs, n: int | None = None) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or (n is not None and p.shape[0] != n):
        raise DataError(f"probabilities must be an (N, C) array with one row per label, got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise DataError("probabilities must be finite and non-negative")
    return p


def calibration_bins(probs, y_true, n_bins: int = ECE_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image ``(bin, confidence, correct)`` of the top-1 prediction: ``bin`` in ``0 .. n_bins - 1`` for
    the confidence interval ``(m / n_bins, (m + 1) / n_bins]`` (a confidence of 0 goes to bin 0)."""
    t = _as_labels(y_true, "y_true")
    p = _as_probabilities(probs, t.size)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == t).astype(np.float64)
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    return bins, conf, correct


def expected_calibration_error(probs, y_true, n_bins: int = ECE_BINS) -> float:
    """ECE of ``(N, C)`` class probabilities against ``(N,)`` labels (see the module docstring), in [0, 1].

    Examples:
        >>> round(expected_calibration_error([[0.9, 0.1], [0.8, 0.2]], [0, 1]), 6)  # 0.9 right, 0.8 wrong
        0.45
    """
    bins, conf, correct = calibration_bins(probs, y_true, n_bins)
    n = np.bincount(bins, minlength=n_bins)
    gap = np.abs(np.bincount(bins, correct, n_bins) - np.bincount(bins, conf, n_bins))  # = n_m |acc_m - conf_m|
    return float(gap.sum() / max(n.sum(), 1))
