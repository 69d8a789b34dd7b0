"""What each mode trains and the learning rates of its optimizer groups."""

from __future__ import annotations

import pytest
import torch

from dinolab.errors import ConfigError
from dinolab.finetune.config import parse_mode
from dinolab.finetune.modes import optimizer_groups, set_trainable
from dinolab.models import VisionTransformer


def _vit():
    return VisionTransformer(img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=2)


def test_layer_wise_decay_by_hand():
    vit, head = _vit(), torch.nn.Linear(32, 3)
    set_trainable(vit, "full")
    groups = optimizer_groups(vit, head, lr=1.0, head_lr=7.0, weight_decay=0.1, layer_decay=0.5)
    lr_of = {}
    for g in groups:
        for p in g["params"]:
            lr_of[id(p)] = (g["base_lr"], g["weight_decay"])
    # layer 0: tokens and patch embedding, blocks.i: i + 1, final norm: depth + 1 = 3; lr = 0.5 ** (3 - layer)
    assert lr_of[id(vit.patch_embed.proj.weight)] == (0.125, 0.1)
    assert lr_of[id(vit.cls_token)][0] == 0.125
    assert lr_of[id(vit.blocks[0].attn.qkv.weight)] == (0.25, 0.1)
    assert lr_of[id(vit.blocks[1].mlp.fc1.weight)] == (0.5, 0.1)
    assert lr_of[id(vit.blocks[1].mlp.fc1.bias)] == (0.5, 0.0)  # no decay on biases
    assert lr_of[id(vit.norm.weight)] == (1.0, 0.0)
    assert lr_of[id(head.weight)] == (7.0, 0.1) and lr_of[id(head.bias)] == (7.0, 0.0)
    assert len(lr_of) == sum(1 for _ in vit.parameters()) + 2


def test_modes_train_what_they_say():
    vit = _vit()
    set_trainable(vit, "head")
    assert not any(p.requires_grad for p in vit.parameters())
    vit = _vit()
    set_trainable(vit, "lora", rank=2, alpha=2)
    names = [n for n, p in vit.named_parameters() if p.requires_grad]
    assert names and all(n.endswith(("lora_a", "lora_b")) for n in names) and len(names) == 2 * 4 * 2
    with pytest.raises(ConfigError, match="last:3"):
        set_trainable(_vit(), "last", 3)


def test_parse_mode():
    assert parse_mode("last:4") == ("last", 4) and parse_mode("lora") == ("lora", 0)
    for bad in ("last", "last:0", "last:x", "linear"):
        with pytest.raises(ValueError):
            parse_mode(bad)
