import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

import dinolab
from dinolab.data import ImageDataset
from dinolab.errors import ConfigError, DataError
from dinolab.eval.retrieval import (
    COPY_KINDS,
    augment_copy,
    average_precision,
    copy_detection_descriptor,
    copy_detection_eval,
    gem_pool,
    retrieval_metrics,
)


def test_average_precision_by_hand():
    # positives at ranks 1, 3 and 6: AP = (1/1 + 2/3 + 3/6) / 3
    assert average_precision([1, 0, 1, 0, 0, 1]) == pytest.approx((1 + 2 / 3 + 0.5) / 3)
    # a fourth positive never retrieved counts as precision 0
    assert average_precision([1, 0, 1, 0, 0, 1], n_positives=4) == pytest.approx((1 + 2 / 3 + 0.5) / 4)
    assert math.isnan(average_precision([0, 0]))


def test_metrics_on_a_hand_made_ranking():
    # 1-D features on the unit circle: the ranking of the database is fixed by the angles
    angles = np.array([0.0, 0.1, 0.5, 0.9, 1.4, 2.0])
    db = np.c_[np.cos(angles), np.sin(angles)]
    q = np.array([[1.0, 0.0]])  # ranks the database 0, 1, 2, 3, 4, 5
    m = retrieval_metrics(q, db, positives=[[1, 4]], ks=(1, 2, 5))
    assert m["mAP"] == pytest.approx((1 / 2 + 2 / 5) / 2)
    assert m["recall@k"] == {1: 0.0, 2: 1.0, 5: 1.0}
    assert m["precision@k"][2] == pytest.approx(0.5) and m["precision@k"][5] == pytest.approx(0.4)
    assert m["first_positive"].tolist() == [2]


def test_map_matches_sklearn_and_brute_force_on_random_data():
    rng = np.random.default_rng(0)
    q, db = rng.normal(size=(30, 16)), rng.normal(size=(200, 16))
    ql, dl = rng.integers(0, 6, 30), rng.integers(0, 6, 200)
    m = retrieval_metrics(q, db, ql, dl, ks=(1, 5, 10), chunk_size=7)
    sims = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (db / np.linalg.norm(db, axis=1, keepdims=True)).T
    aps, hits5 = [], []
    for i in range(30):
        aps.append(average_precision_score(dl == ql[i], sims[i]))
        order = np.argsort(-sims[i])
        hits5.append((dl[order[:5]] == ql[i]).any())
    np.testing.assert_allclose(m["ap"], aps, rtol=1e-6)
    assert m["mAP"] == pytest.approx(np.mean(aps))
    assert m["recall@k"][5] == pytest.approx(np.mean(hits5))
    # bool-matrix positives give the same numbers
    m2 = retrieval_metrics(q, db, positives=dl[None, :] == ql[:, None], ks=(1, 5, 10))
    assert m2["mAP"] == pytest.approx(m["mAP"])


def test_queries_without_positives_and_exclude_self():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 8))
    labels = np.r_[np.arange(10), np.arange(10)]  # each item has exactly one other positive
    labels[19] = 99  # ... except the last one
    m = retrieval_metrics(x, x, labels, labels, exclude_self=True, ks=(1,), top=3)
    assert m["n_without_positives"] == 2  # items 9 and 19 lost their partner
    assert 0 not in [m["neighbours"][i, 0] - i for i in range(20)]  # never itself first
    # brute force for query 0: rank the other 19 items
    sims = [np.dot(x[0], x[j]) / np.linalg.norm(x[0]) / np.linalg.norm(x[j]) for j in range(1, 20)]
    rank = 1 + sum(s > sims[9] for s in sims)  # item 10 is query 0's positive
    assert m["ap"][0] == pytest.approx(1 / rank)


def test_gem_pool():
    x = torch.rand(2, 50, 4) + 0.01
    torch.testing.assert_close(gem_pool(x, p=1), x.mean(1))
    torch.testing.assert_close(gem_pool(x, p=200), x.amax(1), rtol=0.03, atol=0)
    p4 = gem_pool(x, p=4)
    assert (p4 >= x.mean(1)).all() and (p4 <= x.amax(1)).all()
    torch.testing.assert_close(p4, (x ** 4).mean(1) ** 0.25)
    assert (gem_pool(-torch.ones(1, 3, 2)) > 0).all()  # negatives are clamped to eps


def tiny_model():
    return dinolab.create_model("vit_tiny", img_size=32, patch_size=8, depth=2).eval()


def test_copy_detection_descriptor_is_cls_and_gem_of_patches():
    model = tiny_model()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        d = copy_detection_descriptor(model, x)
        out = model.forward_features(x)
    assert d.shape == (3, 2 * model.embed_dim)
    torch.testing.assert_close(d[:, :model.embed_dim], out["cls"])
    torch.testing.assert_close(d[:, model.embed_dim:], (out["patches"].clamp(min=1e-6) ** 4).mean(1) ** 0.25)


def test_augmented_copies_are_edits_of_the_image():
    rng = np.random.default_rng(0)
    img = torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8)
    for kind in COPY_KINDS:
        out = augment_copy(img, kind, rng)
        assert out.dtype == torch.uint8 and out.shape[0] == 3
        if kind in ("crop", "strong"):
            assert out.shape[1] * out.shape[2] <= 0.6 * 64 * 80 + 80
        else:
            assert out.shape == img.shape and not torch.equal(out, img)
    with pytest.raises(ConfigError):
        augment_copy(img, "rotate", rng)


def test_copy_detection_eval_end_to_end():
    ds = ImageDataset("builtin:shapes?n=6&size=32")
    distract = ImageDataset("builtin:shapes?n=4&size=32&seed=5")
    res = copy_detection_eval(tiny_model(), ds, n_augmentations=3, kinds=("jpeg", "colour", "crop"),
                              distractors=distract, image_size=32, batch_size=4, device="cpu", precision="fp32",
                              progress=False)
    assert res["n_originals"] == 6 and res["n_queries"] == 18 and res["n_distractors"] == 4
    assert set(res["per_kind"]) == {"jpeg", "colour", "crop"}
    assert all(v["n_queries"] == 6 for v in res["per_kind"].values())
    assert 0 < res["mAP"] <= 1 and res["recall@k"][10] >= res["recall@k"][1]
    # mAP over all queries is the query-weighted mean of the per-kind mAPs
    assert res["mAP"] == pytest.approx(np.mean([v["mAP"] for v in res["per_kind"].values()]))


def test_input_errors():
    with pytest.raises(ConfigError):
        retrieval_metrics(np.ones((2, 3)), np.ones((4, 3)))
    with pytest.raises(DataError, match="width"):
        retrieval_metrics(np.ones((2, 3)), np.ones((4, 2)), [0, 1], [0, 1, 0, 1])
    with pytest.raises(DataError, match="empty"):
        retrieval_metrics(np.ones((0, 3)), np.ones((4, 3)), [], [0, 1, 0, 1])
