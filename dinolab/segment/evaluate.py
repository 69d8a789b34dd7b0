"""Score a fitted head on images with masks: mIoU over the whole set (see :mod:`dinolab.segment.metrics`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .data import SegmentationData
from .head import Segmenter
from .metrics import confusion_matrix, iou_report
from .predict import predict_mask


def evaluate(seg: Segmenter, data: SegmentationData, *, batch_size: int = 8, device: Any = "cpu",
             precision: str = "fp32", progress: bool = True) -> dict[str, Any]:
    """Predict every readable image of ``data`` at its own resolution and sum one confusion matrix.

    Returns :func:`~dinolab.segment.metrics.iou_report`'s dict plus ``images`` (how many were scored) and
    ``skipped`` (``(path, reason)`` of the unreadable ones).
    """
    from ..runtime.messages import progress as bar

    k = len(seg.classes)
    cm = np.zeros((k, k), np.int64)
    n = 0
    for _, image, mask in bar(data.readable(), enabled=progress, total=len(data), desc="segment eval", unit="image"):
        pred = predict_mask(seg, image, batch_size=batch_size, device=device, precision=precision)
        cm += confusion_matrix(mask, pred, k)
        n += 1
    report = iou_report(cm, seg.classes)
    report.update(images=n, skipped=list(data.bad), confusion=cm.tolist())
    return report
