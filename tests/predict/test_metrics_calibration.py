"""Worst-class recall, expected calibration error and bootstrap intervals against hand values and loops."""

import numpy as np
import pytest

from dinolab.eval.bootstrap import bootstrap_metrics
from dinolab.eval.metrics import classification_report, expected_calibration_error


def test_worst_class_recall_by_hand():
    r = classification_report([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 0, 2], classes=["a", "b", "c", "d"])
    assert r["worst_class_recall"] == pytest.approx(0.5)  # recalls 2/3, 1/2, 1; "d" absent is not counted


def test_ece_by_hand():
    probs = [[0.95, 0.05, 0.0], [0.95, 0.0, 0.05], [0.45, 0.55, 0.0], [0.4, 0.3, 0.3]]
    y = [0, 1, 1, 2]
    # bin (14/15, 1]: 2 images, accuracy 0.5, confidence 0.95 -> 2/4 * 0.45; bin (8/15, 9/15]: 1 right at 0.55
    # -> 1/4 * 0.45; bin (5/15, 6/15]: 1 wrong at 0.4 -> 1/4 * 0.4
    assert expected_calibration_error(probs, y) == pytest.approx(0.225 + 0.1125 + 0.1)
    assert expected_calibration_error([[1.0, 0.0]] * 3, [0, 0, 0]) == pytest.approx(0.0)


def _ece_loop(probs, y, n_bins=15):
    conf, pred = probs.max(1), probs.argmax(1)
    total = 0.0
    for m in range(1, n_bins + 1):
        inside = [i for i in range(len(y)) if (m - 1) / n_bins < conf[i] <= m / n_bins]
        if inside:
            acc = sum(pred[i] == y[i] for i in inside) / len(inside)
            total += len(inside) / len(y) * abs(acc - sum(conf[i] for i in inside) / len(inside))
    return total


def _random_probs(rng, n, c):
    logits = rng.normal(size=(n, c)) * 2
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


def test_ece_matches_a_loop_over_bins():
    rng = np.random.default_rng(3)
    probs, y = _random_probs(rng, 300, 4), rng.integers(0, 4, 300)
    assert expected_calibration_error(probs, y) == pytest.approx(_ece_loop(probs, y), abs=1e-12)


def test_bootstrap_matches_a_loop_over_resamples():
    rng = np.random.default_rng(0)
    n, c, r = 80, 3, 300
    y = rng.integers(0, c, n)
    probs = _random_probs(rng, n, c)
    probs[np.arange(n)[: n // 2], y[: n // 2]] += 2  # better than chance
    probs /= probs.sum(1, keepdims=True)
    draws = np.random.default_rng(7).integers(0, n, (r, n))
    loop = {k: [] for k in ("accuracy", "balanced_accuracy", "macro_f1", "worst_class_recall", "ece")}
    for idx in draws:
        rep = classification_report(y[idx], probs[idx].argmax(1), c)
        for k in loop:
            loop[k].append(_ece_loop(probs[idx], y[idx]) if k == "ece" else rep[k])
    whole = classification_report(y, probs.argmax(1), c)
    for chunk in (r, 64):  # the resamples come from one stream, whatever the chunk size
        ci = bootstrap_metrics(probs, y, n_resamples=r, seed=7, chunk=chunk, num_classes=c)
        for k, values in loop.items():
            low, high = np.quantile(values, [0.025, 0.975])
            assert ci[k]["low"] == pytest.approx(low, abs=1e-9) and ci[k]["high"] == pytest.approx(high, abs=1e-9), k
            point = _ece_loop(probs, y) if k == "ece" else whole[k]
            assert ci[k]["value"] == pytest.approx(point, abs=1e-12), k
            assert ci[k]["low"] <= ci[k]["high"]


def test_bootstrap_of_hard_predictions_has_no_ece():
    ci = bootstrap_metrics(np.array([0, 1, 1, 0]), [0, 1, 0, 0], n_resamples=50)
    assert "ece" not in ci and ci["accuracy"]["value"] == 0.75
