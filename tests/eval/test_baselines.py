"""Raw-pixel k-NN against an independent computation on a set whose pixel vectors are known exactly."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dinolab.eval.baselines import raw_pixel_embeddings, raw_pixel_knn

# Uniform-colour images: resizing leaves them unchanged, so each image's pixel vector is its colour
# repeated, and the cosine between two images is the cosine between their colours.
MEMORY = {"red": [(250, 10, 10), (200, 40, 30), (230, 60, 0)],
          "green": [(10, 240, 20), (60, 200, 40), (0, 180, 90)],
          "blue": [(20, 30, 250), (40, 90, 220), (90, 20, 200)]}
QUERIES = {"red": [(180, 120, 60), (40, 200, 60)], "green": [(120, 220, 120), (30, 150, 160)],
           "blue": [(110, 90, 240), (160, 30, 200)]}


def _folder(root, spec):
    for cls, colours in spec.items():
        (root / cls).mkdir(parents=True)
        for i, c in enumerate(colours):
            Image.new("RGB", (24, 20), c).save(root / cls / f"{i}.png")
    return str(root)


def _vectors(spec):
    x = np.array([c for cls in sorted(spec) for c in spec[cls]], np.float64) / 255
    y = np.array([i for i, cls in enumerate(sorted(spec)) for _ in spec[cls]])
    return x, y


@pytest.fixture
def folders(tmp_path):
    return _folder(tmp_path / "memory", MEMORY), _folder(tmp_path / "queries", QUERIES)


def test_raw_pixels_are_the_flattened_unit_interval_pixels(folders):
    emb = raw_pixel_embeddings(folders[0], image_size=8)
    x, y = _vectors(MEMORY)
    assert emb.cls.shape == (9, 3 * 8 * 8)
    expected = np.repeat(x, 64, axis=1)  # channel-major, as a (3, 8, 8) image flattens
    np.testing.assert_allclose(emb.cls, expected, atol=1 / 255 + 1e-6)
    assert emb.labels.tolist() == y.tolist()


def test_raw_pixel_knn_matches_sklearn_and_the_weighted_vote(folders):
    from sklearn.neighbors import KNeighborsClassifier

    xm, ym = _vectors(MEMORY)
    xq, yq = _vectors(QUERIES)
    res = raw_pixel_knn(*folders, image_size=8, k=(1, 3))
    nn1 = KNeighborsClassifier(n_neighbors=1, metric="cosine").fit(xm, ym).predict(xq)
    assert res[1] == pytest.approx((nn1 == yq).mean())
    # k = 3, votes exp(cos / 0.07) summed per class, by hand
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    sims = unit(xq) @ unit(xm).T
    top = np.argsort(-sims, axis=1)[:, :3]
    votes = np.zeros((len(xq), 3))
    for q in range(len(xq)):
        for j in top[q]:
            votes[q, ym[j]] += np.exp(sims[q, j] / 0.07)
    assert res[3] == pytest.approx((votes.argmax(1) == yq).mean())
    assert 0 < res[3] < 1  # the green-looking "red" query is misclassified
