"""Semantic segmentation on frozen patch tokens (DINOv2's linear protocol, DINOv3's few-image logistic regression).

- :func:`fit` (``fit.py``): train a head on images and masks, optionally into a HEAD run folder;
- :func:`load_segmenter` / :func:`save_segmenter` (``head.py``): the head, its backbone and the folder format;
- :func:`predict_mask` / :func:`predict_logits` (``predict.py``): sliding-window inference;
- :func:`evaluate` (``evaluate.py``) and :func:`confusion_matrix` / :func:`iou_report` (``metrics.py``): mIoU;
- :func:`load_segmentation_data` (``data.py``), :func:`read_mask` / :func:`write_mask` (``masks.py``).
"""

from .data import SegmentationData, load_segmentation_data
from .evaluate import evaluate
from .fit import fit
from .head import SegmentationHead, Segmenter, load_segmenter, save_segmenter
from .masks import IGNORE, read_mask, write_mask
from .metrics import confusion_matrix, iou_report
from .predict import predict_logits, predict_mask

__all__ = ["IGNORE", "SegmentationData", "SegmentationHead", "Segmenter", "confusion_matrix", "evaluate", "fit",
           "iou_report", "load_segmentation_data", "load_segmenter", "predict_logits", "predict_mask", "read_mask",
           "save_segmenter", "write_mask"]
