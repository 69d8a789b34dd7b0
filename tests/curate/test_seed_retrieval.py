import numpy as np
import pytest

from dinolab.curate.retrieve import retrieve_by_clusters, retrieve_neighbors
from dinolab.curate.store import EmbeddingStore


def _circle(degrees):
    a = np.deg2rad(np.asarray(degrees, np.float64))
    return np.stack([np.cos(a), np.sin(a)], 1).astype(np.float32)


# pool images on the unit circle, at these angles (row i at POOL_DEG[i])
POOL_DEG = [0, 10, 25, 90, 100, 130, 180, 200, 270]


@pytest.mark.parametrize("index", ["flat", "cells"])
def test_each_seed_gets_its_k_nearest_and_the_union_counts_once(index):
    pool = EmbeddingStore(_circle(POOL_DEG), [f"p{d}.jpg" for d in POOL_DEG])
    seeds = EmbeddingStore(_circle([5, 95, 12]), ["s5", "s95", "s12"])
    res = retrieve_neighbors(pool, seeds, k=2, index=index, nlist=3, nprobe=3, progress=False)
    # by hand: seed 5° -> 0° and 10°; seed 95° -> 90° and 100°; seed 12° -> 10° and 0°
    assert res.indices.tolist() == [0, 1, 3, 4]
    assert res.paths == ["p0.jpg", "p10.jpg", "p90.jpg", "p100.jpg"]
    # 0° is 5° from seed 0 and 12° from seed 2; 10° is 2° from seed 2
    assert res.seed.tolist() == [0, 2, 1, 1]
    np.testing.assert_allclose(res.similarity, np.cos(np.deg2rad([5, 2, 5, 5])), atol=1e-6)


def test_caps_and_minimum_similarity():
    pool = EmbeddingStore(_circle(POOL_DEG))
    seeds = EmbeddingStore(_circle([5, 95]))
    res = retrieve_neighbors(pool, seeds, k=3, min_similarity=np.cos(np.deg2rad(21)), progress=False)
    # seed 5°: 0°, 10° within 21°, 25° is 20° away -> kept; seed 95°: 90°, 100° (130° is 35° away)
    assert res.indices.tolist() == [0, 1, 2, 3, 4]
    # seeds at 2° and 94°: neighbours 0° (2° away), 90° (4°), 100° (6°), 10° (8°); the cap keeps the closest
    near = EmbeddingStore(_circle([2, 94]))
    assert retrieve_neighbors(pool, near, k=2, max_images=2, progress=False).indices.tolist() == [0, 3]
    assert retrieve_neighbors(pool, near, k=2, max_images=3, progress=False).indices.tolist() == [0, 3, 4]


def test_near_duplicates_inside_the_union_can_be_removed():
    pool = EmbeddingStore(_circle([0, 0.5, 40, 90]))
    seeds = EmbeddingStore(_circle([1, 89]))
    res = retrieve_neighbors(pool, seeds, k=2, dedup_threshold=0.999, progress=False)
    # seed 1° finds 0° and 0.5° (near-duplicates of each other: one stays), seed 89° finds 90° and 40°
    assert res.indices.tolist() == [0, 2, 3]


def test_cluster_retrieval_takes_clusters_with_enough_seeds():
    rng = np.random.default_rng(0)
    centres = _circle([0, 120, 240])
    sizes = [50, 40, 30]
    pool = np.concatenate([c + 0.05 * rng.normal(size=(s, 2)) for c, s in zip(centres, sizes)]).astype(np.float32)
    seeds = np.concatenate([centres[0] + 0.05 * rng.normal(size=(5, 2)), centres[1] + 0.05 * rng.normal(size=(2, 2))])
    res = retrieve_by_clusters(EmbeddingStore(pool), EmbeddingStore(seeds.astype(np.float32)), 3, min_seeds=4,
                               per_cluster=1000, seed=0, progress=False)
    assert res.indices.tolist() == list(range(50))  # only the first blob holds ≥ 4 seeds
    assert sorted(res.seeds_per_cluster.tolist()) == [0, 2, 5]
    capped = retrieve_by_clusters(EmbeddingStore(pool), EmbeddingStore(seeds.astype(np.float32)), 3, min_seeds=2,
                                  per_cluster=10, selection="closest", seed=0, progress=False)
    assert len(capped.indices) == 20
    assert (capped.indices < 90).all() and ((capped.indices < 50).sum() == 10)
    # "closest" takes the points nearest their centroid: all retrieved are at least as close as the rest
    for c in np.unique(capped.cluster):
        taken = capped.similarity[capped.cluster == c]
        assert taken.min() > 0.99
