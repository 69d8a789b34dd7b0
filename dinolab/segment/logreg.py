"""The few-image head: logistic regression on patch features (DINOv3's foreground-segmentation notebook).

Each training image is resized as for prediction; its mask, resized alike (nearest), gives every patch the
share of its pixels in each class (a ``p×p`` average of the one-hot mask, ignored pixels in no class). A
patch whose largest share reaches ``purity`` (default 0.99: the notebook keeps patches under 1 % or over
99 % foreground) is labelled with that class; mixed patches are left out. sklearn's
``LogisticRegression(C=0.1)`` (L2, lbfgs; multinomial over more than two classes) is fitted on the kept
patches' tokens and stored as the head's 1×1 convolution: a class the patches never showed gets a bias
of -1e4, so it is never predicted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from .head import Segmenter
from .masks import IGNORE

NEVER = -1e4  # bias of a class no training patch showed


def patch_fractions(mask: torch.Tensor, num_classes: int, patch: int) -> torch.Tensor:
    """``int64 H×W`` class indices -> float ``K×h×w``: each patch's share of pixels per class (255 in none).

    Examples:
        >>> m = torch.tensor([[0, 0, 1, 1], [0, 255, 1, 1]])
        >>> patch_fractions(m, 2, 2)[:, 0].tolist()
        [[0.75, 0.0], [0.0, 1.0]]
    """
    valid = mask != IGNORE
    onehot = F.one_hot(torch.where(valid, mask, 0), num_classes).permute(2, 0, 1).float() * valid.float()
    return F.avg_pool2d(onehot[None], patch)[0]


def patch_samples(seg: Segmenter, pairs: list, purity: float, device: Any, precision: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(X N×C, y N)``: the tokens and labels of every patch at least ``purity`` pure, over all ``pairs``."""
    from ..device import autocast
    from ..eval.dense import patch_tokens
    from ..eval.viz import prepare_image
    from .augment import resize_pair

    p, k = seg.backbone.patch_size, len(seg.classes)
    xs, ys = [], []
    for image, mask in pairs:
        resized, x = prepare_image(image, p, seg.image_size, seg.preprocess)
        _, m = resize_pair(image, torch.as_tensor(mask), tuple(resized.shape[-2:]))
        with torch.no_grad(), autocast(torch.device(device), precision):
            tokens = patch_tokens(seg.backbone, x.to(device), seg.layers).float().cpu()
        share, label = patch_fractions(m, k, p).max(dim=0)
        keep = share >= purity
        xs.append(tokens.permute(1, 2, 0)[keep].numpy())
        ys.append(label[keep].numpy())
    return np.concatenate(xs).astype(np.float64), np.concatenate(ys)


def fit_logreg(seg: Segmenter, pairs: list, cfg: Any, device: Any, precision: str) -> dict[str, Any]:
    """Fit ``seg.head`` (kind ``"logreg"``) in place; returns a record (patches used, per-class counts, accuracy)."""
    from sklearn.linear_model import LogisticRegression

    X, y = patch_samples(seg, pairs, cfg.purity, device, precision)
    seen = np.unique(y)
    if seen.size < 2:
        raise DataError(f"only {seen.size} class among the {len(y)} patches pure to {cfg.purity:.0%} "
                        f"(classes seen: {[seg.classes[i] for i in seen]}); give more or larger labelled images, "
                        f"a larger --image-size, or a lower purity")
    clf = LogisticRegression(C=cfg.C, max_iter=cfg.max_iter, random_state=cfg.seed)
    clf.fit(X, y)
    weight = torch.zeros(len(seg.classes), X.shape[1], dtype=torch.float64)
    bias = torch.full((len(seg.classes),), NEVER, dtype=torch.float64)
    if seen.size == 2:  # sklearn keeps one row: P(seen[1]) = sigmoid(w x + b), i.e. softmax of (0, w x + b)
        weight[seen[1]], bias[seen[1]], bias[seen[0]] = torch.from_numpy(clf.coef_[0]), float(clf.intercept_[0]), 0.0
    else:
        weight[seen], bias[seen] = torch.from_numpy(clf.coef_), torch.from_numpy(clf.intercept_)
    conv = seg.head.conv
    with torch.no_grad():
        conv.weight.copy_(weight.view_as(conv.weight).to(conv.weight))
        conv.bias.copy_(bias.to(conv.bias))
    counts = {seg.classes[c]: int((y == c).sum()) for c in seen}
    return {"patches": int(len(y)), "patches_per_class": counts, "train_accuracy": float(clf.score(X, y))}
