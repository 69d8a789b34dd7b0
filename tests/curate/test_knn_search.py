import numpy as np
import pytest

from dinolab.curate.knn import faiss_available, knn_pairs, knn_search
from dinolab.curate.store import EmbeddingStore


def _brute(q, d, k):
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    dn = d / np.linalg.norm(d, axis=1, keepdims=True)
    s = qn @ dn.T
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, idx, 1), idx


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(37, 6)).astype(np.float32), rng.normal(size=(203, 6)).astype(np.float32)


@pytest.mark.parametrize("backend", ["torch"] + (["faiss"] if faiss_available() else []))
def test_flat_search_is_exact(data, backend):
    q, d = data
    sims, idx = knn_search(EmbeddingStore(q), EmbeddingStore(d), 5, backend=backend, index="flat",
                           chunk_size=16, progress=False)
    ref_s, ref_i = _brute(q, d, 5)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(sims, ref_s, atol=1e-5)


def test_cells_probing_every_cell_is_exact(data):
    q, d = data
    sims, idx = knn_search(EmbeddingStore(q), EmbeddingStore(d), 5, index="cells", nlist=7, nprobe=7, progress=False)
    ref_s, ref_i = _brute(q, d, 5)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(sims, ref_s, atol=1e-5)


def test_exclude_self_and_padding():
    x = np.array([[1, 0], [1, 0.1], [0, 1]], np.float32)
    store = EmbeddingStore(x)
    sims, idx = knn_search(store, store, 3, exclude_self=True, backend="torch", progress=False)
    assert idx.tolist() == [[1, 2, -1], [0, 2, -1], [1, 0, -1]]
    assert np.isneginf(sims[:, 2]).all()
    for index in ("flat", "cells"):
        q, dd, s = knn_pairs(store, store, 1, exclude_self=True, min_similarity=0.9, index=index, nlist=1,
                             backend="torch", progress=False)
        assert list(zip(q.tolist(), dd.tolist())) == [(0, 1), (1, 0)]
