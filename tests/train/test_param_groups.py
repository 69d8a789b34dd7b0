"""Weight-decay groups by parameter name, layer-wise lr decay, the last-layer flag, fused groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dinolab.models import DINOHead, create_model
from dinolab.train.param_groups import param_groups


def _model(**kw):
    backbone = create_model("vit_tiny", patch_size=8, img_size=16, embed_dim=32, depth=2, num_heads=2,
                            layerscale_init=1e-5, num_register_tokens=1, **kw)
    return nn.ModuleDict({"backbone": backbone, "dino_head": DINOHead(32, 16, hidden_dim=8, bottleneck_dim=4,
                                                                      norm_last_layer=False)})


def _lookup(groups):
    return {n: g for g in groups for n in g["names"]}


def test_no_decay_on_biases_norms_and_layerscale():
    groups = _lookup(param_groups(_model()))
    no_decay = {n for n, g in groups.items() if g["wd_multiplier"] == 0.0}
    decay = {n for n, g in groups.items() if g["wd_multiplier"] == 1.0}
    for name in ("backbone.blocks.0.norm1.weight", "backbone.blocks.0.norm1.bias", "backbone.norm.weight",
                 "backbone.blocks.1.attn.qkv.bias", "backbone.blocks.0.ls1.gamma", "backbone.patch_embed.proj.bias",
                 "dino_head.mlp.0.bias"):
        assert name in no_decay, name
    # DINO v1 and DINOv2 decay the tokens, the position table and the weight-norm gain
    for name in ("backbone.blocks.0.attn.qkv.weight", "backbone.blocks.1.mlp.fc2.weight", "backbone.cls_token",
                 "backbone.pos_embed", "backbone.register_tokens", "backbone.patch_embed.proj.weight",
                 "dino_head.mlp.4.weight", "dino_head.last_layer.weight_v", "dino_head.last_layer.weight_g"):
        assert name in decay, name
    assert no_decay | decay == {n for n, p in _model().named_parameters() if p.requires_grad}


def test_decay_tokens_false_excludes_tokens_and_gain():
    groups = _lookup(param_groups(_model(), decay_tokens=False))
    for name in ("backbone.cls_token", "backbone.pos_embed", "backbone.register_tokens", "backbone.mask_token",
                 "dino_head.last_layer.weight_g"):
        assert groups[name]["wd_multiplier"] == 0.0


def test_layerwise_decay_and_patch_embed_multiplier():
    groups = _lookup(param_groups(_model(), layerwise_decay=0.5, patch_embed_lr_mult=0.2))
    depth = 2  # layer ids: tokens/patch_embed 0, blocks.i -> i+1, final norm depth+1; mult = 0.5**(depth+1-id)
    assert groups["backbone.cls_token"]["lr_multiplier"] == pytest.approx(0.5 ** 3)
    assert groups["backbone.patch_embed.proj.weight"]["lr_multiplier"] == pytest.approx(0.5 ** 3 * 0.2)
    assert groups["backbone.blocks.0.attn.qkv.weight"]["lr_multiplier"] == pytest.approx(0.5 ** 2)
    assert groups["backbone.blocks.1.attn.qkv.weight"]["lr_multiplier"] == pytest.approx(0.5 ** 1)
    assert groups["backbone.norm.weight"]["lr_multiplier"] == pytest.approx(1.0)
    assert groups["dino_head.mlp.0.weight"]["lr_multiplier"] == 1.0
    assert depth == 2


def test_last_layer_flag_fusion_and_frozen_parameters():
    model = _model()
    model["dino_head"].last_layer.weight_g.requires_grad = False
    groups = param_groups(model)
    names = _lookup(groups)
    assert "dino_head.last_layer.weight_g" not in names  # frozen: left out
    assert names["dino_head.last_layer.weight_v"]["is_last_layer"]
    assert not names["dino_head.mlp.0.weight"]["is_last_layer"]
    # without lr decay: exactly (decay, no decay, last layer) groups
    keys = sorted((g["wd_multiplier"], g["is_last_layer"]) for g in groups)
    assert keys == [(0.0, False), (1.0, False), (1.0, True)]
    opt = torch.optim.AdamW(groups)  # extra keys are accepted by torch optimizers
    assert len(opt.param_groups) == 3
