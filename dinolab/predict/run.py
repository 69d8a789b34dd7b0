"""Running a :class:`~dinolab.predict.Predictor` over a data set, and the predictions CSV.

Images are read and prepared as the predictor's ``preprocess`` says (the loader of
:mod:`dinolab.data`: unreadable files are skipped, listed in ``Predictions.bad`` and, with
``bad_file_log``, written there; more than ``max_bad_fraction`` of them stops the run).
``tta="flip"`` averages the probabilities of each image and of its horizontal mirror.

The CSV (:func:`predictions_csv`) has one row per readable image, in data-set order:
``path,label,prob`` (the top-1 class and its probability), then ``label_2,prob_2 ... label_K,prob_K``
with ``top_k = K``, and ``true`` when the data has class folders. Paths that are not valid UTF-8
are written as their own bytes (:func:`dinolab.io.atomic_write`).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError

TTA = ("none", "flip")


@dataclass
class Predictions:
    """``paths`` (N), ``probs`` (N, C) float32, ``classes`` (C), true ``labels`` (N,) into ``classes`` or None
    (-1 for a class the predictor does not know), ``bad`` ``(path, reason)``."""

    paths: list[str]
    probs: np.ndarray
    classes: list[str]
    labels: np.ndarray | None = None
    bad: list[tuple[str, str]] = field(default_factory=list)

    @property
    def predictions(self) -> np.ndarray:
        return self.probs.argmax(1).astype(np.int64)


def predict_images(predictor: Any, data: Any, *, tta: str = "none", batch_size: int = 64, device: str = "auto",
                   precision: str = "auto", num_workers: int = 0, progress: bool = True,
                   max_bad_fraction: float | None = None, bad_file_log: str | os.PathLike | None = None,
                   limit_name: str = "max_bad_fraction") -> Predictions:
    """Class probabilities of every readable image of ``data`` (a data set or a source for one)."""
    from tqdm.auto import tqdm

    from ..data import BadFileLog, ImageDataset, make_loader
    from ..device import autocast, resolve_device, resolve_precision

    if tta not in TTA:
        raise ConfigError(f"tta={tta!r} must be one of {', '.join(TTA)}")
    dataset = data if hasattr(data, "load") and hasattr(data, "paths") else ImageDataset(data)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    pp = predictor.preprocess
    predictor.to(dev).eval()
    loader = make_loader(dataset, batch_size, num_workers=num_workers, resize_mode="eval", load_size=pp.image_size,
                         preprocess=pp, pin_memory=dev.type == "cuda")
    log = BadFileLog(1.0 if max_bad_fraction is None else max_bad_fraction, bad_file_log, config_key=limit_name)
    rows, indices, seen = [], [], 0
    try:
        with torch.inference_mode():
            for batch in tqdm(loader, total=len(loader), desc="predict", unit="batch", disable=None if progress else True):
                log.add(batch["bad"])
                seen += len(batch["indices"]) + len(batch["bad"])
                log.check(seen, total=len(dataset))
                if not len(batch["indices"]):
                    continue
                x = pp.normalize(batch["images"].to(dev))
                with autocast(dev, prec):
                    p = predictor.predict_proba(x).float()
                    if tta == "flip":
                        p = (p + predictor.predict_proba(torch.flip(x, dims=[3])).float()) / 2
                rows.append(p.cpu())
                indices.append(batch["indices"])
    finally:
        if log.count and bad_file_log is not None:
            log.write()
    if not rows:
        raise DataError(f"none of the {len(dataset)} images of {getattr(dataset, 'source', 'the data')} could be read "
                        f"({log.summary()}); check that the files are images")
    order = torch.cat(indices).numpy()
    return Predictions([dataset.paths[i] for i in order], torch.cat(rows).numpy(), list(predictor.classes),
                       _true_labels(dataset, order, predictor.classes), log.items)


def _true_labels(dataset: Any, order: np.ndarray, classes: list[str]) -> np.ndarray | None:
    labels, names = getattr(dataset, "labels", None), getattr(dataset, "classes", None)
    if labels is None or not names:
        return None
    index = {c: i for i, c in enumerate(classes)}
    mapping = np.array([index.get(str(c), -1) for c in names], dtype=np.int64)
    return mapping[np.asarray(labels, np.int64)[order]]


def predictions_csv(pred: Predictions, top_k: int = 1) -> str:
    """The CSV text described in the module docstring."""
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    k = min(top_k, len(pred.classes))
    order = np.argsort(-pred.probs, axis=1, kind="stable")[:, :k]
    head = ["path", "label", "prob"] + [f"{name}_{j}" for j in range(2, k + 1) for name in ("label", "prob")]
    head += ["true"] if pred.labels is not None else []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    for i, path in enumerate(pred.paths):
        row = [path] + [v for c in order[i] for v in (pred.classes[c], f"{pred.probs[i, c]:.6f}")]
        if pred.labels is not None:
            row.append(pred.classes[pred.labels[i]] if pred.labels[i] >= 0 else "")
        w.writerow(row)
    return buf.getvalue()
