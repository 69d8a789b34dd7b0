"""A tiny training config shared by the trainer tests: depth 2, width 32, 16/8 px crops."""

from __future__ import annotations

import pytest

from dinolab.train.config import Config, load_config

TINY = [
    "model.arch=vit_tiny", "model.patch_size=8", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
    "data.source=builtin:shapes?n=40&size=16", "data.val_fraction=0.2",
    "crops.global_crops_size=16", "crops.local_crops_size=8", "crops.local_crops_number=2",
    "dino.out_dim=64", "dino.head_hidden_dim=32", "dino.head_bottleneck_dim=16",
    "train.batch_size=8", "train.epoch_length=3", "train.epochs=2", "train.progress=false", "train.device=cpu",
    "train.precision=fp32", "optim.warmup_epochs=1", "teacher.warmup_teacher_temp_epochs=1",
    "teacher.warmup_teacher_temp=0.025",  # set here, not inherited: the pinned losses were recorded at it
    "teacher.teacher_temp=0.06", "eval.knn_every=-1", "eval.batch_size=32",
    "dino.centering=softmax", "koleo.loss_weight=0", "dino.use_bn_in_head=false",  # the pure DINO v1 objective
    # (the default adds Sinkhorn-Knopp, KoLeo and BatchNorm in the head)
]


def tiny_config(*overrides: str) -> Config:
    return load_config("default", [*TINY, *overrides])


@pytest.fixture(scope="session")
def tiny():
    """``tiny(*overrides)`` -> the tiny Config with extra ``key=value`` overrides."""
    return tiny_config


@pytest.fixture(scope="session")
def tiny_overrides():
    """The tiny config as command-line ``key=value`` overrides of the default preset."""
    return list(TINY)
