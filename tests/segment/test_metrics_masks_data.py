"""Segmentation metrics against a hand-computed confusion matrix; mask files; image/mask pairing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dinolab.errors import DataError
from dinolab.segment import confusion_matrix, iou_report, load_segmentation_data, read_mask, write_mask
from dinolab.segment.logreg import patch_fractions


def test_miou_sums_intersections_and_unions_over_images():
    # image A (2x3) and image B (1x4); 255 ignored. Classes 0, 1, 2.
    ta, pa = np.array([[0, 0, 1], [2, 255, 1]]), np.array([[0, 1, 1], [2, 0, 0]])
    tb, pb = np.array([[2, 2, 2, 0]]), np.array([[2, 0, 0, 0]])
    cm = confusion_matrix(ta, pa, 3) + confusion_matrix(tb, pb, 3)
    # by hand: rows true, columns predicted
    # A: (0->0), (0->1), (1->1), (2->2), (1->0) ; B: (2->2), (2->0), (2->0), (0->0)
    assert cm.tolist() == [[2, 1, 0], [1, 1, 0], [2, 0, 2]]
    r = iou_report(cm, ["bg", "a", "b"])
    # IoU = tp / (row + col - tp): bg 2/(3+5-2) = 1/3, a 1/(2+2-1) = 1/3, b 2/(4+2-2) = 1/2
    assert r["per_class"]["bg"]["iou"] == pytest.approx(1 / 3)
    assert r["per_class"]["a"]["iou"] == pytest.approx(1 / 3)
    assert r["per_class"]["b"]["iou"] == pytest.approx(1 / 2)
    assert r["miou"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 2) / 3)
    assert r["pixel_accuracy"] == pytest.approx(5 / 9) and r["pixels"] == 9
    per_image = np.nanmean([iou_report(confusion_matrix(t, p, 3))["miou"] for t, p in ((ta, pa), (tb, pb))])
    assert r["miou"] != pytest.approx(per_image)  # summed, not averaged per image


def test_absent_class_is_nan_and_left_out_of_the_mean():
    r = iou_report(confusion_matrix(np.array([0, 0, 1]), np.array([0, 0, 1]), 3))
    assert np.isnan(r["per_class"]["2"]["iou"]) and r["miou"] == 1.0
    with pytest.raises(DataError, match="holds class 3"):
        confusion_matrix(np.array([3]), np.array([0]), 3)


def test_palette_masks_round_trip_and_rgb_masks_are_refused(tmp_path):
    m = np.array([[0, 1, 2], [255, 7, 0]])
    write_mask(tmp_path / "m.png", m)
    assert Image.open(tmp_path / "m.png").mode == "P"
    assert read_mask(tmp_path / "m.png").tolist() == m.tolist()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="RGB image; masks must be palette or grey"):
        read_mask(tmp_path / "rgb.png")


def test_patch_fractions_match_a_loop():
    rng = np.random.default_rng(0)
    m = torch.from_numpy(rng.choice([0, 1, 2, 255], size=(8, 12)))
    got = patch_fractions(m, 3, 4)
    for c in range(3):
        for i in range(2):
            for j in range(3):
                block = m[4 * i:4 * i + 4, 4 * j:4 * j + 4]
                assert got[c, i, j] == pytest.approx(float((block == c).sum()) / 16)


def test_pairs_by_stem_and_mismatches_named(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "img" / f"{name}.jpg")
    for name in ("a", "b", "zz"):
        write_mask(tmp_path / "msk" / f"{name}.png", np.zeros((4, 4), int))
    with pytest.raises(DataError, match=r"1 image\(s\) without a mask in .*: c; 1 mask\(s\) without an image .*: zz"):
        load_segmentation_data(tmp_path / "img", tmp_path / "msk")
    (tmp_path / "msk" / "zz.png").rename(tmp_path / "msk" / "c.png")
    d = load_segmentation_data(tmp_path / "img", tmp_path / "msk")
    assert d.names == ["a", "b", "c"] and d.masks[2].endswith("c.png")


def test_builtin_masks_are_background_zero_and_one_plus_label():
    d = load_segmentation_data("builtin:shapes?n=6&size=32")
    from dinolab.data.builtin import load_builtin

    s = load_builtin("builtin:shapes?n=6&size=32")
    for i in range(6):
        _, mask = d.load(i)
        assert set(np.unique(mask)) == {0, int(s.labels[i]) + 1}
        assert (mask > 0).tolist() == s.masks[i].tolist()
