"""Data curation: near-duplicate removal, retrieval from an uncurated pool, balanced sampling.

The pieces of the LVD-142M pipeline (DINOv2 paper, §3) and of hierarchical k-means curation
(Vo et al. 2024), on embeddings that may not fit in memory:

- :mod:`~dinolab.curate.store`: :class:`EmbeddingStore`, :func:`open_embeddings` (``.npz`` / memory-mapped ``.npy``)
- :mod:`~dinolab.curate.knn`: :func:`knn_search`, :func:`knn_pairs` (exact flat search with faiss or torch;
  approximate cell search)
- :mod:`~dinolab.curate.dedup`: :class:`DisjointSet`, :func:`find_duplicates`
- :mod:`~dinolab.curate.verify`: :class:`PixelVerifier` (checks candidate duplicate pairs in the pixels)
- :mod:`~dinolab.curate.retrieve`: :func:`retrieve_neighbors`, :func:`retrieve_by_clusters`
- :mod:`~dinolab.curate.kmeans`: :func:`kmeans`, :func:`hierarchical_kmeans`
- :mod:`~dinolab.curate.sampling`: :func:`balanced_sample`, :func:`find_cap`, :func:`allocate`

Examples:
    >>> import numpy as np
    >>> from dinolab.curate import EmbeddingStore, find_duplicates
    >>> x = np.random.default_rng(0).normal(size=(100, 32)).astype("float32")
    >>> x[1] = x[0] + 0.01                     # plant a near-duplicate
    >>> res = find_duplicates(EmbeddingStore(x), threshold=0.95, k=8, progress=False)
    >>> [g.tolist() for g in res.groups]
    [[0, 1]]
"""

from .dedup import (
                    DINO_AGAINST_THRESHOLD,
                    DINO_THRESHOLD,
                    SSCD_AGAINST_THRESHOLD,
                    SSCD_THRESHOLD,
                    DedupResult,
                    DisjointSet,
                    duplicate_edges,
                    find_duplicates,
)
from .kmeans import HierarchicalKMeans, KMeansResult, assign, hierarchical_kmeans, kmeans, kmeans_plusplus
from .knn import iter_knn, knn_pairs, knn_search
from .retrieve import RetrievalResult, retrieve_by_clusters, retrieve_neighbors
from .sampling import allocate, balanced_sample, find_cap
from .store import EmbeddingStore, load_or_embed, open_embeddings
from .verify import PixelVerifier

__all__ = [
    "EmbeddingStore", "open_embeddings", "load_or_embed", "knn_search", "knn_pairs", "iter_knn",
    "DisjointSet", "DedupResult", "duplicate_edges", "find_duplicates", "PixelVerifier",
    "DINO_THRESHOLD", "DINO_AGAINST_THRESHOLD", "SSCD_THRESHOLD", "SSCD_AGAINST_THRESHOLD",
    "RetrievalResult", "retrieve_neighbors", "retrieve_by_clusters",
    "KMeansResult", "HierarchicalKMeans", "kmeans", "kmeans_plusplus", "assign", "hierarchical_kmeans",
    "allocate", "balanced_sample", "find_cap",
]
