"""The DINOv3 presets: the recipe's values, and both run end to end through `dinolab train` at a tiny
size with every DINOv3 piece switched on (Gram anchoring with 2x crops and a refresh, the
high-resolution phase, plain untied heads, Sinkhorn-Knopp, RoPE, registers, local-crop CLS norm)."""

from __future__ import annotations

import json

import pytest

from dinolab import cli
from dinolab.train.config import list_presets, load_config

# the preset's own architecture (dinov3_vits16: RoPE, 4 registers, LayerScale, ...) at a tiny width
TINY = ["model.patch_size=8", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
        "data.source=builtin:shapes?n=24&size=32", "crops.global_crops_size=32", "crops.local_crops_size=16",
        "crops.local_crops_number=2", "dino.out_dim=64", "dino.head_hidden_dim=32", "dino.head_bottleneck_dim=16",
        "train.batch_size=8", "train.epoch_length=2", "train.epochs=2", "train.progress=false", "train.device=cpu",
        "train.precision=fp32", "optim.warmup_epochs=0", "teacher.warmup_teacher_temp_epochs=0", "eval.knn_every=-1",
        "ibot.mask_ratio_min_max=[0.25, 0.5]",
        # Gram from step 2 (2x crops), one refresh; high resolution for the second epoch
        "gram.start_iteration=1", "gram.start_epoch=0", "gram.snapshot_iteration=null", "gram.warmup_iterations=0",
        "gram.refresh_every=2", "gram.first_refresh=null", "gram.img_size=64",
        "crops.highres.start_epoch=1", "crops.highres.global_sizes=[40, 48]", "crops.highres.local_sizes=[16, 16]",
        "crops.highres.gram_sizes=[64, 72]", "crops.highres.probabilities=[0.5, 0.5]"]

PRESETS = [p for p in list_presets() if p.startswith("dinov3_")]


def test_the_dinov3_presets_are_packaged():
    assert {"dinov3_vits16", "dinov3_shapes"} <= set(PRESETS)


def test_dinov3_vits16_is_the_official_recipe():
    c = load_config("dinov3_vits16")
    assert (c.model.arch, c.model.options["untie_local_cls_norm"]) == ("dinov3_vits16", True)
    assert (c.crops.global_crops_size, c.crops.local_crops_size, c.crops.local_crops_number) == (256, 112, 8)
    assert (c.dino.centering, c.ibot.centering, c.dino.head_weight_norm, c.ibot.separate_head) == \
           ("sinkhorn_knopp", "sinkhorn_knopp", False, True)
    assert (c.ibot.loss_weight, c.koleo.loss_weight) == (1.0, 0.1)
    g = c.gram
    assert (g.loss_weight, g.start_iteration, g.warmup_iterations, g.img_size) == (2.0, 1_000_000, 1000, 512)
    assert (g.refresh_every, g.first_refresh, g.max_refreshes, g.resize_mode) == (10_000, 1_010_000, 3, "bicubic")
    assert (c.teacher.momentum_teacher, c.teacher.final_momentum_teacher, c.teacher.teacher_temp) == (0.994, 0.994, 0.07)
    o = c.optim
    assert (o.lr_schedule, o.weight_decay, o.weight_decay_end, tuple(o.betas)) == ("constant", 0.04, 0.04, (0.9, 0.99))
    assert (o.clip_grad, o.layerwise_decay, o.patch_embed_lr_mult, o.freeze_last_layer_epochs) == (30.0, 0.98, 0.2, 5)
    assert o.lr * (c.train.batch_size / 1024) ** 0.5 == pytest.approx(4e-4)  # 5e-5 x 4 x sqrt(4096/1024)
    h = c.crops.highres
    assert (h.start_epoch, c.train.epochs, c.train.epoch_length) == (1200, 1210, 1000)
    assert list(zip(h.global_sizes, h.local_sizes, h.gram_sizes, h.probabilities)) == [
        (512, 112, 768, 0.3), (768, 112, 1152, 0.3), (768, 168, 1152, 0.3), (768, 224, 1152, 0.05),
        (768, 336, 1152, 0.05)]


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_end_to_end(preset, tmp_path):
    assert cli.main(["train", preset, *TINY, "--out", str(tmp_path / preset)]) == 0
    records = [json.loads(line) for line in (tmp_path / preset / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert len(steps) == 4 and all("skipped" not in r for r in steps)
    assert {"dino_loss", "ibot_loss", "koleo_loss"} <= set(steps[0]) and "gram_loss" not in steps[0]
    assert all("gram_loss" in r for r in steps[1:])
    assert (tmp_path / preset / "teacher_backbone.safetensors").is_file()
