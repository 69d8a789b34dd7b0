"""Retrieval-based curation: pick the pool images that look like a set of seed images.

Two ways, as for LVD-142M (DINOv2 paper, §3):

- :func:`retrieve_neighbors` (sample-based, for seed sets of any size): the ``k`` nearest pool
  images of every seed (LVD-142M: k=4 for large curated sets, 32 for ImageNet-1k). ``k`` is the
  per-seed cap; the union is taken (an image found by several seeds counts once, credited to its
  most similar seed) and may be near-deduplicated.
- :func:`retrieve_by_clusters` (cluster-based, for large seed sets and very large pools):
  k-means the pool (LVD-142M: 100,000 clusters), keep the clusters that hold at least
  ``min_seeds`` seeds (LVD-142M: more than 3, so 4), and take up to ``per_cluster`` images from
  each (LVD-142M: 10,000), with an overall cap (LVD-142M: 1M per seed set).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .kmeans import KMeansResult, assign, kmeans
from .knn import knn_search
from .store import EmbeddingStore


@dataclass
class RetrievalResult:
    """Selected pool rows and why each was selected.

    Attributes:
        indices: M selected pool rows, sorted int64.
        paths: their M paths.
        seed: M int64, the most similar seed that retrieved each row (sample-based), or -1.
        similarity: M float32 cosine to that seed (sample-based) or to the cluster centroid.
        cluster: M int64 pool cluster of each row (cluster-based), or None.
        seeds_per_cluster: per pool cluster, how many seeds fell in it (cluster-based), or None.
    """

    indices: np.ndarray
    paths: list[str]
    seed: np.ndarray
    similarity: np.ndarray
    cluster: np.ndarray | None = None
    seeds_per_cluster: np.ndarray | None = None


def retrieve_neighbors(pool: EmbeddingStore, seeds: EmbeddingStore, k: int = 4, *, min_similarity: float | None = None,
                       max_images: int | None = None, dedup_threshold: float | None = None,
                       dedup_verify=None, progress: bool = True, **search) -> RetrievalResult:
    """The union of every seed's ``k`` nearest pool images.

    Args:
        pool: N×D pool embeddings; seeds: S×D seed embeddings (same model).
        k: neighbours taken per seed (the per-seed cap).
        min_similarity: drop neighbours less similar than this to their seed.
        max_images: cap on the union; the most similar images are kept.
        dedup_threshold: if given, near-duplicates inside the union are removed
            (:func:`dinolab.curate.dedup.find_duplicates` with this threshold).
        dedup_verify: a :class:`~dinolab.curate.verify.PixelVerifier` for that deduplication
            (only pairs whose pixels align count as duplicates; needs the pool's image paths).
        search: passed to :func:`dinolab.curate.knn.knn_search` (backend, index, nprobe, ...).

    Examples:
        >>> pool = EmbeddingStore(np.eye(4, dtype="float32"))
        >>> seeds = EmbeddingStore(np.array([[1, 0.1, 0, 0]], dtype="float32"))
        >>> retrieve_neighbors(pool, seeds, k=2, progress=False).indices.tolist()
        [0, 1]
    """
    if k < 1:
        raise ConfigError(f"--k must be at least 1 (pool images per seed), got {k}")
    sims, idx = knn_search(seeds, pool, k, progress=progress, desc="retrieving neighbours", **search)
    seed_of = np.repeat(np.arange(len(seeds)), idx.shape[1])
    sims, idx = sims.ravel(), idx.ravel()
    ok = idx >= 0
    if min_similarity is not None:
        ok &= sims >= min_similarity
    sims, idx, seed_of = sims[ok], idx[ok], seed_of[ok]
    # one entry per pool image: its most similar seed (ties: the lowest seed index)
    order = np.lexsort((seed_of, -sims, idx))
    first = np.ones(len(order), bool)
    first[1:] = idx[order][1:] != idx[order][:-1]
    pick = order[first]
    sel, sim, who = idx[pick], sims[pick], seed_of[pick]
    if max_images is not None and len(sel) > max_images:
        top = np.lexsort((sel, -sim))[:max_images]
        top.sort()
        sel, sim, who = sel[top], sim[top], who[top]
    if dedup_threshold is not None and len(sel) > 1:
        from .dedup import find_duplicates

        sub = EmbeddingStore(pool.rows(sel), [pool.paths[i] for i in sel] if pool.has_paths else None,
                             source=pool.source)
        keep = find_duplicates(sub, threshold=dedup_threshold, verify=dedup_verify, progress=progress, **search).keep
        sel, sim, who = sel[keep], sim[keep], who[keep]
    return RetrievalResult(sel.astype(np.int64), _paths(pool, sel), who.astype(np.int64), sim.astype(np.float32))


def retrieve_by_clusters(pool: EmbeddingStore, seeds: EmbeddingStore, n_clusters: int, *, min_seeds: int = 4,
                         per_cluster: int = 10000, max_images: int | None = None, selection: str = "random",
                         clustering: KMeansResult | None = None, n_iter: int = 20, seed: int = 0,
                         backend: str = "numpy", progress: bool = True) -> RetrievalResult:
    """Pool images from the k-means clusters of the pool that hold at least ``min_seeds`` seeds.

    Args:
        n_clusters: k-means clusters of the pool (ignored when ``clustering`` is given).
        min_seeds: a cluster is taken when this many seeds fall in it.
        per_cluster: at most this many images per taken cluster.
        max_images: overall cap, applied by random subsampling.
        selection: ``"random"`` or ``"closest"`` (to the centroid) inside a cluster.
        clustering: a k-means of this pool to reuse.
    """
    if selection not in ("random", "closest"):
        raise ConfigError(f"unknown selection {selection!r}; use 'random' or 'closest'")
    if min_seeds < 1 or per_cluster < 1:
        raise ConfigError(f"min_seeds and per_cluster must be ≥ 1, got {min_seeds} and {per_cluster}")
    km = clustering or kmeans(pool, n_clusters, n_iter=n_iter, seed=seed, backend=backend, progress=progress)
    seed_labels, _ = assign(seeds, km.centroids, progress=progress, desc="assigning seeds")
    per = np.bincount(seed_labels, minlength=len(km.centroids))
    rng = np.random.default_rng(seed)
    key = km.distances if selection == "closest" else rng.random(len(km.assignment))
    order = np.lexsort((key, km.assignment))
    labels = km.assignment[order]
    rank = np.arange(len(order)) - np.searchsorted(labels, labels, side="left")
    take = (per[labels] >= min_seeds) & (rank < per_cluster)
    sel = np.sort(order[take])
    if max_images is not None and len(sel) > max_images:
        sel = np.sort(rng.choice(sel, max_images, replace=False))
    cl = km.assignment[sel]
    # cosine to the centroid, for the record (pool rows are unit vectors: ‖x − c‖² = 1 − 2cos + ‖c‖²)
    cnorm = np.linalg.norm(km.centroids, axis=1)
    cos = (1.0 + cnorm[cl] ** 2 - km.distances[sel]) / (2.0 * np.maximum(cnorm[cl], 1e-12))
    return RetrievalResult(sel.astype(np.int64), _paths(pool, sel), np.full(len(sel), -1, np.int64),
                           cos.astype(np.float32), cluster=cl.astype(np.int64), seeds_per_cluster=per)


def _paths(store: EmbeddingStore, idx: np.ndarray) -> list[str]:
    paths = store.paths
    return [paths[i] for i in idx]
