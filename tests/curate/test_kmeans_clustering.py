import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from dinolab.curate.kmeans import HierarchicalKMeans, _update, hierarchical_kmeans, kmeans, kmeans_plusplus
from dinolab.curate.knn import faiss_available
from dinolab.curate.store import EmbeddingStore, open_embeddings


@pytest.fixture(scope="module")
def blobs():
    x, y = make_blobs(2000, n_features=10, centers=8, cluster_std=1.5, random_state=0)
    return x.astype(np.float32), y


def test_inertia_matches_sklearn(blobs):
    x, _ = blobs
    ours = kmeans(x, 8, n_init=3, seed=0, progress=False)
    ref = KMeans(8, n_init=10, random_state=0).fit(x)
    assert ours.inertia == pytest.approx(ref.inertia_, rel=0.01)
    # inertia is the sum of squared distances to the assigned centroids, recomputed by hand
    d2 = ((x.astype(np.float64) - ours.centroids[ours.assignment]) ** 2).sum(1)
    assert ours.inertia == pytest.approx(d2.sum(), rel=1e-4)
    brute = ((x[:, None, :] - ours.centroids[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(ours.assignment, brute)


def test_kmeans_plusplus_is_deterministic_given_the_seed(blobs):
    x, _ = blobs
    a = kmeans_plusplus(x, 8, np.random.default_rng(3))
    b = kmeans_plusplus(x, 8, np.random.default_rng(3))
    c = kmeans_plusplus(x, 8, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # centres are data points, all distinct
    assert all((x == row).all(1).any() for row in a) and len(np.unique(a, axis=0)) == 8
    r1 = kmeans(x, 8, seed=5, progress=False)
    r2 = kmeans(x, 8, seed=5, progress=False)
    np.testing.assert_array_equal(r1.centroids, r2.centroids)
    np.testing.assert_array_equal(r1.assignment, r2.assignment)


def test_empty_cluster_is_reseeded_at_the_farthest_point():
    x = np.array([[0, 0], [0, 1], [10, 0], [50, 50]], np.float32)
    sums = np.array([[0, 1], [10, 0], [0, 0]], np.float64)
    counts = np.array([2, 1, 0])
    dist = np.array([0.25, 0.25, 0, 0.1], np.float32)
    new = _update(sums, counts, np.zeros((3, 2), np.float32), EmbeddingStore(x, normalize=False), dist)
    np.testing.assert_allclose(new, [[0, 0.5], [10, 0], [0, 0]])  # ties: the first farthest point, row 0
    dist[3] = 5000
    new = _update(sums, counts, np.zeros((3, 2), np.float32), EmbeddingStore(x, normalize=False), dist)
    np.testing.assert_allclose(new[2], [50, 50])
    # more clusters than distinct points: no NaN, every point still assigned
    dup = np.repeat(np.eye(3, dtype=np.float32), 10, axis=0)
    res = kmeans(dup, 5, seed=0, progress=False)
    assert np.isfinite(res.centroids).all() and res.inertia == pytest.approx(0, abs=1e-6)


def test_memory_mapped_input_gives_the_same_clustering(tmp_path, blobs):
    x, _ = blobs
    np.save(tmp_path / "x.npy", x)
    mm = kmeans(open_embeddings(tmp_path / "x.npy"), 8, seed=1, chunk_size=300, progress=False)
    mem = kmeans(EmbeddingStore(x), 8, seed=1, progress=False)
    np.testing.assert_array_equal(mm.assignment, mem.assignment)
    np.testing.assert_allclose(mm.centroids, mem.centroids, atol=1e-5)


def test_sampled_iterations_then_one_full_assignment(blobs):
    x, _ = blobs
    full = kmeans(x, 8, n_init=3, seed=0, progress=False)
    sampled = kmeans(x, 8, n_init=3, seed=0, max_points_per_centroid=50, progress=False)  # 400 of 2000 points
    assert sampled.inertia == pytest.approx(full.inertia, rel=0.05)
    brute = ((x[:, None, :] - sampled.centroids[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(sampled.assignment, brute)  # every point assigned, not only the sample


@pytest.mark.skipif(not faiss_available(), reason="faiss not installed")
def test_faiss_backend_reaches_a_similar_inertia(blobs):
    x, _ = blobs
    ours = kmeans(x, 8, n_init=3, seed=0, progress=False)
    theirs = kmeans(x, 8, n_init=3, seed=0, backend="faiss", progress=False)
    assert theirs.inertia == pytest.approx(ours.inertia, rel=0.05)


def test_hierarchical_levels_cluster_the_centroids_below(tmp_path, blobs):
    x, y = blobs
    tree = hierarchical_kmeans(x, [40, 8], n_resamples=2, sample_sizes=[5, 1], seed=0, progress=False)
    lv0, lv1 = tree.levels
    assert lv0.centroids.shape == (40, 10) and len(lv0.assignment) == 2000
    assert lv1.centroids.shape == (8, 10) and len(lv1.assignment) == 40
    # level 1 assigns each level-0 centroid to its nearest level-1 centroid
    brute = ((lv0.centroids[:, None] - lv1.centroids[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(lv1.assignment, brute)
    np.testing.assert_array_equal(tree.point_labels(1), lv1.assignment[lv0.assignment])
    assert tree.point_counts(1).sum() == 2000
    # well separated blobs: the top level recovers them (each top cluster is one true blob)
    top = tree.point_labels(1)
    purity = sum(np.bincount(y[top == c]).max() for c in np.unique(top)) / len(y)
    assert purity > 0.95
    tree.save(tmp_path / "c.npz")
    back = HierarchicalKMeans.load(tmp_path / "c.npz")
    np.testing.assert_array_equal(back.point_labels(1), top)


def test_resampling_flattens_cluster_sizes():
    # one dense blob (9,000 points) and 20 small ones (50 points each)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(21, 16)) * 10
    sizes = [9000] + [50] * 20
    x = np.concatenate([c + rng.normal(size=(s, 16)) for c, s in zip(centres, sizes)]).astype(np.float32)
    plain = hierarchical_kmeans(x, [40], seed=0, progress=False)
    resampled = hierarchical_kmeans(x, [40], n_resamples=5, sample_sizes=10, seed=0, progress=False)

    def centroids_in_dense_blob(tree):
        c = tree.levels[0].centroids
        return int((((c[:, None] - centres[None]) ** 2).sum(-1).argmin(1) == 0).sum())

    assert centroids_in_dense_blob(resampled) < centroids_in_dense_blob(plain)
