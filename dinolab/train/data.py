"""The images of a training run: the pretraining set and, with labels, the k-NN evaluation split.

With a labelled source and no ``data.val_source``, the images are split per class (stratified,
fixed seed): pretraining and the k-NN memory use the train part, the k-NN queries the held-out
part, so the reported accuracy is on images the model never saw.

Examples:
    >>> split = stratified_split(np.array([0, 0, 0, 0, 1, 1, 1, 1]), 0.25, seed=0)
    >>> len(split[0]), len(split[1])
    (6, 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data import ImageDataset
from ..data.splits import stratified_split
from ..errors import DataError
from .config import Config


class Subset:
    """The images ``indices`` of ``dataset``, with the interface the loaders and ``embed`` use."""

    def __init__(self, dataset: Any, indices: np.ndarray, name: str) -> None:
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)
        self.source = f"{getattr(dataset, 'source', 'data')} ({name})"
        self.paths = [dataset.paths[i] for i in self.indices]
        labels = getattr(dataset, "labels", None)
        self.labels = None if labels is None else np.asarray(labels)[self.indices]
        self.classes = getattr(dataset, "classes", None)

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, i: int, *, min_size: int | None = None):
        return self.dataset.load(int(self.indices[i]), min_size=min_size)


@dataclass
class RunData:
    """``train``: pretraining images (and k-NN memory); ``val``: k-NN queries, or None without labels."""

    train: Any
    val: Any | None

    @property
    def has_knn(self) -> bool:
        return self.val is not None and getattr(self.train, "labels", None) is not None


def build_run_data(config: Config) -> RunData:
    d = config.data
    dataset = ImageDataset(d.source, root=d.root, max_pixels=d.max_pixels)
    if d.val_source is not None:
        val = ImageDataset(d.val_source, root=d.root, max_pixels=d.max_pixels)
        if val.labels is None:
            raise DataError(f"data.val_source={d.val_source} has no labels; k-NN evaluation needs a "
                            f"class-per-subfolder folder (or remove data.val_source)")
        return RunData(dataset, val if dataset.labels is not None else None)
    if dataset.labels is None or d.val_fraction == 0:
        return RunData(dataset, None)
    train_idx, val_idx = stratified_split(np.asarray(dataset.labels), d.val_fraction, d.split_seed)
    return RunData(Subset(dataset, train_idx, "train split"), Subset(dataset, val_idx, "k-NN split"))
