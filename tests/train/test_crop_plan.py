"""Crop sizes per iteration: Gram-teacher crops only while the Gram term counts, the high-resolution
phase from its start epoch with the configured mix, the same draw after a resume."""

from __future__ import annotations

import pytest

from dinolab.errors import ConfigError
from dinolab.train.config import validate
from dinolab.train.crop_plan import CropPlan, CropSizes

HIGHRES = ("crops.highres.start_epoch=1", "crops.highres.global_sizes=[24, 32]", "crops.highres.local_sizes=[8, 16]",
           "crops.highres.gram_sizes=[40, 48]", "crops.highres.probabilities=[0.75, 0.25]")


def test_gram_crops_only_while_the_term_counts(tiny):
    plan = CropPlan(tiny("gram.loss_weight=1.0", "gram.start_iteration=4", "gram.img_size=32"), iters_per_epoch=3)
    assert plan.sizes_at(3) == CropSizes(16, 8, None) == plan.base
    assert plan.sizes_at(4) == CropSizes(16, 8, 32)
    without = CropPlan(tiny("gram.loss_weight=1.0"), 3)  # no gram.img_size: the Gram teacher sees the global crops
    assert without.sizes_at(10) == CropSizes(16, 8, None)


def test_highres_phase_switches_at_its_epoch_with_the_configured_mix(tiny):
    plan = CropPlan(tiny(*HIGHRES, "gram.loss_weight=1.0", "gram.img_size=32", "train.epochs=400"), iters_per_epoch=3)
    assert plan.sizes_at(2) == CropSizes(16, 8, 32)
    drawn = [plan.sizes_at(it) for it in range(3, 1203)]
    assert set(drawn) == {CropSizes(24, 8, 40), CropSizes(32, 16, 48)}
    assert sum(s.global_size == 24 for s in drawn) / len(drawn) == pytest.approx(0.75, abs=0.05)
    again = CropPlan(tiny(*HIGHRES, "gram.loss_weight=1.0", "gram.img_size=32", "train.epochs=400"), 3)
    assert [again.sizes_at(it) for it in range(1202, 2, -1)] == drawn[::-1]  # a function of the iteration only
    assert plan.max_global_size == 32


def test_multicrop_at_reuses_the_base_and_caches_the_others(tiny):
    plan = CropPlan(tiny(*HIGHRES), iters_per_epoch=3)
    made = []
    base = object()
    assert plan.multicrop_at(0, base, made.append) is base
    for it in range(3, 40):
        plan.multicrop_at(it, base, lambda s: made.append(s) or s)
    assert sorted(made, key=lambda s: s.global_size) == [CropSizes(24, 8, None), CropSizes(32, 16, None)]


def test_highres_config_errors(tiny):
    with pytest.raises(ConfigError, match="one entry per resolution"):
        validate(tiny("crops.highres.start_epoch=1", "crops.highres.global_sizes=[32]"))
    with pytest.raises(ConfigError, match="start_epoch=-1"):
        validate(tiny(*HIGHRES, "crops.highres.start_epoch=-1"))
    assert any("never starts" in w for w in validate(tiny(*HIGHRES, "crops.highres.start_epoch=5")))
