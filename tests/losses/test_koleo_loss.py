import math

import numpy as np
import pytest
import torch

from dinolab.losses import KoLeoLoss, koleo_loss


def np_koleo(x):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    total = 0.0
    for i in range(len(x)):
        nearest = min(np.linalg.norm(x[i] - x[j]) for j in range(len(x)) if j != i)
        total += math.log(nearest)
    return -total / len(x)


def test_matches_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 4))
    assert koleo_loss(torch.tensor(x, dtype=torch.float32)).item() == pytest.approx(np_koleo(x), rel=1e-5)
    # scale of the rows does not matter (L2-normalised)
    scaled = torch.tensor(x * rng.uniform(0.1, 10, size=(7, 1)), dtype=torch.float32)
    assert KoLeoLoss()(scaled).item() == pytest.approx(np_koleo(x), rel=1e-5)


def test_exact_duplicates_finite_loss_and_grad_fp32():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 8))
    x[1] = x[0]
    xt = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    loss = koleo_loss(xt)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(xt.grad).all()
    # rows 0 and 1 sit at the clamped distance 1e-8; the others at their true nearest neighbour
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    logs = [math.log(1e-8)] * 2
    for i in range(2, 5):
        logs.append(math.log(min(np.linalg.norm(xn[i] - xn[j]) for j in range(5) if j != i)))
    assert loss.item() == pytest.approx(-sum(logs) / 5, rel=1e-5)


def test_near_duplicates_finite_grad():
    x = torch.randn(4, 16)
    x[1] = x[0] + 1e-6 * torch.randn(16)
    x.requires_grad_(True)
    koleo_loss(x).backward()
    assert torch.isfinite(x.grad).all()


def test_bf16_input_and_autocast_compute_in_fp32():
    x = torch.randn(6, 32)
    x[3] = x[2]
    xb = x.bfloat16().requires_grad_(True)
    loss = koleo_loss(xb)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(xb.grad.float()).all()
    expected = koleo_loss(xb.detach().float())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = koleo_loss(x)
    assert under_autocast.dtype == torch.float32
    assert under_autocast.item() == pytest.approx(koleo_loss(x).item(), rel=1e-6)


def test_batch_of_one_gives_zero_not_nan():
    x = torch.randn(1, 8, requires_grad=True)
    loss = KoLeoLoss()(x)
    assert loss.item() == 0.0
    loss.backward()
    torch.testing.assert_close(x.grad, torch.zeros(1, 8))
