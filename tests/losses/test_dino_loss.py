import numpy as np
import pytest
import torch

from dinolab.errors import ConfigError
from dinolab.losses import DINOLoss, dino_cross_entropy, sinkhorn_knopp


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_pair_ce(student, teacher_probs, student_temp=0.1):
    """Batch mean of -sum_k t log softmax(s / temp), one sample at a time."""
    total = 0.0
    for s_row, t_row in zip(student, teacher_probs):
        log_p = np.log(np_softmax(s_row / student_temp))
        total += -sum(t_row[k] * log_p[k] for k in range(len(t_row)))
    return total / len(student)


def np_dino_loss(student_views, teacher_logits_views, center, teacher_temp, ignore_diagonal=True):
    targets = [np_softmax((t - center) / teacher_temp) for t in teacher_logits_views]
    terms = []
    for g, t in enumerate(targets):
        for v, s in enumerate(student_views):
            if ignore_diagonal and v == g:
                continue
            terms.append(np_pair_ce(s, t))
    return sum(terms) / len(terms), len(terms)


def make_views(n_student=5, batch=3, k=7, seed=0):
    rng = np.random.default_rng(seed)
    student = [rng.normal(size=(batch, k)) for _ in range(n_student)]
    teacher = [rng.normal(size=(batch, k)) for _ in range(2)]
    return student, teacher


def as_t(a):
    return torch.tensor(np.asarray(a), dtype=torch.float32)


def test_dino_cross_entropy_matches_formula():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(4, 6)), np_softmax(rng.normal(size=(4, 6)))
    assert dino_cross_entropy(as_t(s), as_t(t), 0.1).item() == pytest.approx(np_pair_ce(s, t), rel=1e-5)


def test_pair_average_with_local_crops_all_input_layouts():
    student, teacher = make_views(n_student=5)
    expected, n_terms = np_dino_loss(student, teacher, np.zeros((1, 7)), 0.04)
    assert n_terms == 8  # 2 * (5 - 1)
    layouts = [
        ([as_t(s) for s in student], [as_t(t) for t in teacher]),
        (as_t(np.concatenate(student)), as_t(np.concatenate(teacher))),  # view-major (V*B, K)
        (as_t(np.stack(student)), as_t(np.stack(teacher))),  # (V, B, K)
    ]
    for s, t in layouts:
        loss = DINOLoss(7)(s, t, teacher_temp=0.04)
        assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_eighteen_pairs_for_two_global_eight_local():
    student, teacher = make_views(n_student=10, batch=2, k=5, seed=3)
    expected, n_terms = np_dino_loss(student, teacher, np.zeros((1, 5)), 0.07)
    assert n_terms == 18
    assert DINOLoss(5)([as_t(s) for s in student], [as_t(t) for t in teacher], 0.07).item() == \
        pytest.approx(expected, rel=1e-5)


def test_global_views_only_and_keeping_diagonal():
    student, teacher = make_views(n_student=2)
    expected, n_terms = np_dino_loss(student, teacher, np.zeros((1, 7)), 0.04)
    assert n_terms == 2  # teacher view 1 vs student view 2 and teacher 2 vs student 1
    s, t = [as_t(x) for x in student], [as_t(x) for x in teacher]
    assert DINOLoss(7)(s, t, 0.04).item() == pytest.approx(expected, rel=1e-5)
    expected_all, n_all = np_dino_loss(student, teacher, np.zeros((1, 7)), 0.04, ignore_diagonal=False)
    assert n_all == 4
    assert DINOLoss(7)(s, t, 0.04, ignore_diagonal=False).item() == pytest.approx(expected_all, rel=1e-5)


def test_center_ema_numbers_and_used_from_next_step():
    loss_fn = DINOLoss(2)
    teacher1 = [torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]])]  # B=1, two global views
    student = [torch.tensor([[0.5, -0.5]]), torch.tensor([[0.1, 0.2]]), torch.tensor([[-1.0, 1.0]])]
    loss_fn(student, teacher1, teacher_temp=0.5)
    # batch mean of raw logits = [2, 3]; center = 0.9 * 0 + 0.1 * [2, 3]
    torch.testing.assert_close(loss_fn.center, torch.tensor([[0.2, 0.3]]))

    teacher2 = [torch.tensor([[10.0, 0.0]]), torch.tensor([[10.0, 0.0]])]
    np_student = [s.numpy().astype(np.float64) for s in student]
    expected, _ = np_dino_loss(np_student, [t.numpy() for t in teacher2], np.array([[0.2, 0.3]]), 0.5)
    loss2 = loss_fn(student, teacher2, teacher_temp=0.5)
    assert loss2.item() == pytest.approx(expected, rel=1e-5)  # step 2 used the center of step 1
    torch.testing.assert_close(loss_fn.center, torch.tensor([[0.9 * 0.2 + 0.1 * 10.0, 0.9 * 0.3 + 0.1 * 0.0]]))


def test_teacher_targets_does_not_update_center():
    loss_fn = DINOLoss(4)
    loss_fn.update_center(torch.ones(6, 4))
    torch.testing.assert_close(loss_fn.center, torch.full((1, 4), 0.1))
    before = loss_fn.center.clone()
    probs = loss_fn.teacher_targets(torch.randn(6, 4), 0.04)
    assert probs.shape == (2, 3, 4)
    torch.testing.assert_close(loss_fn.center, before)
    assert "center" in loss_fn.state_dict()


def test_sinkhorn_centering_uses_one_problem_over_both_views_and_no_center():
    student, teacher = make_views(n_student=4)
    loss_fn = DINOLoss(7, centering="sinkhorn_knopp")
    t = as_t(np.concatenate(teacher))
    targets = loss_fn.teacher_targets(t, 0.05)
    torch.testing.assert_close(targets.flatten(0, 1), sinkhorn_knopp(t, 0.05))
    loss = loss_fn([as_t(s) for s in student], t, 0.05)
    total, n = 0.0, 0
    for g in range(2):
        for v in range(4):
            if v != g:
                total += np_pair_ce(student[v], targets[g].double().numpy())
                n += 1
    assert loss.item() == pytest.approx(total / n, rel=1e-5)
    assert torch.count_nonzero(loss_fn.center) == 0


def test_gradient_reaches_student_only_and_low_precision_input():
    student = torch.randn(3 * 2, 5, requires_grad=True)
    teacher = torch.randn(2 * 2, 5, requires_grad=True)
    loss = DINOLoss(5)(student.bfloat16(), teacher.bfloat16(), 0.04)
    assert loss.dtype == torch.float32
    loss.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    assert teacher.grad is None


def test_bad_centering_name_is_a_config_error():
    with pytest.raises(ConfigError, match="sinkhorn_knopp"):
        DINOLoss(8, centering="centering")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_pair_average_stays_float32_under_autocast(dtype):
    # Near-uniform targets (the start of training): a low-precision pair reduction rounds the loss
    # to ~3 digits and the target deviations away; the loss must match the float64 formula.
    student, teacher = make_views(n_student=4, batch=8, k=512, seed=3)
    student = [0.05 * s for s in student]
    loss_fn = DINOLoss(512)
    expected, _ = np_dino_loss(student, [0.01 * t for t in teacher], np.zeros(512), teacher_temp=0.04)
    with torch.autocast("cpu", dtype=dtype):
        loss = loss_fn.cross_entropy([as_t(s) for s in student],
                                     loss_fn.teacher_targets(torch.cat([as_t(0.01 * t) for t in teacher]), 0.04))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, rel=1e-6)
