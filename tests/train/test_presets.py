"""Every DINOv2/v3 and distillation preset runs end to end through `dinolab train` at a tiny size."""

from __future__ import annotations

import json

import pytest

from dinolab import cli
from dinolab.train.config import list_presets, load_config

TINY = ["model.arch=vit_tiny", "model.patch_size=8", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
        "data.source=builtin:shapes?n=24&size=32", "crops.global_crops_size=32", "crops.local_crops_size=16",
        "crops.local_crops_number=2", "dino.out_dim=64", "dino.head_hidden_dim=32", "dino.head_bottleneck_dim=16",
        "train.batch_size=8", "train.epoch_length=2", "train.epochs=1", "train.progress=false", "train.device=cpu",
        "train.precision=fp32", "optim.warmup_epochs=0", "teacher.warmup_teacher_temp_epochs=0", "eval.knn_every=-1"]

PRESETS = [p for p in list_presets() if p.startswith("dinov2_")]


def test_the_new_presets_are_packaged():
    assert {"dinov2_vits14", "dinov2_shapes"} <= set(PRESETS)


def test_dinov2_vits14_is_the_official_recipe():
    c = load_config("dinov2_vits14")
    assert (c.model.arch, c.model.patch_size, c.model.options["layerscale_init"]) == ("vit_small", 14, 1e-5)
    assert (c.ibot.loss_weight, c.ibot.separate_head, c.koleo.loss_weight) == (1.0, False, 0.1)
    assert (c.teacher.momentum_teacher, c.teacher.teacher_temp, c.teacher.warmup_teacher_temp_epochs) == (0.992, 0.07, 30)
    assert (c.optim.layerwise_decay, c.optim.patch_embed_lr_mult, c.optim.scaling_rule) == (0.9, 0.2, "sqrt_wrt_1024")
    assert tuple(c.crops.global_crops_scale) == (0.32, 1.0) and tuple(c.crops.local_crops_scale) == (0.05, 0.32)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_end_to_end(preset, tmp_path):
    extra = ["ibot.mask_ratio_min_max=[0.25, 0.5]"]  # a 4x4 grid needs >= 4 masked patches per block
    assert cli.main(["train", preset, *TINY, *extra, "--out", str(tmp_path / preset)]) == 0
    records = [json.loads(line) for line in (tmp_path / preset / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert len(steps) == 2 and all("skipped" not in r for r in steps)
    assert {"dino_loss", "ibot_loss", "koleo_loss"} <= set(steps[0])
    assert (tmp_path / preset / "teacher_backbone.safetensors").is_file()
