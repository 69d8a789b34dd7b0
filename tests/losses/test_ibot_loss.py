import numpy as np
import pytest
import torch

from dinolab.losses import (
    ibot_patch_loss,
    ibot_patch_loss_gathered,
    iBOTPatchLoss,
    masked_token_weights,
    sinkhorn_knopp,
)


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_ibot(student, teacher_probs, masks, student_temp=0.1):
    """Sum over images of the mean token cross-entropy over masked tokens, divided by all images."""
    per_image = []
    for b in range(len(student)):
        tokens = [n for n in range(student.shape[1]) if masks[b, n]]
        ces = [-(teacher_probs[b, n] * np.log(np_softmax(student[b, n] / student_temp))).sum() for n in tokens]
        per_image.append(sum(ces) / len(ces) if ces else 0.0)
    return sum(per_image) / len(per_image)


def example(seed=0, b=4, n=5, k=6):
    rng = np.random.default_rng(seed)
    student = rng.normal(size=(b, n, k))
    teacher_logits = rng.normal(size=(b, n, k))
    masks = np.zeros((b, n), dtype=bool)
    masks[0, [0, 3]] = True
    masks[2, [1, 2, 4]] = True  # images 1 and 3 have no masked token
    return student, teacher_logits, masks


def t32(a):
    return torch.tensor(a, dtype=torch.float32)


def test_dense_loss_with_unmasked_images():
    student, teacher_logits, masks = example()
    probs = np_softmax(teacher_logits / 0.07)
    expected = np_ibot(student, probs, masks)
    got = ibot_patch_loss(t32(student), t32(probs), torch.tensor(masks), 0.1)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_masked_token_weights_by_hand():
    masks = torch.tensor([[True, False, True], [False, False, False], [False, True, False]])
    torch.testing.assert_close(masked_token_weights(masks), torch.tensor([0.5, 0.5, 1.0]))


def test_gathered_form_equals_dense():
    student, teacher_logits, masks = example(seed=1)
    probs = np_softmax(teacher_logits / 0.07)
    m = torch.tensor(masks)
    gathered = ibot_patch_loss_gathered(t32(student)[m], t32(probs)[m], masked_token_weights(m), len(masks), 0.1)
    assert gathered.item() == pytest.approx(np_ibot(student, probs, masks), rel=1e-5)


def test_module_softmax_centering_and_center_update():
    student, teacher_logits, masks = example(seed=2)
    loss_fn = iBOTPatchLoss(6)
    loss = loss_fn(t32(student), t32(teacher_logits), torch.tensor(masks), teacher_temp=0.07)
    assert loss.item() == pytest.approx(np_ibot(student, np_softmax(teacher_logits / 0.07), masks), rel=1e-5)
    expected_center = 0.1 * teacher_logits[masks].mean(0)  # mean raw logit of the 5 masked tokens
    assert loss_fn.center.shape == (1, 1, 6)
    np.testing.assert_allclose(loss_fn.center.numpy().ravel(), expected_center, rtol=1e-5)
    # next step: targets are centered with that center
    loss2 = loss_fn.forward_masked(t32(student)[masks], t32(teacher_logits)[masks], torch.tensor(masks), 0.07)
    expected2 = np_ibot(student, np_softmax((teacher_logits - expected_center) / 0.07), masks)
    assert loss2.item() == pytest.approx(expected2, rel=1e-5)


def test_center_update_from_dense_tokens_is_mean_of_image_means():
    loss_fn = iBOTPatchLoss(2)
    tokens = torch.tensor([[[1.0, 0.0], [3.0, 2.0]], [[5.0, 5.0], [5.0, 5.0]]])  # image means [2,1], [5,5]
    loss_fn.update_center(tokens)
    torch.testing.assert_close(loss_fn.center, torch.tensor([[[0.35, 0.3]]]))


def test_no_masked_token_anywhere():
    loss_fn = iBOTPatchLoss(6)
    loss_fn.center.fill_(1.0)
    s = torch.randn(3, 4, 6, requires_grad=True)
    loss = loss_fn(s, torch.randn(3, 4, 6), torch.zeros(3, 4, dtype=torch.bool), 0.07)
    assert loss.item() == 0.0
    loss.backward()
    torch.testing.assert_close(loss_fn.center, torch.ones(1, 1, 6))  # nothing to average: unchanged


def test_module_sinkhorn_centering_on_masked_tokens():
    student, teacher_logits, masks = example(seed=3)
    m = torch.tensor(masks)
    loss_fn = iBOTPatchLoss(6, centering="sinkhorn_knopp")
    loss = loss_fn.forward_masked(t32(student)[m], t32(teacher_logits)[m], m, 0.07)
    targets = sinkhorn_knopp(t32(teacher_logits)[m], 0.07)
    torch.testing.assert_close(targets.sum(1), torch.ones(int(m.sum())))
    dense_targets = np.zeros_like(teacher_logits)
    dense_targets[masks] = targets.double().numpy()
    assert loss.item() == pytest.approx(np_ibot(student, dense_targets, masks), rel=1e-5)
    assert torch.count_nonzero(loss_fn.center) == 0
