"""Semantic segmentation scores: a confusion matrix summed over the whole data set, IoU per class, mIoU.

As in mmsegmentation (and DINOv2's tables): intersections and unions are summed over all images
first, then divided, so a large image counts more than a small one (not an average of per-image
IoUs). Pixels whose target is the ignore index (255) are left out. A class that appears neither in
the targets nor in the predictions has IoU NaN and does not enter the mean.

Examples:
    >>> cm = confusion_matrix(np.array([[0, 1], [1, 255]]), np.array([[0, 1], [0, 1]]), 2)
    >>> cm.tolist()
    [[1, 0], [1, 1]]
    >>> iou_report(cm)["miou"]
    0.5
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import DataError
from .masks import IGNORE


def confusion_matrix(target: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = IGNORE
                     ) -> np.ndarray:
    """``C×C`` int64 counts, rows = true class, columns = predicted class, over the non-ignored pixels.

    ``target`` and ``pred`` are integer arrays of the same shape; a target outside ``0..C-1`` (other than
    ``ignore_index``) is a :class:`DataError`.
    """
    t, p = np.asarray(target, np.int64).ravel(), np.asarray(pred, np.int64).ravel()
    if t.shape != p.shape:
        raise DataError(f"prediction and mask differ in size ({np.shape(pred)} vs {np.shape(target)})")
    keep = t != ignore_index
    t, p = t[keep], p[keep]
    if t.size and (t.min() < 0 or t.max() >= num_classes):
        raise DataError(f"a mask holds class {int(t.max())}, but the head knows {num_classes} classes (0.."
                        f"{num_classes - 1}, {ignore_index} = ignore)")
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise DataError(f"a prediction holds class {int(p.max())} outside 0..{num_classes - 1}")
    return np.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def iou_report(cm: np.ndarray, classes: Sequence[str] | None = None) -> dict:
    """IoU per class ``tp / (tp + fp + fn)``, their mean over the classes seen (mIoU), pixel accuracy.

    Returns:
        dict with ``miou``, ``pixel_accuracy``, ``pixels`` and ``per_class``:
        ``{name: {"iou", "pixels"}}`` (``pixels``: true pixels of the class).
    """
    cm = np.asarray(cm, np.int64)
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    names = list(classes) if classes is not None else [str(i) for i in range(len(cm))]
    total = int(cm.sum())
    return {
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "pixels": total,
        "per_class": {names[i]: {"iou": float(iou[i]), "pixels": int(cm[i].sum())} for i in range(len(cm))},
    }
