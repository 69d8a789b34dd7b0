"""Cosine k-nearest-neighbour search over embedding stores, chunked.

Indexes (``index=``):

- ``"flat"``: exact. With faiss, ``IndexFlatIP`` over the database held in memory; without,
  torch brute force with both queries and database streamed in chunks (neither has to fit in
  memory) and the top-k merged chunk by chunk. O(N_q·N_db·D).
- ``"cells"``: approximate, pure torch, for large databases. A coarse k-means splits the
  database into ``nlist`` cells (about 1,000 rows each); every query is compared, by one matrix
  product per cell, with the rows of its ``nprobe`` nearest cells. O(N_q·nprobe·N_db/nlist·D),
  all in dense matrix products, which on a CPU runs several times faster than scanning
  inverted lists vector by vector. Near-duplicates fall in the same or a neighbouring cell, so
  ``nprobe`` 2-4 finds nearly all of them.
- ``"ivf"``: approximate, faiss ``IndexIVFFlat`` (needs faiss).
- ``"auto"``: ``"cells"`` from :data:`APPROX_MIN_DATABASE` database rows on, ``"flat"`` below.

``backend="auto"`` uses faiss for flat search when it is installed and the search runs on the CPU,
torch otherwise (``device=`` puts torch flat search on a GPU).

This is dinolab's one k-NN search: :func:`dinolab.eval.knn.knn_classify` runs on :func:`iter_knn` too.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np

from ..errors import ConfigError
from .store import EmbeddingStore, _progress

APPROX_MIN_DATABASE = 50_000
CELL_SIZE = 1024
DEFAULT_NPROBE = 4


def faiss_available() -> bool:
    """True when faiss can be imported (the probe every search uses)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device: Any = "cpu") -> str:
    """``"faiss"`` or ``"torch"`` for ``backend`` (``"auto"``: faiss when installed and ``device`` is the CPU)."""
    if backend == "auto":
        on_cpu = str(device) == "cpu" or getattr(device, "type", None) == "cpu"
        return "faiss" if on_cpu and faiss_available() else "torch"
    if backend not in ("faiss", "torch"):
        raise ConfigError(f"unknown search backend {backend!r}; use auto, faiss or torch")
    if backend == "faiss" and not faiss_available():
        raise ConfigError("backend 'faiss' was asked for but faiss is not installed; "
                          "`pip install faiss-cpu` (or dinolab[faiss]) or use --backend torch")
    return backend


def resolve_index(index: str, n_database: int) -> str:
    if index == "auto":
        return "cells" if n_database >= APPROX_MIN_DATABASE else "flat"
    if index not in ("flat", "cells", "ivf"):
        raise ConfigError(f"unknown index {index!r}; use auto, flat, cells or ivf")
    return index


def knn_pairs(queries: EmbeddingStore, database: EmbeddingStore, k: int, *, min_similarity: float | None = None,
              exclude_self: bool = False, backend: str = "auto", index: str = "auto", nlist: int | None = None,
              nprobe: int = DEFAULT_NPROBE, chunk_size: int = 8192, seed: int = 0, progress: bool = True,
              desc: str = "nearest neighbours") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k nearest database rows of every query with cosine ≥ ``min_similarity``, as triplets.

    Returns (query row E int64, database row E int64, cosine E float32), sorted by query, then by
    decreasing similarity. Memory grows with the number of pairs returned, so with a threshold a
    self-join of millions of rows stays small.

    Args:
        exclude_self: queries and database are the same store; never pair a row with itself.
        backend, index, nlist, nprobe: see the module docstring.
        chunk_size: query rows (and, for torch flat search, database rows) per step.
    """
    _check(queries, database, k)
    if resolve_index(index, len(database)) == "cells":
        blocks = _cell_search(queries, database, k, min_similarity, exclude_self, nlist, nprobe, seed, progress, desc)
        return _topk_per_query(*blocks, k)
    qs, ds, ss = [], [], []
    for start, s, idx in iter_knn(queries, database, k, exclude_self=exclude_self, backend=backend, index=index,
                                  nlist=nlist, nprobe=nprobe, chunk_size=chunk_size, seed=seed, progress=progress,
                                  desc=desc):
        ok = idx >= 0
        if min_similarity is not None:
            ok &= s >= min_similarity
        rows, cols = np.nonzero(ok)
        qs.append(rows + start)
        ds.append(idx[rows, cols])
        ss.append(s[rows, cols])
    return _cat(qs, np.int64), _cat(ds, np.int64), _cat(ss, np.float32)


def knn_search(queries: EmbeddingStore, database: EmbeddingStore, k: int, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest database rows of every query: sims N_q×k float32 (descending), idx N_q×k int64.

    Missing neighbours (fewer than k database rows) have idx -1 and sim -inf. Keyword arguments
    as for :func:`knn_pairs`.
    """
    _check(queries, database, k)
    if resolve_index(kwargs.get("index", "auto"), len(database)) != "cells":
        sims, idx = [], []
        for _, s, i in iter_knn(queries, database, k, **kwargs):
            sims.append(s)
            idx.append(i)
        if not sims:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        return np.concatenate(sims), np.concatenate(idx)
    q, d, s = knn_pairs(queries, database, k, **kwargs)
    sims = np.full((len(queries), k), -np.inf, np.float32)
    idx = np.full((len(queries), k), -1, np.int64)
    col = np.arange(len(q)) - np.searchsorted(q, q, side="left")
    sims[q, col], idx[q, col] = s, d
    return sims, idx


def iter_knn(queries: EmbeddingStore, database: EmbeddingStore, k: int, *, exclude_self: bool = False,
             backend: str = "auto", index: str = "flat", nlist: int | None = None, nprobe: int = DEFAULT_NPROBE,
             chunk_size: int = 8192, seed: int = 0, progress: bool = True,
             desc: str = "nearest neighbours", device: Any = "cpu") -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(start, sims, idx)`` per query chunk (flat or faiss IVF search): q×k float32, q×k int64.

    ``device``: where torch flat search runs (``"cpu"``, ``"cuda"``, ...; see :mod:`dinolab.device`).
    """
    _check(queries, database, k)
    backend = resolve_backend(backend, device)
    index = resolve_index(index, len(database))
    if index == "cells":
        raise ConfigError("iter_knn streams flat or ivf search; use knn_pairs or knn_search for cells")
    kk = min(k + (1 if exclude_self else 0), len(database))
    if index == "ivf" or backend == "faiss":
        searcher = _FaissSearcher(database, index, nlist, nprobe, chunk_size, seed, progress)
    else:
        searcher = _TorchSearcher(database, chunk_size, device)
    bar = _progress(len(queries), desc, progress)
    for start, q in queries.iter_chunks(chunk_size):
        sims, idx = searcher.search(q, kk)
        if exclude_self:
            sims, idx = _drop_self(sims, idx, start)
        yield (start, *_pad(sims, idx, k))
        bar.update(len(q))
    bar.close()


def _check(queries: EmbeddingStore, database: EmbeddingStore, k: int) -> None:
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    if queries.dim != database.dim:
        raise ConfigError(f"{queries.source} has {queries.dim}-d embeddings but {database.source} has "
                          f"{database.dim}-d; embed both with the same model")


# an in-memory database up to this size is normalised once and kept (a memory map is streamed)
_CACHE_BYTES = 1 << 30


class _TorchSearcher:
    def __init__(self, database: EmbeddingStore, chunk_size: int, device: Any = "cpu") -> None:
        import torch

        from ..device import resolve_device

        self.db = database
        self.chunk = chunk_size
        self.device = resolve_device(device)
        in_memory = not isinstance(database.array, np.memmap) and len(database) * database.dim * 4 <= _CACHE_BYTES
        # a database that fits in one chunk (or in memory) is read once rather than once per query chunk
        self.cached = (torch.from_numpy(database.to_array()).to(self.device)
                       if len(database) <= chunk_size or in_memory else None)

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        qt = torch.from_numpy(q).to(self.device)
        best_s = torch.full((len(q), 0), -math.inf, device=self.device)
        best_i = torch.zeros((len(q), 0), dtype=torch.long, device=self.device)
        block = max(self.chunk, (1 << 24) // max(len(q), 1))  # database rows per product: about 64 MB of scores
        if self.cached is not None:
            chunks = ((s, self.cached[s:s + block]) for s in range(0, len(self.cached), block))
        else:
            chunks = ((s, torch.from_numpy(d).to(self.device)) for s, d in self.db.iter_chunks(block))
        for start, d in chunks:
            cs, ci = torch.topk(qt @ d.T, min(k, len(d)), dim=1)
            best_s = torch.cat([best_s, cs], 1)
            best_i = torch.cat([best_i, ci + start], 1)
            if best_s.shape[1] > k:
                best_s, pos = torch.topk(best_s, k, dim=1)
                best_i = torch.gather(best_i, 1, pos)
        best_s, pos = torch.sort(best_s, dim=1, descending=True, stable=True)
        return best_s.float().cpu().numpy(), torch.gather(best_i, 1, pos).cpu().numpy()


class _FaissSearcher:
    def __init__(self, database: EmbeddingStore, index: str, nlist: int | None, nprobe: int, chunk_size: int,
                 seed: int, progress: bool) -> None:
        try:
            import faiss
        except ImportError as e:
            raise ConfigError("index 'ivf' needs faiss: `pip install faiss-cpu`, or use --index cells") from e
        n, d = len(database), database.dim
        if index == "flat":
            self.index = faiss.IndexFlatIP(d)
        else:
            nlist = nlist or max(1, min(n // 39, int(round(4 * math.sqrt(n)))))
            self._quantizer = faiss.IndexFlatIP(d)  # the IVF index does not own its quantizer in Python
            self.index = faiss.IndexIVFFlat(self._quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            self.index.cp.seed = seed
            rng = np.random.default_rng(seed)
            train = database.rows(np.sort(rng.choice(n, min(n, 39 * nlist), replace=False)))
            self.index.train(train)
            self.index.nprobe = min(nprobe, nlist)
        for _, chunk in database.iter_chunks(chunk_size, progress=progress, desc="building index"):
            self.index.add(chunk)

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims, idx = self.index.search(q, k)
        return sims.astype(np.float32), idx.astype(np.int64)


def _cell_search(queries: EmbeddingStore, database: EmbeddingStore, k: int, min_sim: float | None,
                 exclude_self: bool, nlist: int | None, nprobe: int, seed: int, progress: bool,
                 desc: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate triplets: for every (query, probed cell), the top-k rows of that cell."""
    import torch

    from .kmeans import assign, kmeans, nearest_centroids

    n = len(database)
    nlist = max(1, min(n, nlist or n // CELL_SIZE))
    nprobe = max(1, min(nprobe, nlist))
    rng = np.random.default_rng(seed)
    sample = database.rows(np.sort(rng.choice(n, min(n, 32 * nlist), replace=False)))
    # a coarse quantizer only has to split the space; a few iterations from random centres do
    cells = kmeans(sample, nlist, n_iter=8, init="random", seed=seed, progress=progress).centroids
    db_cell, _ = assign(database, cells, progress=progress, desc="assigning cells")
    q_cells = nearest_centroids(queries, cells, nprobe, progress=progress, desc="probing cells")
    db_order = np.argsort(db_cell, kind="stable")
    db_bounds = np.searchsorted(db_cell[db_order], np.arange(nlist + 1))
    q_flat = q_cells.ravel()
    q_order = np.argsort(q_flat, kind="stable")
    q_rows = (q_order // nprobe).astype(np.int64)
    q_bounds = np.searchsorted(q_flat[q_order], np.arange(nlist + 1))
    qs, ds, ss = [], [], []
    bar = _progress(len(q_flat), desc, progress)
    for c in range(nlist):
        members = db_order[db_bounds[c]:db_bounds[c + 1]]
        asking = q_rows[q_bounds[c]:q_bounds[c + 1]]
        if len(members) == 0 or len(asking) == 0:
            bar.update(len(asking))
            continue
        db = torch.from_numpy(database.rows(members))
        kc = min(k, len(members))
        step = max(1, 2**24 // len(members))
        for a in range(0, len(asking), step):
            rows = asking[a:a + step]
            s = torch.from_numpy(queries.rows(rows)) @ db.T
            if exclude_self:  # members is sorted: find each query row among them and mask it
                pos = np.minimum(np.searchsorted(members, rows), len(members) - 1)
                own = np.flatnonzero(members[pos] == rows)
                s[torch.from_numpy(own), torch.from_numpy(pos[own])] = -math.inf
            r, col, vals = _block_hits(s, kc, min_sim)
            qs.append(rows[r])
            ds.append(members[col])
            ss.append(vals)
            bar.update(len(rows))
    bar.close()
    return _cat(qs, np.int64), _cat(ds, np.int64), _cat(ss, np.float32)


def _block_hits(s, k: int, min_sim: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, value) of each row's top-k entries of the q×m block ``s`` that reach ``min_sim``."""
    import torch

    rows = torch.arange(len(s))
    if min_sim is not None:  # few rows have any hit: look only at those
        rows = torch.nonzero(s.amax(1) >= min_sim).squeeze(1)
        s = s[rows]
        hits = s >= min_sim
        if int(torch.count_nonzero(hits)) <= k * len(rows):
            r, col = hits.nonzero(as_tuple=True)
            return rows[r].numpy(), col.numpy(), s[r, col].numpy()
    vals, col = torch.topk(s, k, dim=1)
    r = rows[:, None].expand_as(col)
    ok = torch.isfinite(vals) if min_sim is None else vals >= min_sim
    return r[ok].numpy(), col[ok].numpy(), vals[ok].numpy()


def _topk_per_query(q: np.ndarray, d: np.ndarray, s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.lexsort((d, -s, q))
    q, d, s = q[order], d[order], s[order]
    rank = np.arange(len(q)) - np.searchsorted(q, q, side="left")
    keep = rank < k
    return q[keep], d[keep], s[keep]


def _drop_self(sims: np.ndarray, idx: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
    keep = idx != np.arange(start, start + len(idx))[:, None]
    # the first k-1 entries of every row that are not the row itself (it may be absent)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :idx.shape[1] - 1]
    return np.take_along_axis(sims, order, 1), np.take_along_axis(idx, order, 1)


def _pad(sims: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = np.where(idx < 0, -np.inf, sims).astype(np.float32)
    idx = np.where(idx < 0, -1, idx)
    if idx.shape[1] < k:
        pad = k - idx.shape[1]
        idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
        sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
    return sims, idx


def _cat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)
