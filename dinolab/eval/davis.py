"""Video object segmentation scores as the DAVIS benchmark defines them (Perazzi et al., CVPR 2016).

- **J** (region similarity): the Jaccard index ``|M ∩ G| / |M ∪ G|`` of an object's predicted mask ``M`` and
  its ground truth ``G``; 1 when both are empty.
- **F** (contour accuracy): the F-measure ``2PR / (P + R)`` of boundary precision ``P`` (share of the
  predicted boundary pixels within ``d`` pixels of the true boundary) and recall ``R`` (the converse), with
  ``d = ceil(0.008 · image diagonal)`` (a tolerance given as ``bound_th >= 1`` is in pixels). "Within ``d``"
  is a dilation by a disk of radius ``d`` (pixels with ``di² + dj² <= d²``). A boundary pixel is a pixel that
  differs from its right, lower or lower-right neighbour (the last row and column compare within the image).
  With no predicted boundary ``P = 1``, with no true boundary ``R = 1``; both empty: ``F = 1``.
- **J&F**: per object, J and F are averaged over the scored frames (the semi-supervised task leaves out the
  first frame, whose mask is given, and the last one); the means over all objects, and ``(J + F) / 2``.

Void pixels (``void``, e.g. value 255 in DAVIS annotations) are left out of J and count as background for F.

Examples:
    >>> import numpy as np
    >>> a = np.zeros((4, 4), bool); a[:2] = True
    >>> b = np.zeros((4, 4), bool); b[:, :2] = True
    >>> round(float(jaccard(a, b)), 4)  # 4 shared pixels out of 12
    0.3333
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def jaccard(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> float:
    """J of two bool ``H×W`` masks (``void`` pixels ignored); 1.0 when both are empty."""
    from .objects import jaccard as iou

    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if void is not None:
        keep = ~np.asarray(void, bool)
        pred, gt = pred & keep, gt & keep
    return iou(pred, gt)


def boundary(mask: np.ndarray) -> np.ndarray:
    """bool ``H×W``: pixels whose value differs from the right, lower or lower-right neighbour."""
    m = np.asarray(mask, bool)
    right, down, diag = np.zeros_like(m), np.zeros_like(m), np.zeros_like(m)
    right[:, :-1] = m[:, 1:] != m[:, :-1]
    down[:-1] = m[1:] != m[:-1]
    diag[:-1, :-1] = m[1:, 1:] != m[:-1, :-1]
    return right | down | diag


def disk(radius: int) -> np.ndarray:
    """bool ``(2r+1)×(2r+1)`` structuring element: offsets with ``di² + dj² <= r²``."""
    d = np.arange(-radius, radius + 1)
    return d[:, None] ** 2 + d[None, :] ** 2 <= radius ** 2


def tolerance(shape: tuple[int, int], bound_th: float = 0.008) -> int:
    """Boundary tolerance in pixels: ``bound_th`` if at least 1, else ``ceil(bound_th · diagonal)``."""
    return int(bound_th) if bound_th >= 1 else math.ceil(bound_th * math.hypot(*shape))


def f_measure(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = 0.008
              ) -> tuple[float, float, float]:
    """``(F, precision, recall)`` of the boundaries of two bool ``H×W`` masks (see the module docstring)."""
    from scipy.ndimage import binary_dilation

    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if void is not None:  # void pixels count as background on both sides, before the boundaries are taken
        keep = ~np.asarray(void, bool)
        pred, gt = pred & keep, gt & keep
    pb, gb = boundary(pred), boundary(gt)
    r = tolerance(pred.shape, bound_th)
    near_gt = binary_dilation(gb, structure=disk(r)) if r > 0 else gb
    near_pred = binary_dilation(pb, structure=disk(r)) if r > 0 else pb
    n_pred, n_gt = np.count_nonzero(pb), np.count_nonzero(gb)
    precision = 1.0 if n_pred == 0 else np.count_nonzero(pb & near_gt) / n_pred
    recall = 1.0 if n_gt == 0 else np.count_nonzero(gb & near_pred) / n_gt
    if n_pred == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0 and n_pred > 0:
        precision, recall = 0.0, 1.0
    f = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return f, precision, recall


@dataclass
class VideoScores:
    """Per-object J and F over the scored frames of one video; ``objects`` are the object indices."""

    objects: list[int]
    j: dict[int, list[float]] = field(default_factory=dict)
    f: dict[int, list[float]] = field(default_factory=dict)

    def add(self, pred: np.ndarray, gt: np.ndarray, void_value: int | None = 255) -> None:
        """Score one frame: ``uint8 H×W`` predicted and true object-index masks."""
        void = gt == void_value if void_value is not None else None
        for k in self.objects:
            self.j.setdefault(k, []).append(jaccard(pred == k, gt == k, void))
            self.f.setdefault(k, []).append(f_measure(pred == k, gt == k, void)[0])

    def summary(self) -> dict:
        """``{"objects": {k: {"J", "F", "J&F", "frames"}}, "J", "F", "J&F"}``: means over frames per object,
        then over objects (NaN-free: an object scored on no frame is left out)."""
        per = {k: {"J": float(np.mean(self.j[k])), "F": float(np.mean(self.f[k])), "frames": len(self.j[k])}
               for k in self.objects if self.j.get(k)}
        for v in per.values():
            v["J&F"] = (v["J"] + v["F"]) / 2
        if not per:
            return {"objects": {}, "J": None, "F": None, "J&F": None}
        j = float(np.mean([v["J"] for v in per.values()]))
        f = float(np.mean([v["F"] for v in per.values()]))
        return {"objects": per, "J": j, "F": f, "J&F": (j + f) / 2}
