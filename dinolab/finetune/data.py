"""The labelled images of a fine-tuning run: reading them, holding out a validation split, decoding once.

Sources (:func:`labelled_dataset`): a class-per-subfolder folder, a ``.txt`` / ``.csv`` list of
``path,label`` rows (comma or tab; an optional header row ``path,label``; relative paths against
the list's folder), or a ``builtin:`` set with labels. :func:`stratified_split` holds out a share
of every class; :func:`decode_all` decodes each image once (bad files skipped and named) into one
``uint8`` tensor, at the model's input size, or larger for random-resized-crop augmentation.

Examples:
    >>> ds = labelled_dataset("builtin:digits?size=16")
    >>> len(ds), ds.classes[:3]
    (1797, ['0', '1', '2'])
    >>> tr, va, kept = stratified_split(ds.labels[:30], 0.2, seed=0)
    >>> len(tr) + len(va), sorted(set(ds.labels[va].tolist())) == sorted(set(ds.labels[:30].tolist()))
    (30, True)
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..io import read_text_lines

_HEADERS = ({"path", "label"}, {"image", "label"}, {"file", "label"}, {"filename", "label"})


def _read_label_list(path: Path) -> tuple[list[str], list[str]]:
    try:
        lines = read_text_lines(path)
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; it should hold one 'path,label' row per image") from None
    paths, labels = [], []
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        row = next(csv.reader([text], delimiter="\t" if "\t" in text and "," not in text else ","))
        row = [c.strip() for c in row]
        if n == 1 and {c.lower() for c in row} in _HEADERS:
            continue
        if len(row) != 2 or not row[0] or not row[1]:
            raise DataError(f"{path} line {n}: {text!r} is not 'path,label'; write one image path and its class "
                            f"name per row")
        p = Path(row[0])
        paths.append(str(p if p.is_absolute() else path.parent / p))
        labels.append(row[1])
    if not paths:
        raise DataError(f"{path} lists no images; write one 'path,label' row per image")
    return paths, labels


def labelled_dataset(source: str | os.PathLike) -> Any:
    """An :class:`~dinolab.data.ImageDataset` with ``labels`` and ``classes`` (sorted names), or DataError."""
    from ..data import ImageDataset

    p = Path(str(source))
    if not str(source).startswith("builtin:") and p.suffix.lower() in (".txt", ".csv") and p.is_file():
        paths, names = _read_label_list(p)
        ds = ImageDataset(paths)
        ds.source = str(source)
        ds.classes = sorted(set(names))
        index = {c: i for i, c in enumerate(ds.classes)}
        ds.labels = np.array([index[c] for c in names], dtype=np.int64)
    else:
        ds = ImageDataset(source)
        if ds.labels is None:
            raise DataError(f"{source} has no labels; use a class-per-subfolder folder (DIR/<class>/<image>), a "
                            f".csv/.txt of 'path,label' rows, or a builtin: set")
    if len(ds.classes) < 2:
        raise DataError(f"{source} has {len(ds.classes)} class; a classifier needs at least 2")
    return ds


def stratified_split(labels: np.ndarray, fraction: float, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """``(train_idx, val_idx, single)``: :func:`dinolab.data.splits.stratified_split` (``round(fraction · n_c)``,
    at least 1, images of every class with at least 2 held out) and the classes with one image, which stay in
    training."""
    from ..data.splits import stratified_split as split_per_class

    train, val = split_per_class(labels, fraction, seed)
    classes, counts = np.unique(labels, return_counts=True)
    return train, val, [int(c) for c in classes[counts < 2]]


@dataclass
class Images:
    """Decoded images of one split: ``pixels`` (N, 3, S, S) uint8, ``labels`` (N,) int64, their ``paths``."""

    pixels: torch.Tensor
    labels: torch.Tensor
    paths: list[str]
    bad: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


class _Subset:
    def __init__(self, ds: Any, idx: np.ndarray, labels: np.ndarray) -> None:
        self.ds, self.idx, self.labels = ds, idx, labels
        self.paths = [ds.paths[i] for i in idx]

    def __len__(self) -> int:
        return len(self.idx)

    def load(self, i: int, *, min_size: int | None = None) -> torch.Tensor:
        return self.ds.load(int(self.idx[i]), min_size=min_size)


def decode_all(ds: Any, idx: np.ndarray, labels: np.ndarray, preprocess: Any, *, num_workers: int = 0,
               progress: bool = True, desc: str = "decoding") -> Images:
    """Images ``idx`` of ``ds`` through ``preprocess.resize_image``, with ``labels``; unreadable ones left out."""
    from ..data.loader import make_loader
    from ..runtime.messages import progress as bar

    sub = _Subset(ds, np.asarray(idx, dtype=np.int64), np.asarray(labels, dtype=np.int64))
    s = preprocess.image_size
    pixels, ys, kept, bad = [], [], [], []
    loader = make_loader(sub, 64, resize_mode="eval", load_size=s, num_workers=num_workers, preprocess=preprocess)
    for batch in bar(loader, enabled=progress, desc=desc, unit="batch", leave=False):
        bad += batch["bad"]
        pixels.append(batch["images"])
        ys.append(batch["labels"])
        kept += [sub.paths[i] for i in batch["indices"].tolist()]
    pix = torch.cat(pixels) if pixels else torch.zeros(0, 3, s, s, dtype=torch.uint8)
    lab = torch.cat(ys) if ys else torch.zeros(0, dtype=torch.long)
    return Images(pix, lab, kept, bad)
