"""The one per-class (stratified) split of a labelled set, shared by pretraining's k-NN split, fine-tuning's
validation split and ``dinolab compare``'s test split.

Examples:
    >>> train, held = stratified_split(np.array([0, 0, 0, 0, 1, 1, 1, 1]), 0.25, seed=0)
    >>> len(train), len(held)
    (6, 2)
"""

from __future__ import annotations

import numpy as np


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, held_out)`` sorted indices; ``round(fraction·n_c)`` images of each class ``c`` held out
    (at least one when the class has two or more images, never all of them: a class of one image stays in
    train), drawn per class in label order by ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = int(round(fraction * len(idx)))
        n = min(max(n, 1 if len(idx) >= 2 else 0), len(idx) - 1)
        held.append(rng.permutation(idx)[:n])
    held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    train = np.setdiff1d(np.arange(len(labels)), held_out)
    return train, held_out
