import math

import numpy as np
import pytest
import torch

from dinolab.losses import collapse_stats, sinkhorn_knopp, softmax_center


def reference_sinkhorn_loop(logits: np.ndarray, temp: float, n_iterations: int = 3) -> np.ndarray:
    """DINOv2's sinkhorn_knopp_teacher written out with loops, float64, no max-subtraction."""
    b, k = logits.shape
    q = np.exp(logits.T / temp)  # K x B
    q = q / q.sum()
    for _ in range(n_iterations):
        for p in range(k):
            q[p, :] = q[p, :] / q[p, :].sum() / k
        for s in range(b):
            q[:, s] = q[:, s] / q[:, s].sum() / b
    return (q * b).T


def test_softmax_center_matches_formula():
    rng = np.random.default_rng(0)
    t, c = rng.normal(size=(3, 5)), rng.normal(size=(1, 5))
    z = (t - c) / 0.04
    expected = np.exp(z - z.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    got = softmax_center(torch.tensor(t, dtype=torch.float32), torch.tensor(c, dtype=torch.float32), 0.04)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("temp", [0.5, 0.1])
def test_sinkhorn_equals_reference_loop(temp):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(12, 5))
    expected = reference_sinkhorn_loop(logits, temp)
    got = sinkhorn_knopp(torch.tensor(logits, dtype=torch.float32), temp)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_sinkhorn_rows_sum_to_one_and_prototypes_balanced():
    torch.manual_seed(0)
    b, k = 64, 8
    logits = torch.randn(b, k)
    q = sinkhorn_knopp(logits, 1.0)
    torch.testing.assert_close(q.sum(1), torch.ones(b))
    # 3 iterations end on the per-sample step, so prototype marginals are only approximately B/K
    np.testing.assert_allclose(q.sum(0).numpy(), np.full(k, b / k), rtol=0.05)
    q_converged = sinkhorn_knopp(logits, 1.0, n_iterations=200)
    np.testing.assert_allclose(q_converged.sum(0).numpy(), np.full(k, b / k), rtol=1e-4)
    # and it really rebalances: plain softmax of the same logits is far from uniform marginals
    skewed = logits + torch.tensor([4.0] + [0.0] * (k - 1))
    assert torch.softmax(skewed, 1).sum(0)[0] > 0.5 * b
    assert sinkhorn_knopp(skewed, 1.0).sum(0)[0] < 1.5 * b / k


def test_sinkhorn_stable_where_reference_overflows():
    torch.manual_seed(0)
    logits = torch.randn(10, 6) * 50  # exp(50 / 0.04) overflows float32 and float64
    logits[3] -= 1e4  # one sample far below every prototype's maximum
    with np.errstate(over="ignore", invalid="ignore"):
        assert not np.isfinite(reference_sinkhorn_loop(logits.double().numpy(), 0.04)).all()
    q = sinkhorn_knopp(logits, 0.04)
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q.sum(1), torch.ones(10))


@pytest.mark.parametrize("spread", [70.0, 120.0])  # scaled-logit range below / above the in-place path's limit (80)
def test_sinkhorn_equals_reference_on_both_sides_of_the_exp_domain_limit(spread):
    rng = np.random.default_rng(2)
    logits = rng.uniform(size=(16, 6))
    logits = (logits - logits.min()) / (logits.max() - logits.min()) * spread  # range exactly `spread` at T=1
    expected = reference_sinkhorn_loop(logits, 1.0)  # float64: exp(120) does not overflow
    t = torch.tensor(logits, dtype=torch.float32)
    got = sinkhorn_knopp(t, 1.0)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-3, atol=1e-6)
    np.testing.assert_array_equal(t.numpy(), logits.astype(np.float32))  # the caller's logits are untouched


def test_sinkhorn_ignores_per_prototype_shifts_and_sample_count():
    # the reference's first prototype normalisation cancels any per-prototype factor exp(c_k / temp)
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(9, 4))
    shift = rng.normal(size=(1, 4)) * 3
    np.testing.assert_allclose(reference_sinkhorn_loop(logits + shift, 0.2), reference_sinkhorn_loop(logits, 0.2),
                               rtol=1e-9)
    t = torch.tensor(logits, dtype=torch.float32)
    torch.testing.assert_close(sinkhorn_knopp(t + torch.tensor(shift, dtype=torch.float32), 0.2),
                               sinkhorn_knopp(t, 0.2))
    torch.testing.assert_close(sinkhorn_knopp(t, 0.2, n_samples=1000), sinkhorn_knopp(t, 0.2))


def test_sinkhorn_bf16_input_gives_float32():
    logits = torch.randn(6, 5).bfloat16()
    q = sinkhorn_knopp(logits, 0.1)
    assert q.dtype == torch.float32
    expected = reference_sinkhorn_loop(logits.double().numpy(), 0.1)
    np.testing.assert_allclose(q.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_collapse_stats_uniform_and_one_hot():
    k = 16
    uniform = collapse_stats(torch.full((5, k), 1.0 / k))
    assert uniform["entropy"].item() == pytest.approx(math.log(k), abs=1e-5)
    assert uniform["kl_uniform"].item() == pytest.approx(0.0, abs=1e-6)
    same_one_hot = torch.zeros(5, k)
    same_one_hot[:, 3] = 1.0
    collapsed = collapse_stats(same_one_hot)
    assert collapsed["entropy"].item() == pytest.approx(0.0, abs=1e-7)
    assert collapsed["kl_uniform"].item() == pytest.approx(math.log(k), abs=1e-5)
    spread = collapse_stats(torch.eye(k))  # sharp rows, every prototype used once: the healthy case
    assert spread["entropy"].item() == pytest.approx(0.0, abs=1e-7)
    assert spread["kl_uniform"].item() == pytest.approx(0.0, abs=1e-6)
