import numpy as np
import pytest
from PIL import Image

from dinolab.curate.dedup import DisjointSet, duplicate_edges, find_duplicates
from dinolab.curate.knn import faiss_available
from dinolab.curate.store import EmbeddingStore, open_embeddings

SEARCHES = [dict(backend="torch", index="flat"), dict(backend="torch", index="cells", nlist=6, nprobe=3)]
if faiss_available():
    SEARCHES.append(dict(backend="faiss", index="flat"))


def test_disjoint_set_components_on_a_hand_made_graph():
    # 0-1-2 chain, 4-5, 6-8 via 7, 3 and 9 alone
    edges = [(0, 1), (2, 1), (5, 4), (8, 7), (6, 7)]
    ds = DisjointSet(10)
    a, b = np.array(edges).T
    ds.union_many(a, b)
    assert ds.find_all().tolist() == [0, 0, 0, 3, 4, 4, 6, 6, 6, 9]
    assert [g.tolist() for g in ds.groups()] == [[0, 1, 2], [4, 5], [6, 7, 8]]
    # one edge at a time, in another order, gives the same labels
    one = DisjointSet(10)
    for i, j in reversed(edges):
        one.union(j, i)
    assert one.find_all().tolist() == ds.find_all().tolist()
    assert one.find(8) == 6 and one.find(3) == 3


def test_disjoint_set_long_chain_and_random_graph_match_a_flood_fill():
    rng = np.random.default_rng(0)
    n = 300
    a, b = rng.integers(0, n, 200), rng.integers(0, n, 200)
    ds = DisjointSet(n)
    ds.union_many(a, b)
    # reference: breadth-first flood fill over the adjacency lists
    adj = [[] for _ in range(n)]
    for i, j in zip(a, b):
        adj[i].append(j)
        adj[j].append(i)
    label = [-1] * n
    for s in range(n):
        if label[s] < 0:
            label[s], todo = s, [s]
            while todo:
                for v in adj[todo.pop()]:
                    if label[v] < 0:
                        label[v] = s
                        todo.append(v)
    assert ds.find_all().tolist() == label
    chain = DisjointSet(1000)
    chain.union_many(np.arange(999, 0, -1), np.arange(998, -1, -1))
    assert set(chain.find_all().tolist()) == {0}


def _planted(n=400, d=48, seed=0):
    """Random (nearly orthogonal) vectors with planted pairs and triples at cosine ≈ 0.97."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    perm = rng.permutation(n)
    groups = [sorted(perm[3 * i:3 * i + 3].tolist()) for i in range(10)]
    groups += [sorted(perm[30 + 2 * i:32 + 2 * i].tolist()) for i in range(25)]
    for g in groups:
        for j in g[1:]:
            noise = rng.normal(size=d).astype(np.float32)
            x[j] = x[g[0]] + 0.25 * noise / np.linalg.norm(noise)
    return x, sorted(groups)


@pytest.mark.parametrize("search", SEARCHES, ids=lambda s: f"{s['backend']}-{s['index']}")
def test_planted_near_duplicates_are_recovered_exactly(search):
    x, planted = _planted()
    res = find_duplicates(EmbeddingStore(x), threshold=0.9, k=8, keep="first", progress=False, **search)
    assert [g.tolist() for g in res.groups] == planted
    assert res.kept == [g[0] for g in planted]
    removed = sorted(j for g in planted for j in g[1:])
    assert np.flatnonzero(~res.keep).tolist() == removed
    assert res.removed_paths == [str(i) for i in removed]
    kept_sims = res.sim_to_kept[[g[1] for g in planted]]
    assert (kept_sims > 0.9).all() and (kept_sims < 1.0).all()


def test_edges_match_brute_force_pairs():
    x, _ = _planted(200, 32, seed=3)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = u @ u.T
    i, j = np.nonzero(np.triu(sims >= 0.5, 1))
    edges, edge_sims = duplicate_edges(EmbeddingStore(x), 0.5, k=199, backend="torch", progress=False)
    assert edges.tolist() == np.stack([i, j], 1).tolist()
    np.testing.assert_allclose(edge_sims, sims[i, j], atol=1e-5)


def test_memory_mapped_input_gives_the_same_result(tmp_path):
    x, planted = _planted(seed=1)
    np.save(tmp_path / "pool.npy", x.astype(np.float16))
    mm = find_duplicates(open_embeddings(tmp_path / "pool.npy"), threshold=0.9, k=8, progress=False,
                         backend="torch", index="flat", chunk_size=64)
    mem = find_duplicates(EmbeddingStore(x.astype(np.float16).astype(np.float32)), threshold=0.9, k=8,
                          progress=False, backend="torch", index="flat")
    assert [g.tolist() for g in mm.groups] == [g.tolist() for g in mem.groups] == planted
    np.testing.assert_array_equal(mm.keep, mem.keep)


def test_keep_largest_prefers_more_pixels_then_input_order(tmp_path):
    sizes = {"a.png": (32, 32), "b.png": (64, 48), "c.png": (64, 48), "d.png": (20, 20)}
    paths = []
    for name, size in sizes.items():
        Image.new("RGB", size, (10, 20, 30)).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    x = np.array([[1, 0], [1, 0.01], [1, 0.02], [0, 1]], np.float32)
    res = find_duplicates(EmbeddingStore(x, paths), threshold=0.99, k=3, progress=False, backend="torch")
    assert [g.tolist() for g in res.groups] == [[0, 1, 2]]
    assert res.kept == [1]  # b and c tie on pixels and file size; b comes first
    assert res.kept_paths == [paths[1], paths[3]]
    first = find_duplicates(EmbeddingStore(x, paths), threshold=0.99, k=3, keep="first", progress=False)
    assert first.kept == [0]


def test_relative_dedup_removes_whole_groups_close_to_the_evaluation_set():
    x, planted = _planted(seed=2)
    triple = next(g for g in planted if len(g) == 3)
    pair = next(g for g in planted if len(g) == 2)
    lone = next(i for i in range(len(x)) if all(i not in g for g in planted))
    evaluation = np.stack([x[triple[2]], x[lone], -x[pair[0]]])  # the last is far from everything
    res = find_duplicates(EmbeddingStore(x), threshold=0.9, k=8, against=EmbeddingStore(evaluation),
                          against_threshold=0.99, keep="first", progress=False, backend="torch")
    assert sorted(res.leaked.tolist()) == sorted([triple[2], lone])
    assert not res.keep[triple].any() and not res.keep[lone]
    assert res.keep[pair[0]] and not res.keep[pair[1]]
    gi = [g.tolist() for g in res.groups].index(triple)
    assert res.kept[gi] == -1
    # every duplicate, plus the leaked triple's kept member, plus the lone leaked image
    assert int((~res.keep).sum()) == sum(len(g) - 1 for g in planted) + 1 + 1


def test_lower_threshold_never_splits_groups():
    x, _ = _planted(seed=4)
    store = EmbeddingStore(x)
    loose = find_duplicates(store, threshold=0.5, k=8, progress=False, backend="torch")
    tight = find_duplicates(store, threshold=0.95, k=8, progress=False, backend="torch")
    loose_sets = [set(g.tolist()) for g in loose.groups]
    for g in tight.groups:
        assert any(set(g.tolist()) <= s for s in loose_sets)
