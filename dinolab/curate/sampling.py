"""Balanced top-down sampling from a hierarchical clustering.

A web crawl holds many near-identical pictures of a few popular things and a handful of
pictures of everything else. Sampling uniformly keeps that imbalance; sampling the same number
from each cluster flattens it. :func:`balanced_sample` does this at every level of a
:class:`~dinolab.curate.kmeans.HierarchicalKMeans` tree (Vo et al. 2024):

1. At the top level, split the target among the clusters: find the largest cap ``c`` with
   ``Σ min(c, size_i) ≤ target`` (:func:`find_cap`, a binary search); every cluster gets
   ``min(c, size_i)``; the remainder goes as +1 to randomly chosen clusters larger than ``c``
   (:func:`allocate`).
2. Inside each cluster, split its share among its child clusters the same way; recurse.
3. At the bottom, take the share of points from each level-1 cluster: random ones, or the
   closest to the centroid.

Sizes are always counted in points, so a small cluster gives everything it has and its unused
share goes to the larger ones.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .kmeans import HierarchicalKMeans
from .store import _progress


def find_cap(sizes: np.ndarray, target: int) -> int:
    """The largest cap c ≥ 0 with Σ min(c, sizes) ≤ target (``max(sizes)`` if all fit).

    Examples:
        >>> find_cap(np.array([100, 10, 1]), 21)
        10
    """
    sizes = np.asarray(sizes, np.int64)
    if len(sizes) == 0:
        return 0
    lo, hi = 0, int(sizes.max())
    if int(sizes.sum()) <= target:
        return hi
    while lo < hi:  # invariant: total(lo) ≤ target, and total(hi + 1) > target
        mid = (lo + hi + 1) // 2
        if int(np.minimum(sizes, mid).sum()) <= target:
            lo = mid
        else:
            hi = mid - 1
    return lo


def allocate(sizes: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """Per-cluster counts summing to ``min(target, Σ sizes)``, as flat as the sizes allow.

    Examples:
        >>> allocate(np.array([100, 10, 1]), 21, np.random.default_rng(0)).tolist()
        [10, 10, 1]
    """
    sizes = np.asarray(sizes, np.int64)
    if target < 0:
        raise ConfigError(f"target size must be ≥ 0, got {target}")
    cap = find_cap(sizes, target)
    counts = np.minimum(sizes, cap)
    remainder = min(target, int(sizes.sum())) - int(counts.sum())
    if remainder > 0:
        # fewer than len(larger) by construction: one more for cap+1 everywhere would overshoot
        larger = np.flatnonzero(sizes > cap)
        counts[rng.choice(larger, remainder, replace=False)] += 1
    return counts


def balanced_sample(tree: HierarchicalKMeans, target: int, *, strategy: str = "random", seed: int = 0,
                    progress: bool = True) -> np.ndarray:
    """``min(target, N)`` point indices (sorted int64), balanced over the clusters of every level.

    Args:
        tree: the hierarchical clustering of the N points.
        target: how many points to select.
        strategy: ``"random"`` or ``"closest"`` (to the level-1 centroid) at the leaves.
        seed: random seed for remainders and random selection.

    Examples:
        >>> pts = np.random.default_rng(0).normal(size=(2000, 8)).astype("float32")
        >>> from dinolab.curate import hierarchical_kmeans
        >>> idx = balanced_sample(hierarchical_kmeans(pts, [40, 4], progress=False), 300, progress=False)
        >>> len(idx)
        300
    """
    if strategy not in ("random", "closest"):
        raise ConfigError(f"unknown sampling strategy {strategy!r}; use 'random' or 'closest'")
    rng = np.random.default_rng(seed)
    n_levels = len(tree.levels)
    # children[t][j]: the level t-1 clusters inside cluster j of level t (t ≥ 1)
    children = [None] + [_members(lv.assignment, len(lv.centroids)) for lv in tree.levels[1:]]
    counts = [tree.point_counts(t) for t in range(n_levels)]
    leaf_order = _leaf_order(tree, strategy, rng)

    picked = []
    stack = [(n_levels - 1, j, int(c)) for j, c in enumerate(allocate(counts[-1], target, rng)) if c > 0]
    bar = _progress(min(target, tree.n_points), "balanced sampling", progress)
    while stack:
        t, j, share = stack.pop()
        if t == 0:
            picked.append(leaf_order[j][:share])
            bar.update(share)
            continue
        kids = children[t][j]
        for kid, c in zip(kids, allocate(counts[t - 1][kids], share, rng)):
            if c > 0:
                stack.append((t - 1, int(kid), int(c)))
    bar.close()
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def _members(assignment: np.ndarray, k: int) -> list[np.ndarray]:
    order = np.argsort(assignment, kind="stable")
    bounds = np.searchsorted(assignment[order], np.arange(k + 1))
    return [order[bounds[j]:bounds[j + 1]] for j in range(k)]


def _leaf_order(tree: HierarchicalKMeans, strategy: str, rng: np.random.Generator) -> list[np.ndarray]:
    """The points of every level-1 cluster in the order they are taken."""
    leaf = tree.levels[0]
    key = leaf.distances if strategy == "closest" else rng.random(len(leaf.assignment))
    order = np.lexsort((key, leaf.assignment))
    bounds = np.searchsorted(leaf.assignment[order], np.arange(len(leaf.centroids) + 1))
    return [order[bounds[j]:bounds[j + 1]] for j in range(len(leaf.centroids))]
