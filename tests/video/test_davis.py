"""J and F against hand-made masks whose boundaries and scores are worked out by hand below."""

import numpy as np
import pytest

from dinolab.eval.davis import VideoScores, boundary, disk, f_measure, jaccard, tolerance


def _cols(n_rows, n_cols, limits):
    """Mask with row i True on columns < limits[i]."""
    assert len(limits) == n_rows
    return np.arange(n_cols)[None, :] < np.asarray(limits)[:, None]


def test_jaccard_hand_made_and_void():
    a = np.zeros((4, 4), bool)
    a[:2] = True  # 8 pixels
    b = np.zeros((4, 4), bool)
    b[:, :1] = True  # 4 pixels, 2 shared
    assert jaccard(a, b) == pytest.approx(2 / 10)
    assert jaccard(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0
    void = np.zeros((4, 4), bool)
    void[2:] = True  # leaves a's 8 pixels and b's 2 upper ones: intersection 2, union 8
    assert jaccard(a, b, void) == pytest.approx(2 / 8)


def test_boundary_of_a_square_marks_both_sides_of_the_edge():
    sq = np.zeros((10, 10), bool)
    sq[2:6, 2:6] = True
    expected = np.zeros((10, 10), bool)
    expected[2:6, 5] = expected[5, 2:6] = True  # inside: last column and row of the square
    expected[2:6, 1] = expected[1, 2:6] = True  # outside: pixels whose right / lower neighbour is inside
    expected[1, 1] = True  # its lower-right neighbour is the square's corner
    assert (boundary(sq) == expected).all()
    assert boundary(sq).sum() == 16


def test_boundary_of_a_vertical_edge_is_one_column():
    m = _cols(6, 8, [4] * 6)
    expected = np.zeros((6, 8), bool)
    expected[:, 3] = True
    assert (boundary(m) == expected).all()


def test_disk_and_tolerance():
    assert disk(1).astype(int).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert disk(2).sum() == 13  # offsets with di² + dj² <= 4
    assert tolerance((480, 854)) == 8  # ceil(0.008 · 979.6)
    assert tolerance((100, 200)) == 2  # ceil(0.008 · 223.6)
    assert tolerance((100, 200), 3) == 3  # >= 1: pixels


def test_f_measure_on_shifted_edges():
    gt = _cols(6, 8, [4] * 6)  # boundary: column 3
    one = _cols(6, 8, [5] * 6)  # boundary: column 4
    assert f_measure(gt, gt, bound_th=0)[0] == 1.0
    assert f_measure(one, gt, bound_th=0) == (0.0, 0.0, 0.0)
    assert f_measure(one, gt, bound_th=1) == (1.0, 1.0, 1.0)  # one column apart, within 1 pixel
    two = _cols(6, 8, [6] * 6)
    assert f_measure(two, gt, bound_th=1)[0] == 0.0
    assert f_measure(two, gt, bound_th=2)[0] == 1.0


def test_f_measure_on_a_step():
    gt = _cols(6, 8, [4] * 6)
    step = _cols(6, 8, [4, 4, 4, 6, 6, 6])
    # step boundary: (0..2, 3), (2, 4), (2, 5), (3..5, 5): 8 pixels; the truth's: column 3, 6 pixels
    f, p, r = f_measure(step, gt, bound_th=0)
    assert (p, r) == pytest.approx((3 / 8, 3 / 6))
    assert f == pytest.approx(3 / 7)
    # within 1 pixel (4-neighbours): (0..2, 3) and (2, 4) match; the truth's rows 0..3 are reached
    f, p, r = f_measure(step, gt, bound_th=1)
    assert (p, r) == pytest.approx((4 / 8, 4 / 6))
    assert f == pytest.approx(4 / 7)


def test_f_measure_empty_cases():
    empty = np.zeros((6, 8), bool)
    gt = _cols(6, 8, [4] * 6)
    assert f_measure(empty, empty) == (1.0, 1.0, 1.0)
    assert f_measure(empty, gt) == (0.0, 1.0, 0.0)  # nothing predicted: precision 1, recall 0
    assert f_measure(gt, empty) == (0.0, 0.0, 1.0)


def test_video_scores_average_frames_then_objects():
    gt = np.zeros((4, 4), np.uint8)
    gt[:2, :2] = 1  # 4 pixels
    gt[2:, 2:] = 2
    pred = gt.copy()
    pred[0, 0] = 0  # object 1: J = 3/4 on this frame
    scores = VideoScores([1, 2])
    scores.add(pred, gt)
    scores.add(gt, gt)  # perfect frame
    s = scores.summary()
    assert s["objects"][1]["J"] == pytest.approx((3 / 4 + 1) / 2)
    assert s["objects"][2]["J"] == 1.0 and s["objects"][2]["F"] == 1.0
    assert s["J"] == pytest.approx(((3 / 4 + 1) / 2 + 1) / 2)
    assert s["J&F"] == pytest.approx((s["J"] + s["F"]) / 2)
    assert s["objects"][1]["frames"] == 2
