"""Gradient clipping (per parameter as DINO v1, or global), dropping the prototype gradients, the AdamW kernel."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dinolab.train.optim import adamw_kernel, apply_schedule, clip_gradients, drop_last_layer_grads, load_optimizer_state


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


class _Shard(nn.Parameter):
    """Stands in for FSDP's DTensor parameters: they have ``to_local``."""

    def to_local(self):
        return self


def _set_grads(params, step):
    """Fixed gradients for step ``step``, different for every tensor and step."""
    for j, p in enumerate(params):
        p.grad = torch.sin(torch.arange(p.numel(), dtype=torch.float32).view_as(p) * (step + 1) + j)


def _adamw_steps(params, kernel, steps, lr=1e-2, wd=0.1):
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd, **kernel)
    for i in range(steps):
        _set_grads(params, i)
        opt.step()
    return opt


def test_fused_kernel_for_plain_tensors_foreach_for_shards():
    assert adamw_kernel([nn.Parameter(torch.zeros(3))]) == {"fused": True}
    assert adamw_kernel([nn.Parameter(torch.zeros(3)), _Shard(torch.zeros(3))]) == {"foreach": True}
    assert adamw_kernel([]) == {"foreach": True}


def test_fused_adamw_follows_the_adamw_update_by_hand():
    p = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    _adamw_steps([p], adamw_kernel([p]), 1, lr=0.1, wd=0.1)
    g = torch.sin(torch.arange(3, dtype=torch.float32))
    m, v = 0.1 * g, 0.001 * g * g  # (1 - beta) * g, (1 - beta2) * g^2, then bias-corrected
    expected = torch.tensor([1.0, -2.0, 0.5]) * (1 - 0.1 * 0.1) - 0.1 * (m / 0.1) / ((v / 0.001).sqrt() + 1e-8)
    assert p.detach().tolist() == pytest.approx(expected.tolist(), rel=1e-5, abs=1e-6)


def test_a_foreach_checkpoint_resumes_into_the_fused_kernel_on_the_same_trajectory():
    start = [torch.linspace(-1, 1, 12).view(3, 4), torch.linspace(0, 2, 5)]
    straight = [nn.Parameter(t.clone()) for t in start]
    _adamw_steps(straight, {"foreach": True}, 5)

    before = [nn.Parameter(t.clone()) for t in start]
    saved = _adamw_steps(before, {"foreach": True}, 3).state_dict()  # an older run's checkpoint
    after = [nn.Parameter(t.detach().clone()) for t in before]
    fused = torch.optim.AdamW(after, lr=1e-2, weight_decay=0.1, **adamw_kernel(after))
    load_optimizer_state(fused, saved)
    assert fused.param_groups[0]["fused"] is True and not fused.param_groups[0]["foreach"]
    for i in (3, 4):
        _set_grads(after, i)
        fused.step()
    for a, b in zip(after, straight):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
