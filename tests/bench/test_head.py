"""The DINO-head diagnosis against values worked out by hand on a head with known weights."""

import math

import pytest
import torch

from dinolab.bench.head import effective_rank, head_report
from dinolab.models import DINOHead


def test_effective_rank_of_known_singular_values():
    # Centred rows +-3 e1, +-1 e2: singular values 3*sqrt(2) and sqrt(2), p = (3/4, 1/4).
    a = torch.tensor([[3.0, 0, 0], [-3.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0]])
    assert effective_rank(a) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))), rel=1e-5)
    assert effective_rank(torch.eye(4) * 2.0) == pytest.approx(3.0, rel=1e-5)  # centring removes one direction


def test_head_report_on_a_hand_built_head():
    # Identity bottleneck in 2-D, prototypes +-e1, +-e2; images at angle +-a from e1.
    a = 0.3
    head = DINOHead(2, 4, bottleneck_dim=2, nlayers=1, weight_norm=False).eval()
    with torch.no_grad():
        head.mlp.weight.copy_(torch.eye(2))
        head.mlp.bias.zero_()
        head.last_layer.weight.copy_(torch.tensor([[1.0, 0], [0, 1.0], [-1.0, 0], [0, -1.0]]))
    cls = torch.tensor([[math.cos(a), math.sin(a)], [math.cos(a), -math.sin(a)]])
    r = head_report(cls, head, teacher_temp=0.5, student_temp=0.25)
    assert r["cone: cos(z, batch mean)"] == pytest.approx(math.cos(a), rel=1e-5)
    assert r["cone: |z - batch mean|"] == pytest.approx(math.sin(a), rel=1e-5)
    # Logits (c, +-s, -c, -+s): mean 0, sum of squares 2, unbiased std sqrt(2/3).
    assert r["logit std over prototypes"] == pytest.approx(math.sqrt(2 / 3), rel=1e-5)
    assert r["ln K"] == pytest.approx(math.log(4))

    def entropy(t):
        e = [math.exp(x / t) for x in (math.cos(a), math.sin(a), -math.cos(a), -math.sin(a))]
        p = [x / sum(e) for x in e]
        return -sum(x * math.log(x) for x in p)

    assert r["target entropy, softmax"] == pytest.approx(entropy(0.5), rel=1e-5)
    assert r["student-temperature entropy"] == pytest.approx(entropy(0.25), rel=1e-5)
    # Sinkhorn-Knopp evens out the prototypes over the two images, so its targets are flatter.
    assert entropy(0.5) < r["target entropy, Sinkhorn-Knopp"] <= math.log(4) + 1e-6
    assert r["effective rank: bottleneck"] == pytest.approx(1.0, rel=1e-5)  # the images differ along e2 only
    assert r["effective rank: prototypes"] == pytest.approx(2.0, rel=1e-5)
