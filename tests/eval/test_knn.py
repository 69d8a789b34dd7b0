import math

import numpy as np
import pytest

from dinolab.errors import ConfigError, DataError
from dinolab.eval.knn import faiss_available, knn_classify


def brute_force_knn(train, ytr, test, k, T, n_cls, softmax=False):
    """Explicit loops: cosine sims, top-k, exp (or softmax) weights, per-class sums."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    all_scores = []
    for q in test:
        sims = [float(np.dot(q, t)) for t in train]
        order = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        w = [math.exp(sims[i] / T) for i in order]
        if softmax:
            total = sum(w)
            w = [x / total for x in w]
        scores = [0.0] * n_cls
        for i, wi in zip(order, w):
            scores[ytr[i]] += wi
        all_scores.append(scores)
    return np.array(all_scores)


def data(n_train=150, n_test=40, d=12, n_cls=7, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_cls, d))
    ytr = rng.integers(0, n_cls, n_train)
    yte = rng.integers(0, n_cls, n_test)
    train = centres[ytr] + 1.5 * rng.normal(size=(n_train, d))
    test = centres[yte] + 1.5 * rng.normal(size=(n_test, d))
    return train.astype(np.float32), ytr, test.astype(np.float32), yte


def test_matches_brute_force_predictions_top1_top5():
    train, ytr, test, yte = data()
    res = knn_classify(train, ytr, test, yte, k=(1, 10, 20), temperature=0.07, use_faiss=False)
    for k in (1, 10, 20):
        scores = brute_force_knn(train, ytr, test, k, 0.07, 7)
        pred = scores.argmax(1)
        np.testing.assert_array_equal(res[k]["predictions"], pred)
        assert res[k]["top1"] == pytest.approx(np.mean(pred == yte))
        # top-5 among classes that got a vote
        hits = [y in [c for c in np.argsort(-s)[:5] if s[c] > 0] for s, y in zip(scores, yte)]
        assert res[k]["top5"] == pytest.approx(np.mean(hits))
    assert res[20]["top5"] >= res[20]["top1"]
    assert res[1]["top1"] < 1.0 and res[1]["top5"] == res[1]["top1"]  # one neighbour => one voted class


def test_dinov2_softmax_weights_rank_classes_like_exp_weights():
    train, ytr, test, yte = data(seed=3)
    for k in (10, 50):
        exp_scores = brute_force_knn(train, ytr, test, k, 0.07, 7)
        soft_scores = brute_force_knn(train, ytr, test, k, 0.07, 7, softmax=True)
        np.testing.assert_array_equal(np.argsort(-exp_scores, 1)[:, :5], np.argsort(-soft_scores, 1)[:, :5])
        res = knn_classify(train, ytr, test, yte, k=k, use_faiss=False)
        np.testing.assert_array_equal(res[k]["predictions"], soft_scores.argmax(1))


def test_chunked_equals_unchunked_on_a_set_larger_than_the_chunk():
    train, ytr, test, yte = data(n_train=300, n_test=257, seed=1)
    full = knn_classify(train, ytr, test, yte, k=(10, 20), chunk_size=10_000, use_faiss=False)
    chunked = knn_classify(train, ytr, test, yte, k=(10, 20), chunk_size=16, use_faiss=False)
    for k in (10, 20):
        np.testing.assert_array_equal(full[k]["predictions"], chunked[k]["predictions"])
        assert full[k]["top5"] == chunked[k]["top5"]


@pytest.mark.skipif(not faiss_available(), reason="faiss not installed")
def test_faiss_and_torch_agree():
    train, ytr, test, yte = data(n_train=400, n_test=100, seed=2)
    a = knn_classify(train, ytr, test, yte, k=(10, 100), use_faiss=True, chunk_size=30)
    b = knn_classify(train, ytr, test, yte, k=(10, 100), use_faiss=False)
    for k in (10, 100):
        np.testing.assert_array_equal(a[k]["predictions"], b[k]["predictions"])
        assert a[k]["top1"] == b[k]["top1"] and a[k]["top5"] == b[k]["top5"]


def test_k_larger_than_train_set_is_clamped_with_a_note():
    train, ytr, test, yte = data(n_train=30, n_test=10)
    res = knn_classify(train, ytr, test, yte, k=(10, 200), use_faiss=False)
    assert res[200]["k_used"] == 30 and "used k=30" in res[200]["notes"][0]
    pred = brute_force_knn(train, ytr, test, 30, 0.07, 7).argmax(1)
    np.testing.assert_array_equal(res[200]["predictions"], pred)


def test_fewer_than_five_classes_gives_nan_top5_and_imbalance_metrics():
    rng = np.random.default_rng(0)
    # class 0 has 90 images, class 1 has 10; class-1 test images sit near class-0 centre => missed
    train = np.r_[rng.normal(0, 1, (90, 4)) + [5, 0, 0, 0], rng.normal(0, 1, (10, 4)) + [0, 5, 0, 0]]
    ytr = np.r_[np.zeros(90, int), np.ones(10, int)]
    test = np.r_[rng.normal(0, 0.1, (8, 4)) + [5, 0, 0, 0], rng.normal(0, 0.1, (2, 4)) + [5, 0.1, 0, 0]]
    yte = np.r_[np.zeros(8, int), np.ones(2, int)]
    res = knn_classify(train, ytr, test, yte, k=10, classes=["a", "b"], use_faiss=False)[10]
    assert math.isnan(res["top5"]) and any("top-5" in n for n in res["notes"])
    assert res["top1"] == pytest.approx(0.8)
    assert res["balanced_accuracy"] == pytest.approx(0.5)
    assert res["per_class_recall"] == {"a": 1.0, "b": 0.0}


def test_small_temperature_does_not_overflow():
    train, ytr, test, yte = data()
    res = knn_classify(train, ytr, test, yte, k=20, temperature=0.001, use_faiss=False)[20]
    nearest = knn_classify(train, ytr, test, yte, k=1, use_faiss=False)[1]
    # with a tiny temperature the nearest neighbour dominates the vote
    np.testing.assert_array_equal(res["predictions"], nearest["predictions"])


def test_bad_inputs_raise_clear_errors():
    train, ytr, test, yte = data()
    with pytest.raises(DataError, match="empty"):
        knn_classify(np.zeros((0, 12)), [], test, yte)
    with pytest.raises(DataError, match="width"):
        knn_classify(train, ytr, test[:, :5], yte)
    with pytest.raises(ConfigError):
        knn_classify(train, ytr, test, yte, k=0)
    with pytest.raises(DataError, match="one label per image"):
        knn_classify(train, ytr[:5], test, yte)
