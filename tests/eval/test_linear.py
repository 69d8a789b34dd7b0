import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from dinolab.errors import ConfigError, DataError
from dinolab.eval.linear import DINOV2_LRS, linear_probe, logistic_regression_probe


@pytest.fixture(autouse=True)
def one_thread():
    # small problems: BLAS threads only fight over a shared machine's cores (100x slower L-BFGS seen)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(n)


def blobs(seed=0, n=600, d=32, c=6, noise=2.2):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, d)) * 1.5
    y = rng.integers(0, c, n)
    x = centres[y] + noise * rng.normal(size=(n, d))
    return train_test_split(x.astype(np.float32), y, test_size=0.3, random_state=seed)


def sklearn_reference(xtr, ytr, xva, yva):
    # the best val accuracy of a plain sklearn logistic regression over a C grid
    return max((LogisticRegression(C=C, max_iter=2000).fit(xtr, ytr).predict(xva) == yva).mean()
               for C in 10.0 ** np.arange(-4, 4))


def test_linear_probe_matches_sklearn_on_synthetic_features():
    xtr, xva, ytr, yva = blobs()
    ref = sklearn_reference(xtr, ytr, xva, yva)
    assert 0.6 < ref < 0.98  # not trivially separable
    res = linear_probe(xtr, ytr, xva, yva, epochs=60, progress=False)
    assert res.top1 >= ref - 0.03
    assert res.selection == "val" and "validation set" in res.selection_note
    assert set(res.grid) == set(DINOV2_LRS) and res.best in DINOV2_LRS
    assert res.grid[res.best] == pytest.approx(res.top1)
    # the returned classifier reproduces the predictions on raw features
    pred = res.classifier(torch.as_tensor(xva)).argmax(1).numpy()
    np.testing.assert_array_equal(pred, res.predictions)


def test_linear_probe_on_digits_pixels_reaches_logistic_regression():
    x, y = load_digits(return_X_y=True)
    xtr, xva, ytr, yva = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    ref = sklearn_reference(xtr, ytr, xva, yva)
    res = linear_probe(xtr, ytr, xva, yva, epochs=40, standardize=True, progress=False)
    assert res.top1 >= ref - 0.03, (res.top1, ref)
    assert res.top5 >= res.top1
    pred = res.classifier(torch.as_tensor(xva, dtype=torch.float32)).argmax(1).numpy()
    np.testing.assert_array_equal(pred, res.predictions)  # standardisation folded into the layer
    lr = logistic_regression_probe(xtr, ytr, xva, yva, Cs=[0.01, 0.1, 1.0])
    assert lr.top1 >= ref - 0.03 and lr.selection == "holdout" and lr.best in (0.01, 0.1, 1.0)
    pred = lr.classifier(torch.as_tensor(xva, dtype=torch.float32)).argmax(1).numpy()
    np.testing.assert_array_equal(pred, lr.predictions)


def test_heads_train_independently():
    # a head's result must not depend on which other learning rates are trained with it
    xtr, xva, ytr, yva = blobs(seed=1, n=200)
    alone = linear_probe(xtr, ytr, xva, yva, lrs=[0.01], epochs=5, progress=False)
    grid = linear_probe(xtr, ytr, xva, yva, lrs=[0.01, 1e-5], epochs=5, progress=False)
    assert grid.grid[0.01] == alone.grid[0.01]


def test_logreg_selection_modes_and_binary_case():
    xtr, xva, ytr, yva = blobs(seed=2, n=300, c=2)
    for sel in ("holdout", "cv", "val"):
        res = logistic_regression_probe(xtr, ytr, xva, yva, Cs=[1e-3, 1.0], selection=sel)
        ref = LogisticRegression(C=res.best, max_iter=1000).fit(
            (xtr - xtr.mean(0)) / xtr.std(0, ddof=1), ytr).predict((xva - xtr.mean(0)) / xtr.std(0, ddof=1))
        assert np.mean(ref == res.predictions) > 0.97
        assert math.isnan(res.top5)  # two classes
        pred = res.classifier(torch.as_tensor(xva)).argmax(1).numpy()
        np.testing.assert_array_equal(pred, res.predictions)


def test_holdout_selection_never_looks_at_val():
    xtr, xva, ytr, yva = blobs(seed=3, n=300)
    a = linear_probe(xtr, ytr, xva, yva, lrs=[1e-4, 0.05], epochs=5, selection="holdout", progress=False)
    b = linear_probe(xtr, ytr, xva, np.random.default_rng(0).permutation(yva), lrs=[1e-4, 0.05], epochs=5,
                     selection="holdout", progress=False)
    assert a.best == b.best and a.grid == b.grid


def test_bad_inputs():
    xtr, xva, ytr, yva = blobs(n=100)
    with pytest.raises(DataError, match="single class"):
        linear_probe(xtr, np.zeros_like(ytr), xva, yva, progress=False)
    with pytest.raises(DataError, match="width"):
        linear_probe(xtr, ytr, xva[:, :3], yva, progress=False)
    with pytest.raises(ConfigError):
        linear_probe(xtr, ytr, xva, yva, selection="test", progress=False)
    with pytest.raises(ConfigError):
        logistic_regression_probe(xtr, ytr, xva, yva, Cs=[-1.0])


def test_holdout_is_stratified_on_long_tailed_labels():
    from dinolab.eval.linear import _holdout_split

    sizes = [140, 90, 58, 38, 24, 15, 10, 6, 4, 2]  # builtin:digits?imbalance=50's training split
    y = torch.tensor(np.repeat(np.arange(10), sizes))
    fit, held = _holdout_split(y, 0.1, seed=0)
    held_counts = np.bincount(y[held].numpy(), minlength=10)
    # round(0.1 * n), at least one: 14, 9, 6, 4, 2, 2 (1.5 rounds to 2), 1, 1 (0.6), 1 (0.4 -> 0, raised), 1
    assert held_counts.tolist() == [14, 9, 6, 4, 2, 2, 1, 1, 1, 1]
    assert np.bincount(y[fit].numpy(), minlength=10).min() >= 1 and len(fit) + len(held) == len(y)
    assert not set(fit.tolist()) & set(held.tolist())
