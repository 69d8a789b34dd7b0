"""Weighted k-nearest-neighbour classification on frozen features (DINO's k-NN protocol).

Train and test features are L2-normalised, so the similarity is the cosine. For each test image
the ``k`` most similar training images vote for their class with weight ``exp(sim / T)``
(T = 0.07), and the classes are ranked by their summed votes (DINO v1, ``eval_knn.py``).

DINOv2 weights the votes with ``softmax(sims / T)`` over the top-k instead. The softmax divides
every vote of one test image by the same positive number, so the class scores of that image are
scaled, not reordered: top-1 and top-5 are identical (the test suite checks this). We compute
``exp((sim - sim_max) / T)`` with ``sim_max`` the image's best similarity, which is the same
ranking again, without overflow for small temperatures.

Differences from the official script, all on purpose:

- the test set is processed in chunks whose size follows the training-set size, so memory stays
  bounded for large sets and small sets work (the official 100 chunks fail below 100 images);
- any number of classes (the official code hard-codes 1000);
- ``k`` larger than the training set is clamped, with a note;
- top-5 counts only classes that received at least one vote (the official code also counts
  zero-score classes, picked arbitrarily, when fewer than 5 classes are among the neighbours), and
  it is NaN when there are fewer than 5 classes;
- balanced accuracy, macro-F1 and per-class recall are reported next to accuracy.

Examples:
    >>> train, test = torch.randn(100, 16), torch.randn(10, 16)
    >>> res = knn_classify(train, torch.arange(100) % 4, test, torch.arange(10) % 4, k=(5, 20))
    >>> sorted(res), res[20]["predictions"].shape
    ([5, 20], (10,))
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch

from ..curate.knn import faiss_available
from ..device import resolve_device
from ..errors import ConfigError, DataError
from .metrics import classification_report

__all__ = ["knn_classify", "nearest_neighbours", "faiss_available", "default_chunk_size", "as_feature_tensor",
           "as_label_tensor"]


def default_chunk_size(n_columns: int) -> int:
    """Rows of a similarity matrix with ``n_columns`` columns to compute at once (about 64 MB of float32)."""
    return max(1, (1 << 24) // max(n_columns, 1))


def as_feature_tensor(x, name: str) -> torch.Tensor:
    """``(N, D)`` float32 tensor from an array or tensor, with a clear error for a wrong shape or NaNs."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()
    if t.ndim != 2:
        raise DataError(f"{name} must be a 2-D (N, D) array of features, got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise DataError(f"{name} is empty (0 images); check the folder or embeddings file it came from")
    if not torch.isfinite(t).all():
        raise DataError(f"{name} contains NaN or infinite values; re-embed with --precision fp32")
    return t


def as_label_tensor(y, n: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(y)).long()
    if t.shape != (n,):
        raise DataError(f"{name} must have one label per image ({n}), got shape {tuple(t.shape)}")
    if n and t.min() < 0:
        raise DataError(f"{name} holds negative labels; every image needs a class (use a class-per-subfolder folder)")
    return t


def nearest_neighbours(train: torch.Tensor, test: torch.Tensor, k: int, *, chunk_size: int | None = None,
                       use_faiss: bool | str = "auto", device: str | torch.device = "cpu"
                       ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Top-``k`` cosine neighbours of each test row among the train rows, chunk by chunk.

    The search is :func:`dinolab.curate.knn.iter_knn` (exact, flat), the one k-NN search of dinolab.

    Args:
        train: ``(N, D)``; test: ``(M, D)``; both are L2-normalised here.
        k: neighbours per test row (``<= N``).
        chunk_size: test rows per chunk (default: bounded memory, about 16M similarities per chunk).
        use_faiss: ``"auto"`` (faiss ``IndexFlatIP`` when installed and the device is the CPU), True, False.

    Yields:
        ``(start, sims, idx)``: ``sims`` (b, k) float32 in decreasing order, ``idx`` (b, k) long train
        indices, for test rows ``start .. start + b``; on the CPU.
    """
    from ..curate.knn import iter_knn
    from ..curate.store import EmbeddingStore

    dev = resolve_device(device)
    if use_faiss is True and not faiss_available():
        raise ConfigError("faiss was asked for but is not installed; `pip install faiss-cpu` or use use_faiss=False")
    backend = "auto" if use_faiss == "auto" else ("faiss" if use_faiss else "torch")
    database = EmbeddingStore(train.float().cpu().numpy(), source="train features")
    queries = EmbeddingStore(test.float().cpu().numpy(), source="test features")
    chunk = chunk_size or default_chunk_size(len(database))
    for start, sims, idx in iter_knn(queries, database, k, backend=backend, index="flat", chunk_size=chunk,
                                     progress=False, device=dev):
        yield start, torch.from_numpy(sims), torch.from_numpy(idx).long()


def knn_classify(train_feats, train_labels, test_feats, test_labels=None, k: int | Sequence[int] = (10, 20, 100, 200),
                 temperature: float = 0.07, num_classes: int | None = None, classes: Sequence[str] | None = None,
                 chunk_size: int | None = None, use_faiss: bool | str = "auto",
                 device: str | torch.device = "cpu") -> dict[int, dict]:
    """Weighted k-NN classification with votes ``exp(cos / T)``.

    Args:
        train_feats: ``(N, D)`` features; train_labels: ``(N,)`` class indices ``>= 0``.
        test_feats: ``(M, D)``; test_labels: ``(M,)`` or None (then only predictions are returned).
        k: one or several neighbourhood sizes, all served by one neighbour search.
        temperature: T of the vote weights.
        num_classes: default ``len(classes)`` or ``max label + 1``.
        classes: class names for the per-class report.
        chunk_size, use_faiss, device: see :func:`nearest_neighbours`.

    Returns:
        ``{k: result}`` for each requested k, where result holds ``predictions`` ((M,) int64 numpy),
        ``k_used`` (k clamped to N), ``notes`` (list of str) and, with test labels, ``top1``, ``top5``
        (fractions; top5 NaN with fewer than 5 classes), ``balanced_accuracy``, ``macro_f1`` and
        ``per_class_recall`` (``{class name: recall}``).
    """
    train = as_feature_tensor(train_feats, "train features")
    test = as_feature_tensor(test_feats, "test features")
    if train.shape[1] != test.shape[1]:
        raise DataError(f"train and test features differ in width ({train.shape[1]} vs {test.shape[1]}); "
                        "embed both sets with the same model and options")
    ytr = as_label_tensor(train_labels, train.shape[0], "train labels")
    yte = None if test_labels is None else as_label_tensor(test_labels, test.shape[0], "test labels")
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    ks = [k] if isinstance(k, int) else list(dict.fromkeys(int(x) for x in k))
    if not ks or min(ks) < 1:
        raise ConfigError(f"k must be one or more positive integers, got {k}")
    n_cls = num_classes or (len(classes) if classes is not None else None)
    top_label = max(int(ytr.max()), int(yte.max()) if yte is not None else 0)
    n_cls = n_cls or top_label + 1
    if top_label >= n_cls:
        raise DataError(f"a label ({top_label}) is out of range for {n_cls} classes")

    n_train, m = train.shape[0], test.shape[0]
    k_used = {kk: min(kk, n_train) for kk in ks}
    k_max = max(k_used.values())
    n_top = min(5, n_cls)
    preds = {kk: torch.empty(m, dtype=torch.long) for kk in ks}
    hit5 = {kk: torch.zeros(m, dtype=torch.bool) for kk in ks}
    search = nearest_neighbours(train, test, k_max, chunk_size=chunk_size, use_faiss=use_faiss, device=device)
    for s, sims, idx in search:
        neighbour_labels = ytr[idx]
        for kk in ks:
            kq = k_used[kk]
            # float64: exp(-2 / T) must not underflow to zero for a voted class.
            w = torch.exp((sims[:, :kq].double() - sims[:, :1].double()) / temperature)
            votes = torch.zeros(sims.shape[0], n_cls, dtype=torch.float64).scatter_add_(1, neighbour_labels[:, :kq], w)
            top_scores, top_cls = votes.topk(n_top, dim=1)
            preds[kk][s:s + sims.shape[0]] = top_cls[:, 0]
            if yte is not None:
                y = yte[s:s + sims.shape[0], None]
                hit5[kk][s:s + sims.shape[0]] = ((top_cls == y) & (top_scores > 0)).any(dim=1)

    out: dict[int, dict] = {}
    for kk in ks:
        notes = []
        if k_used[kk] < kk:
            notes.append(f"k={kk} is larger than the {n_train} training images; used k={n_train}")
        res: dict = {"k_used": k_used[kk], "predictions": preds[kk].numpy().astype(np.int64), "notes": notes}
        if yte is not None:
            rep = classification_report(yte.numpy(), res["predictions"], classes if classes is not None else n_cls)
            if n_cls < 5:
                notes.append(f"top-5 is not reported: only {n_cls} classes")
            res.update(top1=rep["accuracy"], top5=float(hit5[kk].double().mean()) if n_cls >= 5 else math.nan,
                       balanced_accuracy=rep["balanced_accuracy"], macro_f1=rep["macro_f1"],
                       per_class_recall={c: v["recall"] for c, v in rep["per_class"].items()})
        out[kk] = res
    return out
