"""Near-duplicate removal: k-NN graph, cosine threshold, connected components, keep one per group.

This follows the self-deduplication of LVD-142M (DINOv2 paper, §3 and App. A): link every image
to those of its ``k`` nearest neighbours (k=64) whose cosine similarity reaches a threshold, take
the connected components of that graph with a disjoint-set forest, and keep one image per
component. Relative deduplication (``against``) then removes every component that holds an image
close to an evaluation image, so a pretraining set does not leak test images.

Thresholds depend on the embedding space:

- **Copy-detection embeddings** (SSCD, as in LVD-142M): self 0.6, relative 0.45
  (:data:`SSCD_THRESHOLD`, :data:`SSCD_AGAINST_THRESHOLD`). Copy-detection models are trained
  so that edited copies are close and *different* photos of the same thing are far.
- **DINO embeddings** (what ``dinolab embed`` writes): semantic. Two different photos of the same
  breed of dog commonly reach cosine 0.6-0.8 in a DINO CLS space, so 0.6 would merge them. The
  defaults here are :data:`DINO_THRESHOLD` (0.9) and :data:`DINO_AGAINST_THRESHOLD` (0.8). They are
  provisional, chosen from common practice with DINOv2 CLS features rather than measured here:
  calibrate them with ``bench/bench_curate.py planted --weights W`` (it prints planted-pair recall
  and false-group rate per threshold) once trained weights are at hand.

**Pixel verification** (``verify=PixelVerifier()``, :mod:`dinolab.curate.verify`) links only the
candidate pairs whose pictures align pixel for pixel (resized, re-encoded, slightly cropped or
mirrored copies). It removes the false groups a semantic space makes (different tiles of one
texture, drawings in one style) and lets the embedding threshold drop to
:data:`VERIFIED_THRESHOLDS` for recall: on the planted benchmark (BENCHMARKS.md) it turns 34% false
groups at recall 0.90 into none at recall 0.95. Verified links are not allowed to chain: each
component is split (:func:`split_weak_chains`) so that every member of a group is linked to, or
verified against, the image the group keeps (A~B and B~C no longer group A with a different C).
Without verification the groups stay the plain connected components of LVD-142M.

Which image a group keeps is deterministic: ``keep="largest"`` keeps the member with the most
pixels (image headers are read, not decoded), then the largest file, then the first in input order;
``keep="first"`` keeps the member that comes first in the input order. Rows whose paths are not
readable files count as 0 pixels, so ``"largest"`` falls back to input order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import ConfigError
from .knn import knn_pairs
from .store import EmbeddingStore, _progress_iter
from .verify import PixelVerifier

SSCD_THRESHOLD = 0.6
SSCD_AGAINST_THRESHOLD = 0.45
DINO_THRESHOLD = 0.9
DINO_AGAINST_THRESHOLD = 0.8
THRESHOLDS = {"dino": (DINO_THRESHOLD, DINO_AGAINST_THRESHOLD), "sscd": (SSCD_THRESHOLD, SSCD_AGAINST_THRESHOLD)}
# With pixel verification the embedding threshold only picks candidates: lower, for recall.
VERIFIED_THRESHOLDS = {"dino": 0.8, "sscd": SSCD_THRESHOLD}
DEFAULT_K = 64


class DisjointSet:
    """Connected components of ``n`` items under edges added in batches (scipy ``connected_components``).

    Roots are always the smallest index of their set, so component labels do not depend on
    the order in which edges arrive. The edges are kept and the components computed when asked
    for (and cached until the next union): on 1M edges over 2M rows this is 1.2-1.5x faster than
    the vectorised union-find it replaced (bench/bench_components.py, BENCHMARKS.md).

    Examples:
        >>> ds = DisjointSet(5)
        >>> ds.union_many(np.array([0, 3]), np.array([1, 4]))
        >>> ds.find_all().tolist()
        [0, 0, 2, 3, 3]
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self._edges: list[tuple[np.ndarray, np.ndarray]] = []
        self._roots: np.ndarray | None = np.arange(n, dtype=np.int64)

    def find_all(self) -> np.ndarray:
        """The root (smallest member) of every item's set: N int64."""
        if self._roots is None:
            self._roots = component_roots(self.n, np.concatenate([a for a, _ in self._edges]),
                                          np.concatenate([b for _, b in self._edges]))
        return self._roots

    def find(self, i: int) -> int:
        return int(self.find_all()[i])

    def union(self, a: int, b: int) -> None:
        self.union_many(np.array([a]), np.array([b]))

    def union_many(self, a: np.ndarray, b: np.ndarray) -> None:
        """Merge the sets of ``a[i]`` and ``b[i]`` for every i (a, b: E int)."""
        a, b = np.asarray(a, np.int64).ravel(), np.asarray(b, np.int64).ravel()
        if len(a) != len(b):
            raise ValueError(f"union_many needs as many a as b items, got {len(a)} and {len(b)}")
        if len(a):
            self._edges.append((a, b))
            self._roots = None

    def groups(self, min_size: int = 2) -> list[np.ndarray]:
        """Sets with at least ``min_size`` members, each sorted, ordered by their smallest member."""
        roots = self.find_all()
        counts = np.bincount(roots, minlength=len(roots))
        members = np.flatnonzero(counts[roots] >= min_size)
        members = members[np.argsort(roots[members], kind="stable")]
        cuts = np.flatnonzero(np.diff(roots[members])) + 1
        return np.split(members, cuts) if len(members) else []


def component_roots(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For ``n`` nodes and undirected edges ``a[i] - b[i]``: the smallest node of each node's component (N int64)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    graph = sp.coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=True, connection="weak")
    first = np.full(int(labels.max()) + 1 if n else 0, n, np.int64)
    np.minimum.at(first, labels, np.arange(n, dtype=np.int64))
    return first[labels]


@dataclass
class DedupResult:
    """What :func:`find_duplicates` decided, row by row.

    Attributes:
        paths: N row names.
        keep: N bool, True for rows that stay.
        groups: duplicate groups (≥2 members), each a sorted int64 array of row indices.
        kept: for each group, the index of the member it keeps (-1 if the group leaked).
        edges: E×2 int64 linked pairs (i < j) and ``edge_sims`` E float32.
        verify_scores: with pixel verification, E float32 NCC of each linked pair; the candidate
            pairs it rejected are ``rejected_edges`` (R×2), ``rejected_sims``, ``rejected_scores``
            (NaN: an image could not be read), judged against ``verify_min_score``.
        sim_to_kept: N float32, cosine of each group member to the member its group keeps
            (to the first member if the group leaked; NaN outside groups).
        leaked: indices of rows within ``against_threshold`` of an evaluation image,
            ``leak_match`` their closest evaluation row, ``leak_sim`` that similarity.
    """

    paths: list[str]
    keep: np.ndarray
    groups: list[np.ndarray]
    kept: list[int]
    edges: np.ndarray
    edge_sims: np.ndarray
    threshold: float
    k: int
    sim_to_kept: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    leaked: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    leak_match: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    leak_sim: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    against_paths: list[str] = field(default_factory=list)
    against_threshold: float | None = None
    verify_min_score: float | None = None
    verify_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    rejected_edges: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    rejected_sims: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    rejected_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    @property
    def kept_paths(self) -> list[str]:
        return [p for p, k in zip(self.paths, self.keep) if k]

    @property
    def removed_paths(self) -> list[str]:
        return [p for p, k in zip(self.paths, self.keep) if not k]

    def save(self, out_dir: str | os.PathLike) -> None:
        """Write kept.txt, removed.txt, groups.json and groups.csv into ``out_dir`` (atomically).

        groups.csv has one row per member of a group or leaked row: group (-1 for a leak outside
        any group), index, path, status (kept | duplicate | leak), similarity (to the kept member,
        or to the evaluation image for a leak), eval_path.
        """
        import csv
        import io
        import json

        from ..io import atomic_save_text

        out = Path(out_dir)
        atomic_save_text(out / "kept.txt", "".join(p + "\n" for p in self.kept_paths))
        atomic_save_text(out / "removed.txt", "".join(p + "\n" for p in self.removed_paths))
        rows = self._rows()
        doc = {"threshold": self.threshold, "k": self.k, "n_images": len(self.paths), "n_kept": int(self.keep.sum()),
               "n_removed": int((~self.keep).sum()), "against_threshold": self.against_threshold,
               "n_leaked": int(len(self.leaked)),
               "groups": [{"id": gi, "kept": self.paths[c] if c >= 0 else None,
                           "members": [{"index": r[1], "path": r[2], "status": r[3], "similarity": r[4]}
                                       for r in rows if r[0] == gi]}
                          for gi, c in enumerate(self.kept)],
               "leaks": [{"index": int(i), "path": self.paths[i], "eval_path": self.against_paths[j],
                          "similarity": round(float(s), 4)}
                         for i, j, s in zip(self.leaked, self.leak_match, self.leak_sim)]}
        if self.verify_min_score is not None:
            doc["verify"] = {"min_score": self.verify_min_score, "n_verified": int(len(self.edges)),
                             "n_rejected": int(len(self.rejected_edges)),
                             "rejected_pairs": [{"paths": [self.paths[i], self.paths[j]], "similarity": round(float(s), 4),
                                                 "ncc": None if np.isnan(v) else round(float(v), 4)}
                                                for (i, j), s, v in zip(self.rejected_edges.tolist(), self.rejected_sims,
                                                                        self.rejected_scores)]}
        atomic_save_text(out / "groups.json", json.dumps(doc, indent=1) + "\n")
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["group", "index", "path", "status", "similarity", "eval_path"])
        w.writerows(rows)
        atomic_save_text(out / "groups.csv", buf.getvalue())

    def _rows(self) -> list[list]:
        """One row per group member and per leak: group, index, path, status, similarity, eval_path."""
        leak_of = {int(i): (self.against_paths[j], float(s)) for i, j, s in zip(self.leaked, self.leak_match, self.leak_sim)}
        rows, seen = [], set()
        for gi, (g, c) in enumerate(zip(self.groups, self.kept)):
            for i in g.tolist():
                seen.add(i)
                if i in leak_of:
                    rows.append([gi, i, self.paths[i], "leak", round(leak_of[i][1], 4), leak_of[i][0]])
                else:
                    status = "kept" if i == c else ("duplicate" if c >= 0 else "leak")
                    s = float(self.sim_to_kept[i])
                    rows.append([gi, i, self.paths[i], status, round(s, 4), ""])
        for i, (eval_path, s) in sorted(leak_of.items()):
            if i not in seen:
                rows.append([-1, i, self.paths[i], "leak", round(s, 4), eval_path])
        return rows


def duplicate_edges(store: EmbeddingStore, threshold: float, k: int = DEFAULT_K, **search) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of rows among each other's k nearest neighbours with cosine ≥ threshold.

    Returns (E×2 int64 with i < j, unique, sorted; E float32 similarities). Only pairs above the
    threshold are kept while searching, so memory grows with the number of duplicates, not N·k.
    """
    q, d, s = knn_pairs(store, store, k, min_similarity=threshold, exclude_self=True, desc="duplicate search",
                        **search)
    if len(q) == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    pairs = np.stack([np.minimum(q, d), np.maximum(q, d)], 1)
    pairs, first = np.unique(pairs, axis=0, return_index=True)
    return pairs, s[first]


def find_duplicates(store: EmbeddingStore, *, threshold: float = DINO_THRESHOLD, k: int = DEFAULT_K,
                    keep: str = "largest", against: EmbeddingStore | None = None,
                    against_threshold: float = DINO_AGAINST_THRESHOLD, verify: PixelVerifier | None = None,
                    progress: bool = True, **search) -> DedupResult:
    """Self-deduplicate ``store`` (and remove images close to ``against``, if given).

    Args:
        store: the pool, N×D.
        threshold: cosine similarity at which two images count as duplicates.
        k: neighbours per image in the graph (LVD-142M: 64). A group of more than k+1 copies
            is joined through chains of links, but may split if its members' neighbour lists
            do not overlap; raise k for pools with many copies of the same image.
        keep: ``"largest"`` or ``"first"`` (see the module docstring).
        against: evaluation embeddings; a pool group holding any image with cosine
            ≥ ``against_threshold`` to an evaluation image is removed whole.
        verify: a :class:`~dinolab.curate.verify.PixelVerifier`: link only the candidate pairs
            whose pixels align (reads the images; ``store`` must have their paths). The threshold
            then only picks candidates and can be lower.
        search: passed to :func:`dinolab.curate.knn.knn_pairs` (backend, index, nlist, nprobe, chunk_size).
    """
    if not -1.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold must be a cosine similarity in [-1, 1], got {threshold}")
    if keep not in ("largest", "first"):
        raise ConfigError(f"unknown keep policy {keep!r}; use 'largest' or 'first'")
    if verify is not None and not store.has_paths:
        raise ConfigError("pixel verification reads the images, but these embeddings have no image paths; "
                          "pass the paths (--paths FILE for a .npy) or drop --verify")
    n = len(store)
    edges, edge_sims = duplicate_edges(store, threshold, k, progress=progress, **search)
    checked = None
    if verify is not None:
        scores = verify.scores(store.paths, edges, progress=progress)
        ok = scores >= verify.min_score  # NaN (unreadable) is not verified
        checked = dict(verify_min_score=verify.min_score, verify_scores=scores[ok], rejected_edges=edges[~ok],
                       rejected_sims=edge_sims[~ok], rejected_scores=scores[~ok])
        edges, edge_sims = edges[ok], edge_sims[ok]
    ds = DisjointSet(n)
    ds.union_many(edges[:, 0], edges[:, 1])
    groups = ds.groups()
    paths = store.paths
    policy = keep if store.has_paths else "first"
    roots = ds.find_all()
    if verify is not None:
        groups = split_weak_chains(groups, edges, lambda g: _choose(g, paths, policy),
                                   lambda pairs: verify.scores(paths, pairs, progress=False) >= verify.min_score)
        roots = np.arange(n, dtype=np.int64)
        for g in groups:
            roots[g] = g[0]
    keep_mask = np.ones(n, dtype=bool)
    sim_to_kept = np.full(n, np.nan, np.float32)
    kept = []
    for g in _progress_iter(groups, "choosing kept images", progress, min_items=1000):
        chosen = _choose(g, paths, policy)
        keep_mask[g] = False
        keep_mask[chosen] = True
        kept.append(chosen)
        vecs = store.rows(g)
        sim_to_kept[g] = vecs @ vecs[np.searchsorted(g, chosen)]
    result = DedupResult(paths=paths, keep=keep_mask, groups=groups, kept=kept, edges=edges,
                         edge_sims=edge_sims, threshold=threshold, k=k, sim_to_kept=sim_to_kept, **(checked or {}))
    if against is not None:
        _remove_leaks(result, store, against, against_threshold, roots, progress, search)
    return result


def split_weak_chains(groups: list[np.ndarray], edges: np.ndarray, choose: Callable[[np.ndarray], int],
                      verified: Callable[[np.ndarray], np.ndarray]) -> list[np.ndarray]:
    """Split connected components so that every member of a group is verified against its kept image.

    Verified links chain: A~B and B~C put A and C in one group even when A and C are different
    pictures (two drawings of one digit each close to a third). Each component picks its kept
    image (``choose``), keeps the members linked to it directly or verified against it
    (``verified``: P×2 pairs -> P bool), and the rest form the components of the links among them,
    split again in turn. A real copy group (an original and its edited copies) stays whole.

    Args:
        groups: sorted int64 arrays of row indices (components with ≥2 members).
        edges: E×2 verified links.
    Returns:
        the groups with ≥2 members, each sorted, ordered by their smallest member.
    """
    linked = {(int(a), int(b)) for a, b in edges.tolist()}
    linked |= {(b, a) for a, b in linked}
    out, todo = [], list(groups)
    while todo:
        g = todo.pop()
        rep = choose(g)
        others = g[g != rep]
        direct = np.array([(rep, int(i)) in linked for i in others], bool)
        ok = direct.copy()
        if (~direct).any():
            ok[~direct] = verified(np.stack([np.full(int((~direct).sum()), rep), others[~direct]], 1))
        out.append(np.sort(np.append(others[ok], rep)))
        rest = others[~ok]
        if len(rest) >= 2:
            inside = np.isin(edges, rest).all(1)
            sub = DisjointSet(len(rest))
            sub.union_many(np.searchsorted(rest, edges[inside, 0]), np.searchsorted(rest, edges[inside, 1]))
            todo.extend(rest[m] for m in sub.groups())
    out = [g for g in out if len(g) >= 2]
    return sorted(out, key=lambda g: int(g[0]))


def _remove_leaks(result: DedupResult, store: EmbeddingStore, against: EmbeddingStore, threshold: float,
                  roots: np.ndarray, progress: bool, search: dict) -> None:
    leaked, match, sim = knn_pairs(store, against, 1, min_similarity=threshold, progress=progress,
                                   desc="checking against evaluation set", **search)
    result.leaked, result.leak_match, result.leak_sim = leaked, match, sim
    result.against_paths = against.paths
    result.against_threshold = threshold
    # a leak takes its whole duplicate group with it (LVD-142M removes components)
    bad_roots = np.unique(roots[result.leaked])
    result.keep &= ~np.isin(roots, bad_roots)
    result.kept = [c if result.keep[c] else -1 for c in result.kept]


def _choose(group: np.ndarray, paths: Sequence[str], policy: str) -> int:
    if policy == "first":
        return int(group[0])
    # most pixels, then largest file, then first in input order
    scores = [(*_image_size(paths[i]), -int(i)) for i in group]
    return int(group[max(range(len(group)), key=scores.__getitem__)])


def _image_size(path: str) -> tuple[int, int]:
    try:
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
        return w * h, os.path.getsize(path)
    except Exception:  # not an image file (e.g. synthetic names): no preference
        return 0, 0


__all__ = ["DisjointSet", "DedupResult", "split_weak_chains", "duplicate_edges", "find_duplicates", "DINO_THRESHOLD",
           "DINO_AGAINST_THRESHOLD", "SSCD_THRESHOLD", "SSCD_AGAINST_THRESHOLD", "THRESHOLDS",
           "VERIFIED_THRESHOLDS", "DEFAULT_K"]
