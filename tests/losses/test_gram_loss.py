import numpy as np
import pytest
import torch

from dinolab.losses import GramLoss, gram_loss


def np_gram_loss(s, t, remove_neg=False, remove_only_teacher_neg=False):
    """Mean over B*P*P of squared Gram differences, written out entry by entry."""
    s = s / np.linalg.norm(s, axis=-1, keepdims=True)
    t = t / np.linalg.norm(t, axis=-1, keepdims=True)
    b, p = s.shape[:2]
    total = 0.0
    for i in range(b):
        for u in range(p):
            for v in range(p):
                gs, gt = float(s[i, u] @ s[i, v]), float(t[i, u] @ t[i, v])
                if remove_neg:
                    gs, gt = max(gs, 0.0), max(gt, 0.0)
                elif remove_only_teacher_neg:
                    if gs < 0 and gt < 0:
                        gs = 0.0
                    gt = max(gt, 0.0)
                total += (gs - gt) ** 2
    return total / (b * p * p)


def test_identical_inputs_give_zero():
    x = torch.randn(3, 10, 8)
    assert gram_loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-7)
    assert gram_loss(x, 5.0 * x).item() == pytest.approx(0.0, abs=1e-7)  # features are L2-normalised first


def test_hand_computed_two_patch_case():
    student = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # Gram [[1, 0], [0, 1]]
    teacher = torch.tensor([[[2.0, 0.0], [3.0, 0.0]]])  # normalised: both (1, 0); Gram all ones
    assert gram_loss(student, teacher).item() == pytest.approx((0 + 1 + 1 + 0) / 4)
    # student with a negative similarity: Gram [[1, -1], [-1, 1]] vs identity teacher
    neg_student = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])
    identity = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    assert gram_loss(neg_student, identity).item() == pytest.approx(0.5)
    assert gram_loss(neg_student, identity, remove_neg=True).item() == pytest.approx(0.0)
    # teacher-only: teacher -1 -> 0; the student's +0.6 where the teacher is negative is kept
    student_pos = torch.tensor([[[1.0, 0.0], [0.6, 0.8]]])
    assert gram_loss(student_pos, neg_student, remove_only_teacher_neg=True).item() == pytest.approx(2 * 0.36 / 4)
    # ... and where both are negative (-0.6 and -1), both are zeroed
    student_neg = torch.tensor([[[1.0, 0.0], [-0.6, 0.8]]])
    assert gram_loss(student_neg, neg_student).item() == pytest.approx(2 * 0.16 / 4)
    assert gram_loss(student_neg, neg_student, remove_only_teacher_neg=True).item() == pytest.approx(0.0)


@pytest.mark.parametrize("options", [{}, {"remove_neg": True}, {"remove_only_teacher_neg": True}])
def test_random_matches_brute_force(options):
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 5, 6))  # teacher width may differ
    got = GramLoss(**options)(torch.tensor(s, dtype=torch.float32), torch.tensor(t, dtype=torch.float32))
    assert got.item() == pytest.approx(np_gram_loss(s, t, **options), rel=1e-5)


def test_fp32_teacher_detached_and_options_exclusive():
    s = torch.randn(2, 4, 8, requires_grad=True)
    t = torch.randn(2, 4, 8, requires_grad=True)
    loss = gram_loss(s.bfloat16(), t)
    assert loss.dtype == torch.float32
    loss.backward()
    assert s.grad is not None and t.grad is None
    with pytest.raises(ValueError):
        GramLoss(remove_neg=True, remove_only_teacher_neg=True)
    with pytest.raises(ValueError):
        gram_loss(torch.randn(2, 4, 8), torch.randn(2, 5, 8))
