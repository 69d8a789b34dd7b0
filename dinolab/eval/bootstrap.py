"""95% percentile-bootstrap intervals of classification metrics over a test set, vectorised.

A test set of a few hundred images gives a score that moves by points from one draw of the set to
the next; the interval says by how much. Each of ``n_resamples`` resamples draws N test images with
replacement (``numpy.random.default_rng(seed)``); every metric is computed on every resample from its
``(C, C)`` confusion matrix (and its calibration bins), all resamples at once with ``bincount``; the
interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the resampled values
(the percentile bootstrap, Efron & Tibshirani 1993, ch. 13). Metrics are those of
:mod:`dinolab.eval.metrics`, with the same conventions (balanced accuracy over the classes present in
the resample, macro-F1 over the classes present or predicted).

Examples:
    >>> probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    >>> ci = bootstrap_metrics(probs, [0, 1, 1, 1], n_resamples=200)
    >>> ci["accuracy"]["value"], ci["accuracy"]["low"] <= 0.75 <= ci["accuracy"]["high"]
    (0.75, True)
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, DataError
from .metrics import ECE_BINS, _as_labels, calibration_bins

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "worst_class_recall", "ece")


def scores_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """``(R, C, C)`` confusion counts (true, predicted) -> ``(R,)`` accuracy, balanced accuracy, macro-F1 and
    worst-class recall (NaN where a resample has no image)."""
    cm = cm.astype(np.float64)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support, predicted = cm.sum(2), cm.sum(1)
    n = support.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        seen = (support + predicted) > 0
        f1 = np.where(seen, 2 * tp / (support + predicted), np.nan)
        return {"accuracy": tp.sum(1) / n, "balanced_accuracy": np.nanmean(recall, 1),
                "macro_f1": np.nanmean(f1, 1), "worst_class_recall": np.nanmin(recall, 1)}


def _resampled(t: np.ndarray, pred: np.ndarray, bins, conf, correct, idx: np.ndarray, c: int) -> dict[str, np.ndarray]:
    """Scores of the resamples ``idx`` (R, N) of one test set."""
    r = idx.shape[0]
    rows = np.arange(r)[:, None]
    cm = np.bincount((rows * c * c + t[idx] * c + pred[idx]).ravel(), minlength=r * c * c).reshape(r, c, c)
    out = scores_from_confusion(cm)
    if bins is not None:
        key = (rows * ECE_BINS + bins[idx]).ravel()
        gap = np.abs(np.bincount(key, correct[idx].ravel(), r * ECE_BINS) - np.bincount(key, conf[idx].ravel(),
                                                                                       r * ECE_BINS))
        out["ece"] = gap.reshape(r, ECE_BINS).sum(1) / idx.shape[1]
    return out


def bootstrap_metrics(probs, y_true, *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
                      num_classes: int | None = None, chunk: int = 100, draws: bool = False) -> dict[str, dict]:
    """Point value and percentile-bootstrap interval of each metric in :data:`METRICS`.

    Args:
        probs: ``(N, C)`` class probabilities (ECE needs them), or ``(N,)`` predicted classes (no ECE).
        y_true: ``(N,)`` class indices.
        n_resamples: bootstrap resamples; seed: their draw; chunk: resamples computed at once (memory).
        draws: also return each metric's ``(n_resamples,)`` resampled values as ``"draws"``.

    Returns:
        ``{metric: {"value", "low", "high"}}`` (fractions), ``value`` on the whole test set.
    """
    if n_resamples < 1 or not 0 < confidence < 1:
        raise ConfigError(f"need n_resamples >= 1 and 0 < confidence < 1, got {n_resamples}, {confidence}")
    t = _as_labels(y_true, "y_true")
    if t.size == 0:
        raise DataError("cannot bootstrap an empty test set")
    p = np.asarray(probs)
    if p.ndim == 2:
        bins, conf, correct = calibration_bins(p, t)
        pred = p.argmax(1).astype(np.int64)
    else:
        bins = conf = correct = None
        pred = _as_labels(p, "predictions")
    c = num_classes or int(max(t.max(), pred.max())) + 1
    value = _resampled(t, pred, bins, conf, correct, np.arange(t.size)[None], c)
    rng = np.random.default_rng(seed)
    parts = [_resampled(t, pred, bins, conf, correct, rng.integers(0, t.size, (min(chunk, n_resamples - s), t.size)), c)
             for s in range(0, n_resamples, chunk)]
    q = ((1 - confidence) / 2, (1 + confidence) / 2)
    out = {}
    for name in value:
        resampled = np.concatenate([part[name] for part in parts])
        low, high = np.nanquantile(resampled, q)
        out[name] = {"value": float(value[name][0]), "low": float(low), "high": float(high)}
        if draws:
            out[name]["draws"] = resampled
    return out
