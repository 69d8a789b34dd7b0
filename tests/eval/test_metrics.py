import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_score, recall_score

from dinolab.errors import DataError
from dinolab.eval.metrics import classification_report, topk_hits


def test_hand_computed_imbalanced_case():
    # 6 cats, 2 dogs; the classifier says "cat" for everything but one dog
    y_true = [0, 0, 0, 0, 0, 0, 1, 1]
    y_pred = [0, 0, 0, 0, 0, 0, 0, 1]
    r = classification_report(y_true, y_pred, ["cat", "dog"])
    assert r["accuracy"] == pytest.approx(7 / 8)
    assert r["balanced_accuracy"] == pytest.approx((1 + 0.5) / 2)
    # cat: P = 6/7, R = 1 -> F1 = 12/13; dog: P = 1, R = 1/2 -> F1 = 2/3
    assert r["macro_f1"] == pytest.approx((12 / 13 + 2 / 3) / 2)
    assert r["per_class"]["dog"] == {"recall": 0.5, "precision": 1.0, "f1": pytest.approx(2 / 3), "support": 2}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn_including_absent_and_never_predicted_classes(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.choice([0, 1, 2, 4], size=60, p=[0.6, 0.25, 0.1, 0.05])  # class 3 absent from y_true
    y_pred = np.where(rng.random(60) < 0.7, y_true, rng.integers(0, 5, 60))
    r = classification_report(y_true, y_pred, 5)
    assert r["accuracy"] == pytest.approx(np.mean(y_true == y_pred))
    assert r["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert r["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    rec = recall_score(y_true, y_pred, average=None, labels=[0, 1, 2, 4], zero_division=0)
    for c, v in zip(["0", "1", "2", "4"], rec):
        assert r["per_class"][c]["recall"] == pytest.approx(v)
    assert math.isnan(r["per_class"]["3"]["recall"]) and r["per_class"]["3"]["support"] == 0
    prec = precision_score(y_true, y_pred, average=None, labels=[0, 1, 2, 4], zero_division=0)
    for c, v in zip(["0", "1", "2", "4"], prec):
        assert r["per_class"][c]["precision"] == pytest.approx(v)
    assert sum(v["support"] for v in r["per_class"].values()) == 60


def test_topk_hits():
    scores = np.array([[0.1, 0.5, 0.3, 0.2], [0.9, 0.0, 0.05, 0.04]])
    assert topk_hits(scores, [2, 3], 2).tolist() == [True, False]
    assert topk_hits(scores, [2, 3], 4).tolist() == [True, True]


def test_errors():
    with pytest.raises(DataError, match="empty"):
        classification_report([], [])
    with pytest.raises(DataError, match="differ in length"):
        classification_report([0, 1], [0])
    with pytest.raises(DataError, match="out of range"):
        classification_report([0, 3], [0, 1], ["a", "b"])
