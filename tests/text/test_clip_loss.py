import math

import pytest
import torch
import torch.nn.functional as F

from dinolab.text.clip_loss import INIT_LOGIT_SCALE, MAX_LOGIT_SCALE, ClipLoss, clip_loss


def lse(*xs):
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def test_two_by_two_by_hand():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # scale 10: logits = 10 * u @ v.T = [[10, 6], [0, 8]]
    rows = ((lse(10, 6) - 10) + (lse(0, 8) - 8)) / 2  # image -> text
    cols = ((lse(10, 0) - 10) + (lse(6, 8) - 8)) / 2  # text -> image: columns [10, 0] and [6, 8]
    expected = (rows + cols) / 2
    got = clip_loss(u, v, torch.tensor(math.log(10.0)))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_three_by_three_by_hand_at_the_initial_temperature():
    u = F.normalize(torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 1.0], [3.0, 0.0, 1.0]]), dim=-1)
    v = F.normalize(torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 0.0]]), dim=-1)
    s = 1 / 0.07
    sim = [[s * float(u[i] @ v[j]) for j in range(3)] for i in range(3)]
    img_to_txt = sum(lse(*sim[i]) - sim[i][i] for i in range(3)) / 3
    txt_to_img = sum(lse(*(sim[i][j] for i in range(3))) - sim[j][j] for j in range(3)) / 3
    assert clip_loss(u, v, INIT_LOGIT_SCALE).item() == pytest.approx((img_to_txt + txt_to_img) / 2, rel=1e-5)


def test_repeated_captions_share_the_target():
    u = F.normalize(torch.tensor([[1.0, 0.2], [0.3, 1.0], [1.0, -0.5]]), dim=-1)
    v = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]]), dim=-1)
    groups = torch.tensor([0, 1, 0])  # pairs 0 and 2 have the same caption
    sim = [[float(u[i] @ v[j]) for j in range(3)] for i in range(3)]
    matches = {0: [0, 2], 1: [1], 2: [0, 2]}

    def soft_ce(row, i):  # -(1/|M|) sum_{j in M} log softmax(row)_j
        return sum(lse(*row) - row[j] for j in matches[i]) / len(matches[i])

    rows = sum(soft_ce(sim[i], i) for i in range(3)) / 3
    cols = sum(soft_ce([sim[k][j] for k in range(3)], j) for j in range(3)) / 3
    assert clip_loss(u, v, 0.0, groups).item() == pytest.approx((rows + cols) / 2, rel=1e-5)
    # Distinct ids give the plain loss.
    assert clip_loss(u, v, 0.0, torch.arange(3)).item() == pytest.approx(clip_loss(u, v, 0.0).item(), rel=1e-6)


def test_logit_scale_is_clamped_at_100():
    u = F.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    v = F.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    at_cap = clip_loss(u, v, math.log(100.0))
    assert clip_loss(u, v, math.log(1000.0)).item() == pytest.approx(at_cap.item(), rel=1e-6)
    assert clip_loss(u, v, math.log(50.0)).item() != pytest.approx(at_cap.item(), rel=1e-3)
    loss_fn = ClipLoss(init_logit_scale=5.0)
    loss_fn(u, v).backward()
    assert loss_fn.logit_scale.grad.item() == 0.0  # above the cap the scale gets no gradient
    assert loss_fn.scale == pytest.approx(100.0)
    assert MAX_LOGIT_SCALE == pytest.approx(math.log(100.0))


def test_initial_temperature_and_symmetry():
    loss_fn = ClipLoss()
    assert loss_fn.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert loss_fn.scale == pytest.approx(1 / 0.07, rel=1e-6)
    u = F.normalize(torch.randn(4, 6, generator=torch.Generator().manual_seed(2)), dim=-1)
    v = F.normalize(torch.randn(4, 6, generator=torch.Generator().manual_seed(3)), dim=-1)
    assert loss_fn(u, v).item() == pytest.approx(loss_fn(v, u).item(), rel=1e-6)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="one shape"):
        clip_loss(torch.zeros(3, 4), torch.zeros(2, 4), 1.0)
