import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats
from threadpoolctl import threadpool_limits

from dinolab.errors import ConfigError
from dinolab.eval.fewshot import few_shot_episodes, mean_confidence_interval, nearest_centroid_classify


@pytest.fixture(autouse=True)
def one_thread():
    with threadpool_limits(1):
        yield


def test_nearest_centroid_matches_brute_force():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(60, 5)) + 2 * np.eye(5)[rng.integers(0, 4, 60)]
    ytr = rng.integers(0, 4, 60)
    ytr[ytr == 2] = 3  # class 2 absent: must never be predicted
    test = rng.normal(size=(25, 5))
    expected = []
    for q in test:
        best, best_sim = None, -np.inf
        for c in sorted(set(ytr.tolist())):
            members = [t / np.linalg.norm(t) for t, y in zip(train, ytr) if y == c]
            centre = np.sum(members, axis=0)
            sim = np.dot(q, centre) / (np.linalg.norm(q) * np.linalg.norm(centre))
            if sim > best_sim:
                best, best_sim = c, sim
        expected.append(best)
    np.testing.assert_array_equal(nearest_centroid_classify(train, ytr, test, num_classes=4), expected)


def test_interval_formula_against_scipy():
    v = np.array([0.61, 0.72, 0.55, 0.68, 0.70, 0.64, 0.59])
    ci = mean_confidence_interval(v, 0.95)
    # scipy's t.interval with loc = mean and scale = standard error
    low, high = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    assert ci["low"] == pytest.approx(low) and ci["high"] == pytest.approx(high)
    assert ci["mean"] == pytest.approx(v.mean()) and ci["std"] == pytest.approx(v.std(ddof=1))
    assert math.isnan(mean_confidence_interval([0.5])["half_width"])


def test_interval_coverage_on_skewed_scores():
    # episode scores from a Beta(8, 3) (skewed, mean 8/11): 30 per run, 2000 runs
    rng = np.random.default_rng(0)
    true_mean = 8 / 11
    covered = [(lambda ci: ci["low"] <= true_mean <= ci["high"])(mean_confidence_interval(rng.beta(8, 3, 30)))
               for _ in range(2000)]
    assert 0.93 <= np.mean(covered) <= 0.97


def test_episode_interval_covers_the_exact_expected_one_shot_accuracy():
    # 2 classes x 6 images on a line: every 1-shot support pair is equally likely, so the expected
    # episode accuracy is the average over all 36 pairs, computed here by enumeration.
    xs = np.array([[1.0, 0.1], [1, 0.3], [1, 0.5], [1, 0.9], [1, 1.3], [1, 1.6],
                   [1, 1.0], [1, 1.4], [1, 1.8], [1, 2.5], [1, 3.0], [1, 4.0]])
    ys = np.r_[np.zeros(6, int), np.ones(6, int)]
    angle = np.arctan2(xs[:, 1], xs[:, 0])
    accs = []
    for a, b in itertools.product(range(6), range(6, 12)):
        queries = [i for i in range(12) if i not in (a, b)]
        pred = [0 if abs(angle[i] - angle[a]) < abs(angle[i] - angle[b]) else 1 for i in queries]
        accs.append(np.mean(np.array(pred) == ys[queries]))
    true_mean = np.mean(accs)
    assert 0.6 < true_mean < 0.95
    covered = []
    for seed in range(150):
        r = few_shot_episodes(xs, ys, shots=(1,), n_episodes=30, seed=seed, progress=False)[1]["accuracy"]
        covered.append(r["low"] <= true_mean <= r["high"])
    assert 0.88 <= np.mean(covered) <= 1.0


def test_skipped_classes_and_query_set():
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(12, int), np.ones(12, int), np.full(3, 2), np.full(12, 3)]
    feats = rng.normal(size=(len(labels), 8)) + 3 * np.eye(8)[labels]
    res = few_shot_episodes(feats, labels, shots=(1, 5), n_episodes=5, classes=["a", "b", "c", "d"], progress=False)
    assert res[1]["skipped_classes"] == {} and res[1]["n_classes"] == 4
    assert res[5]["skipped_classes"] == {"c": 3} and res[5]["n_classes"] == 3
    assert res[5]["accuracy"]["mean"] > 0.9
    for clf in ("knn", "logreg"):
        r = few_shot_episodes(feats, labels, shots=(5,), n_episodes=3, classifier=clf, progress=False)[5]
        assert r["accuracy"]["mean"] > 0.8 and r["accuracy"]["n"] == 3
    # separate query set: a class needs only k support images
    q = few_shot_episodes(feats, labels, shots=(3,), n_episodes=4, query_feats=feats, query_labels=labels,
                          progress=False)[3]
    assert q["n_classes"] == 4
    few = few_shot_episodes(feats[:15], labels[:15], shots=(10,), n_episodes=2, progress=False)[10]
    assert "skipped" in few and "accuracy" not in few


def test_episodes_are_reproducible_and_validated():
    rng = np.random.default_rng(2)
    labels = np.arange(40) % 4
    feats = rng.normal(size=(40, 6))
    a = few_shot_episodes(feats, labels, shots=(2,), n_episodes=6, seed=7, progress=False)
    b = few_shot_episodes(torch.as_tensor(feats), labels, shots=(2,), n_episodes=6, seed=7, progress=False)
    assert a[2]["accuracy"] == b[2]["accuracy"]
    with pytest.raises(ConfigError):
        few_shot_episodes(feats, labels, classifier="svm")
    with pytest.raises(ConfigError):
        few_shot_episodes(feats, labels, shots=(0,))


def test_per_class_recall_and_balanced_metrics_over_the_classes_present():
    # tight clusters on e0, e1, e2: every support draw gives the same centroids, so recalls are fixed by the
    # query set: 3 of class a's 4 queries lie on b's cluster -> recall(a) = 1/4, b and c recall 1
    rng = np.random.default_rng(0)
    sup_labels = np.r_[np.zeros(5, int), np.ones(5, int), np.full(2, 2)]
    sup = np.eye(8)[sup_labels] + 0.01 * rng.normal(size=(12, 8))
    q_labels = np.r_[np.zeros(4, int), np.ones(4, int), np.full(4, 2)]
    q_at = np.r_[0, 1, 1, 1, np.ones(4, int), np.full(4, 2)]
    qry = np.eye(8)[q_at] + 0.01 * rng.normal(size=(12, 8))
    res = few_shot_episodes(sup, sup_labels, shots=(1, 3), n_episodes=4, classes=["a", "b", "c"],
                            query_feats=qry, query_labels=q_labels, progress=False)
    recall1 = {n: v["mean"] for n, v in res[1]["per_class_recall"].items()}
    assert recall1 == pytest.approx({"a": 0.25, "b": 1.0, "c": 1.0})
    assert res[1]["per_class_recall"]["a"]["n"] == 4
    assert res[1]["balanced_accuracy"]["mean"] == pytest.approx((0.25 + 1 + 1) / 3)
    # k=3: c (2 support images) is left out; the balanced metrics are over a and b only
    assert res[3]["skipped_classes"] == {"c": 2}
    assert set(res[3]["per_class_recall"]) == {"a", "b"}
    assert res[3]["balanced_accuracy"]["mean"] == pytest.approx((0.25 + 1) / 2)
    # a: 1 of 4 right (F1 = 2/(4+1)); b: 4 right of 4, 7 predicted (F1 = 8/11)
    assert res[3]["macro_f1"]["mean"] == pytest.approx((2 / 5 + 8 / 11) / 2)
    assert res[3]["accuracy"]["mean"] == pytest.approx(5 / 8)
