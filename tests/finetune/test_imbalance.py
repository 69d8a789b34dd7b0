"""Class weights, balanced sampling and logit adjustment against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dinolab.errors import DataError
from dinolab.finetune import imbalance as im


def test_inverse_frequency_by_hand():
    # counts 10, 5, 1: 1/n = 0.1, 0.2, 1.0 (sum 1.3) -> scaled to sum 3
    w = im.inverse_frequency_weights([10, 5, 1])
    assert w == pytest.approx([0.3 / 1.3, 0.6 / 1.3, 3.0 / 1.3])
    assert w.sum() == pytest.approx(3.0)


def test_effective_number_by_hand():
    beta = 0.9
    raw = [(1 - beta) / (1 - beta ** n) for n in (10, 5, 1)]  # 0.1/0.6513.., 0.1/0.40951, 1.0
    expected = [3 * r / sum(raw) for r in raw]
    assert im.effective_number_weights([10, 5, 1], beta=beta) == pytest.approx(expected)


def test_effective_number_limits():
    assert im.effective_number_weights([100, 3], beta=0.0) == pytest.approx([1.0, 1.0])  # beta 0: equal weights
    near_one = im.effective_number_weights([100, 3], beta=1 - 1e-9)
    assert near_one == pytest.approx(im.inverse_frequency_weights([100, 3]), rel=1e-4)  # beta -> 1: inverse


def test_bad_counts_and_kinds_refused():
    with pytest.raises(DataError):
        im.inverse_frequency_weights([3, 0])
    with pytest.raises(DataError):
        im.effective_number_weights([3, 1], beta=1.0)
    with pytest.raises(DataError):
        im.class_weights("square-root", [3, 1])
    assert im.class_weights("none", [3, 1]) is None


def test_log_priors_and_adjustments():
    lp = im.log_priors([3, 1])
    assert lp == pytest.approx([math.log(0.75), math.log(0.25)])
    z = torch.tensor([[1.0, 2.0]])
    lpt = torch.tensor(lp, dtype=torch.float32)
    assert im.adjust_logits_for_loss(z, lpt, 2.0).tolist()[0] == pytest.approx([1 + 2 * math.log(0.75),
                                                                                 2 + 2 * math.log(0.25)])
    assert im.adjust_logits_posthoc(z, lpt, 1.0).tolist()[0] == pytest.approx([1 - math.log(0.75),
                                                                               2 - math.log(0.25)])


def test_logit_adjusted_loss_is_menon_formula():
    # Menon et al. eq. (10): -log( e^{z_y + tau log pi_y} / sum_c e^{z_c + tau log pi_c} )
    z, pi, y = [0.5, -1.0, 2.0], [0.7, 0.2, 0.1], 1
    num = math.exp(z[y] + math.log(pi[y]))
    den = sum(math.exp(zc + math.log(p)) for zc, p in zip(z, pi))
    expected = -math.log(num / den)
    adj = im.adjust_logits_for_loss(torch.tensor([z]), torch.tensor(np.log(pi), dtype=torch.float32))
    assert float(F.cross_entropy(adj, torch.tensor([y]))) == pytest.approx(expected, rel=1e-6)


def test_balanced_sampling_weights_and_draws():
    labels = np.array([0] * 8 + [1] * 2)
    p = im.balanced_sample_weights(labels, 2)
    assert p[:8] == pytest.approx([1 / 16] * 8) and p[8:] == pytest.approx([1 / 4] * 2)
    assert p.sum() == pytest.approx(1.0)
    draws = im.balanced_indices(labels, 2, 20000, torch.Generator().manual_seed(0))
    share_rare = (labels[draws] == 1).mean()
    assert abs(share_rare - 0.5) < 0.02  # each class half of the draws, not 20%
