import numpy as np
import pytest

from dinolab.curate.kmeans import HierarchicalKMeans, KMeansResult, hierarchical_kmeans
from dinolab.curate.sampling import allocate, balanced_sample, find_cap


def test_cap_search_on_hand_computed_sizes():
    assert find_cap([100, 10, 1], 21) == 10  # 10 + 10 + 1 = 21
    assert allocate(np.array([100, 10, 1]), 21, np.random.default_rng(0)).tolist() == [10, 10, 1]
    assert find_cap([100, 10, 1], 25) == 14  # 14 + 10 + 1
    assert find_cap([5, 5], 3) == 1  # 1 + 1 = 2 ≤ 3 < 2 + 2
    assert find_cap([3, 4], 100) == 4  # everything fits
    assert find_cap([3, 4], 0) == 0


def test_remainder_goes_one_each_to_random_larger_clusters():
    # cap 10 gives 21, cap 11 would give 23: one extra image for one of the two large clusters
    seen = set()
    for seed in range(20):
        c = allocate(np.array([100, 100, 1]), 22, np.random.default_rng(seed))
        assert c.sum() == 22 and c[2] == 1 and sorted(c[:2].tolist()) == [10, 11]
        seen.add(tuple(c.tolist()))
    assert seen == {(11, 10, 1), (10, 11, 1)}
    assert allocate(np.array([3, 4]), 100, np.random.default_rng(0)).tolist() == [3, 4]


def test_cap_is_the_largest_that_fits_by_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(200):
        sizes = rng.integers(0, 50, rng.integers(1, 8))
        target = int(rng.integers(0, 200))
        fits = [c for c in range(0, 51) if np.minimum(sizes, c).sum() <= target]
        expected = min(max(fits), int(sizes.max()))
        assert find_cap(sizes, target) == expected
        counts = allocate(sizes, target, rng)
        assert counts.sum() == min(target, sizes.sum()) and (counts <= sizes).all()
        extra = counts - np.minimum(sizes, expected)
        assert set(extra.tolist()) <= {0, 1} and (sizes[extra == 1] > expected).all()


def _tree(point_clusters, leaf_dist, top_of_leaf, dim=2):
    """A hand-made two-level tree: points → leaf clusters → top clusters."""
    k0, k1 = len(top_of_leaf), max(top_of_leaf) + 1
    a0 = np.asarray(point_clusters)
    lv0 = KMeansResult(np.zeros((k0, dim), np.float32), a0, np.asarray(leaf_dist, np.float32), 0.0, 1)
    lv1 = KMeansResult(np.zeros((k1, dim), np.float32), np.asarray(top_of_leaf), np.zeros(k0, np.float32), 0.0, 1)
    return HierarchicalKMeans([lv0, lv1])


def test_top_down_allocation_on_a_hand_made_tree():
    # top 0 = leaves {0 (60 pts), 1 (30 pts)}, top 1 = leaf {2 (10 pts)}
    labels = [0] * 60 + [1] * 30 + [2] * 10
    tree = _tree(labels, np.arange(100)[::-1], [0, 0, 1])
    idx = balanced_sample(tree, 40, seed=0, progress=False)
    # top level: sizes [90, 10], target 40 -> cap 30 -> [30, 10]; inside top 0: [60, 30] -> cap 15 -> [15, 15]
    counts = np.bincount(np.asarray(labels)[idx], minlength=3)
    assert counts.tolist() == [15, 15, 10] and len(np.unique(idx)) == 40
    closest = balanced_sample(tree, 40, strategy="closest", progress=False)
    # distances decrease with the index, so "closest" takes the last points of each leaf
    assert closest.tolist() == list(range(45, 60)) + list(range(75, 90)) + list(range(90, 100))


def _entropy(counts):
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def test_sample_is_much_flatter_than_the_pool():
    rng = np.random.default_rng(0)
    sizes = [6000, 2000, 800, 300, 120, 60, 30, 15]
    centres = rng.normal(size=(len(sizes), 16)) * 12
    x = np.concatenate([c + rng.normal(size=(s, 16)) for c, s in zip(centres, sizes)]).astype(np.float32)
    truth = np.repeat(np.arange(len(sizes)), sizes)
    tree = hierarchical_kmeans(x, [64, 8], n_resamples=3, sample_sizes=[10, 1], seed=0, progress=False)
    idx = balanced_sample(tree, 400, seed=0, progress=False)
    assert len(idx) == 400 and len(np.unique(idx)) == 400
    pool, sample = np.bincount(truth, minlength=8), np.bincount(truth[idx], minlength=8)
    assert pool.max() / pool.min() == 400
    assert sample.min() >= 10 and sample.max() / sample.min() < 10
    # near-uniform over the 8 true concepts, where the pool is far from it
    assert _entropy(sample) > 0.9 * np.log(8) > _entropy(pool) + 0.5
    uniform = rng.choice(len(x), 400, replace=False)
    assert _entropy(sample) > _entropy(np.bincount(truth[uniform], minlength=8)) + 0.5


def test_target_larger_than_the_pool_takes_everything():
    labels = [0, 0, 1]
    tree = _tree(labels, [0, 0, 0], [0, 0])
    assert balanced_sample(tree, 10, progress=False).tolist() == [0, 1, 2]
    with pytest.raises(Exception, match="strategy"):
        balanced_sample(tree, 2, strategy="best", progress=False)
