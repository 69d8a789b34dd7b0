"""Schedules against the reference formulas written out with numpy (DINO v1 utils.cosine_scheduler,
DINOv2 CosineScheduler, the per-epoch teacher temperature) and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dinolab.train.schedules import (
    Schedules,
    cosine_schedule,
    scaled_lr,
    teacher_temp_per_epoch,
    teacher_temp_per_iteration,
)


def v1_cosine_scheduler(base, final, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0):
    """DINO v1 utils.cosine_scheduler, as described in the reference (numpy array per iteration)."""
    warmup_iters = warmup_epochs * niter_per_ep
    warmup = np.linspace(start_warmup_value, base, warmup_iters) if warmup_iters > 0 else np.array([])
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    cos = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate((warmup, cos))


def v2_cosine_scheduler(base, final, total_iters, warmup_iters=0, start_warmup_value=0, freeze_iters=0):
    freeze = np.zeros(freeze_iters)
    warmup = np.linspace(start_warmup_value, base, warmup_iters)
    iters = np.arange(total_iters - warmup_iters - freeze_iters)
    cos = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate((freeze, warmup, cos))


def test_v1_lr_schedule_matches_reference_array():
    ref = v1_cosine_scheduler(0.002, 1e-6, epochs=7, niter_per_ep=5, warmup_epochs=2)
    ours = [cosine_schedule(i, 0.002, 1e-6, 35, warmup_iters=10) for i in range(35)]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-15)


def test_hand_values_of_the_lr_schedule():
    # warm-up over 5 iterations from 0 to 1 (linspace with the endpoint): 0, .25, .5, .75, 1
    assert [cosine_schedule(i, 1.0, 0.0, 15, warmup_iters=5) for i in range(5)] == [0, .25, .5, .75, 1]
    # then cosine over the remaining 10: i=5 -> 1 (cos 0), i=10 -> half-way 0.5, i=14 -> 0.5(1+cos(0.9π))
    assert cosine_schedule(10, 1.0, 0.0, 15, warmup_iters=5) == pytest.approx(0.5)
    assert cosine_schedule(14, 1.0, 0.0, 15, warmup_iters=5) == pytest.approx(0.5 * (1 + math.cos(0.9 * math.pi)))
    # beyond the end: the final value (DINOv2)
    assert cosine_schedule(15, 1.0, 0.1, 15, warmup_iters=5) == 0.1
    assert cosine_schedule(10**6, 1.0, 0.1, 15) == 0.1


def test_weight_decay_and_momentum_schedules():
    # wd 0.04 -> 0.4 without warm-up: starts at 0.04, the middle is 0.22
    assert cosine_schedule(0, 0.04, 0.4, 100) == pytest.approx(0.04)
    assert cosine_schedule(50, 0.04, 0.4, 100) == pytest.approx(0.22)
    # EMA momentum 1 - (1 - 0.996)(cos(π it/N) + 1)/2
    for it in (0, 13, 77, 99):
        expected = 1 - (1 - 0.996) * (math.cos(math.pi * it / 100) + 1) / 2
        assert cosine_schedule(it, 0.996, 1.0, 100) == pytest.approx(expected, abs=1e-15)


def test_v2_freeze_warmup_and_cosine():
    ref = v2_cosine_scheduler(1e-3, 1e-6, total_iters=30, warmup_iters=7, start_warmup_value=1e-5, freeze_iters=4)
    ours = [cosine_schedule(i, 1e-3, 1e-6, 30, warmup_iters=7, start_warmup_value=1e-5, freeze_iters=4)
            for i in range(30)]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-18)
    assert ours[:4] == [0.0] * 4


def test_teacher_temperature_per_epoch_and_per_iteration():
    # v1: linspace(0.04, 0.07, 4) over epochs 0..3, then 0.07; constant inside an epoch
    assert [teacher_temp_per_epoch(e, 0.04, 0.07, 4) for e in range(6)] == pytest.approx(
        [0.04, 0.05, 0.06, 0.07, 0.07, 0.07])
    assert teacher_temp_per_epoch(0, 0.04, 0.07, 0) == 0.07
    # v2: linspace over 3 warm-up iterations, then constant
    assert [teacher_temp_per_iteration(i, 0.04, 0.07, 3) for i in range(5)] == pytest.approx(
        [0.04, 0.055, 0.07, 0.07, 0.07])


def test_lr_scaling_rules():
    assert scaled_lr(0.0005, 1024, "linear_wrt_256") == pytest.approx(0.002)
    assert scaled_lr(0.004, 2048, "sqrt_wrt_1024") == pytest.approx(0.004 * math.sqrt(2))
    assert scaled_lr(0.1, 64, "none") == 0.1


def test_schedules_from_config(tiny):
    cfg = tiny("train.batch_size=64", "optim.lr=0.001", "optim.warmup_epochs=1", "train.epochs=4",
               "optim.freeze_last_layer_epochs=1", "teacher.warmup_teacher_temp_epochs=2",
               "teacher.warmup_teacher_temp=0.04", "teacher.teacher_temp=0.06")
    s = Schedules.from_config(cfg, iters_per_epoch=5)
    assert s.total_iters == 20 and s.peak_lr == pytest.approx(0.001 * 64 / 256)
    assert s.at(4)["lr"] == pytest.approx(0.00025)  # last warm-up iteration reaches the peak
    assert s.at(4)["freeze_last_layer"] and not s.at(5)["freeze_last_layer"]
    assert s.at(4)["teacher_temp"] == pytest.approx(0.04) and s.at(5)["teacher_temp"] == pytest.approx(0.06)
