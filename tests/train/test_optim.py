"""Gradient clipping (per parameter as DINO v1, or global) and dropping the prototype gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dinolab.train.optim import apply_schedule, clip_gradients, drop_last_layer_grads


def _params(*grads):
    ps = []
    for g in grads:
        p = nn.Parameter(torch.zeros(len(g)))
        p.grad = torch.tensor(g, dtype=torch.float32)
        ps.append(p)
    return ps


def test_per_parameter_clipping_by_hand():
    a, b = _params([3.0, 4.0], [0.3, 0.4])  # norms 5 and 0.5
    total = clip_gradients([a, b], 1.0)
    assert float(total) == pytest.approx(math.sqrt(25 + 0.25))
    # a: factor 1/(5 + 1e-6); b is within the bound and left exactly as it was
    assert a.grad.tolist() == pytest.approx([3 / (5 + 1e-6), 4 / (5 + 1e-6)], rel=1e-6)
    assert b.grad.tolist() == [pytest.approx(0.3), pytest.approx(0.4)]


def test_global_clipping_by_hand():
    a, b = _params([3.0, 4.0], [0.0, 12.0])  # global norm 13
    clip_gradients([a, b], 1.3, mode="global")
    assert a.grad.tolist() == pytest.approx([0.3, 0.4], rel=1e-5)
    assert b.grad.tolist() == pytest.approx([0.0, 1.2], rel=1e-5)


def test_zero_disables_clipping_and_nan_is_reported():
    a, = _params([30.0, 40.0])
    assert float(clip_gradients([a], 0.0)) == pytest.approx(50.0)
    assert a.grad.tolist() == [30.0, 40.0]
    b, = _params([float("nan"), 1.0])
    assert not math.isfinite(float(clip_gradients([b], 1.0)))


def test_drop_last_layer_grads_and_schedule():
    w, v = _params([1.0], [2.0])
    opt = torch.optim.AdamW([{"params": [w], "lr_multiplier": 0.5, "wd_multiplier": 0.0},
                             {"params": [v], "is_last_layer": True}])
    apply_schedule(opt, lr=0.1, wd=0.04)
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.1]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.04]
    drop_last_layer_grads(opt)
    assert w.grad is not None and v.grad is None
    before = v.detach().clone()
    opt.step()  # AdamW skips a parameter without gradient: no update, no decay
    assert torch.equal(v.detach(), before)
