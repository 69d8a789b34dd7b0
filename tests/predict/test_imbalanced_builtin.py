"""Long-tailed built-in sets: ``builtin:digits?imbalance=R`` and ``builtin:shapes?...&imbalance=R`` (issue 18)."""

import math

import numpy as np
import pytest
from sklearn.datasets import load_digits

from dinolab.data import ImageDataset
from dinolab.data.builtin import load_builtin
from dinolab.errors import DataError


def test_digits_long_tail_has_the_cifar_lt_class_sizes():
    full = np.bincount(load_digits().target)  # 178 182 177 183 181 182 181 179 174 180
    n_test = math.floor(0.2 * full.min())  # 34
    n_max = full.min() - n_test  # 140
    expected = [max(1, math.floor(n_max * 50 ** (-c / 9))) for c in range(10)]
    assert expected == [140, 90, 58, 38, 24, 15, 10, 6, 4, 2]  # by hand: 140 * 50**(-1/9) = 90.6, ...
    train = load_builtin("builtin:digits?imbalance=50&split=train")
    assert np.bincount(train.labels).tolist() == expected
    assert load_builtin("builtin:digits?imbalance=50").paths == train.paths  # train is the default split
    test = load_builtin("builtin:digits?imbalance=50&split=test")
    assert np.bincount(test.labels).tolist() == [34] * 10


def test_shapes_long_tail_and_balanced_test():
    train = load_builtin("builtin:shapes?n=100&size=16&imbalance=10")
    # 20 per class, 4 held out, n_max = 16: 16, 16 * 10**-0.25 = 8.99, 16 * 10**-0.5 = 5.06, 2.85, 1.6
    assert np.bincount(train.labels).tolist() == [16, 8, 5, 2, 1]
    test = load_builtin("builtin:shapes?n=100&size=16&imbalance=10&split=test")
    assert np.bincount(test.labels).tolist() == [4] * 5


@pytest.mark.parametrize("spec", ["builtin:digits?size=8", "builtin:shapes?n=60&size=16"])
def test_train_and_test_are_disjoint_and_keep_their_images(spec):
    full = load_builtin(spec)
    for r in (0, 5):
        train = load_builtin(f"{spec}&imbalance={r}&split=train")
        test = load_builtin(f"{spec}&imbalance={r}&split=test")
        assert not set(train.paths) & set(test.paths)
        index = {p: i for i, p in enumerate(full.paths)}
        for part in (train, test):
            rows = [index[p] for p in part.paths]  # every name is one of the full set, with its image and label
            assert np.array_equal(part.images, full.images[rows]) and np.array_equal(part.labels, full.labels[rows])
    # the balanced test part does not depend on R; without R, train is all the rest
    assert load_builtin(f"{spec}&imbalance=5&split=test").paths == load_builtin(f"{spec}&split=test").paths
    rest = load_builtin(f"{spec}&split=train")
    assert len(rest.labels) + len(load_builtin(f"{spec}&split=test").labels) == len(full.labels)
    assert load_builtin(f"{spec}&split=all").paths == full.paths


def test_choice_depends_on_the_seed_and_is_repeatable():
    a = load_builtin("builtin:digits?size=8&imbalance=20&seed=1").paths
    assert a == load_builtin("builtin:digits?size=8&imbalance=20&seed=1").paths
    assert a != load_builtin("builtin:digits?size=8&imbalance=20&seed=2").paths


def test_bad_options_are_named():
    with pytest.raises(DataError, match="split='val'"):
        load_builtin("builtin:digits?split=val")
    with pytest.raises(DataError, match="imbalance=-2"):
        load_builtin("builtin:digits?imbalance=-2")
    with pytest.raises(DataError, match="must be an integer"):
        load_builtin("builtin:digits?imbalance=ten")


def test_dataset_sees_the_split():
    ds = ImageDataset("builtin:shapes?n=50&size=16&imbalance=4")
    assert len(ds) == len(ds.labels) and ds.classes[0] == "circle" and ds.load(0).shape == (3, 16, 16)
