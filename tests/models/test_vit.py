import math

import pytest
import torch
import torch.nn.functional as F

import dinolab
from dinolab.errors import ConfigError
from dinolab.models import VisionTransformer, create_model
from dinolab.models.layers import interpolate_pos_embed, swiglu_hidden_dim


def tiny(**kw):
    base = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4)
    base.update(kw)
    return VisionTransformer(**base).eval()


# Parameter counts published in the references (dino_v1.md §1.3, dinov2.md §3.6, dinov3 §1.4).
@pytest.mark.parametrize("name,expected", [
    ("dino_vits16", 21.67e6), ("dino_vitb16", 85.80e6), ("dino_vitb8", 85.81e6),
    ("dinov2_vits14", 22_056_576), ("dinov2_vitb14", 86_580_480), ("dinov2_vitl14", 304_368_640),
    ("dinov2_vitg14", 1_136_480_768), ("dinov2_vits14_reg", 22_056_576 + 1_536),
    ("dinov3_vits16", 21.60e6), ("dinov3_vits16plus", 28.70e6), ("dinov3_vitb16", 85.67e6),
    ("dinov3_vitl16", 303.15e6), ("dinov3_vith16plus", 840.63e6), ("dinov3_vit7b16", 6716.04e6),
])
def test_released_architectures_have_reference_parameter_counts(name, expected):
    with torch.device("meta"):
        m = create_model(name)
    # v1 checkpoints have no mask token; the reference counts exclude it there
    n = sum(p.numel() for k, p in m.named_parameters() if not (name.startswith("dino_") and k == "mask_token"))
    if isinstance(expected, int):
        assert n == expected
    else:
        assert abs(n - expected) / expected < 1e-3


def test_dinov2_state_dict_keys_follow_official_layout():
    keys = list(create_model("dinov2_vits14_reg", depth=1).state_dict())
    assert keys[:4] == ["cls_token", "pos_embed", "register_tokens", "mask_token"]
    sd = create_model("dinov2_vits14", depth=12).state_dict()
    assert len(sd) == 175
    assert sd["pos_embed"].shape == (1, 1370, 384)
    assert sd["blocks.0.ls1.gamma"].shape == (384,)
    assert sd["blocks.11.attn.qkv.weight"].shape == (1152, 384)


def test_dinov3_state_dict_keys_follow_official_layout():
    sd = create_model("dinov3_vits16").state_dict()
    assert len(sd) == 188
    assert "pos_embed" not in sd
    assert sd["register_tokens"].shape == (1, 4, 384)
    mask = sd["blocks.0.attn.qkv.bias_mask"]
    assert mask.shape == (1152,)
    assert mask[:384].eq(1).all() and mask[384:768].eq(0).all() and mask[768:].eq(1).all()
    # periods = 100 ** (4i / 64), reference values 1.0, 1.3335, ..., 74.9894
    periods = sd["rope_embed.periods"]
    assert periods.shape == (16,)
    assert periods[0].item() == pytest.approx(1.0)
    assert periods[1].item() == pytest.approx(1.3335, abs=1e-4)
    assert periods[-1].item() == pytest.approx(74.9894, abs=1e-3)


@pytest.mark.parametrize("dim,ratio,align,expected", [(1536, 4, 8, 4096), (384, 6, 8, 1536), (4096, 3, 64, 8192),
                                                      (1280, 6, 8, 5120)])
def test_swiglu_hidden_width_matches_released_models(dim, ratio, align, expected):
    assert swiglu_hidden_dim(dim, ratio, align) == expected


def test_output_shapes_and_token_order_non_square():
    m = tiny(num_register_tokens=2)
    x = torch.randn(3, 3, 32, 48)
    out = m.forward_features(x)
    assert out["cls"].shape == (3, 32)
    assert out["registers"].shape == (3, 2, 32)
    assert out["patches"].shape == (3, 4 * 6, 32)
    normed = m.norm(out["prenorm"])
    torch.testing.assert_close(out["cls"], normed[:, 0])
    torch.testing.assert_close(out["registers"], normed[:, 1:3])
    torch.testing.assert_close(out["patches"], normed[:, 3:])
    torch.testing.assert_close(m(x), out["cls"])


def test_attention_matches_explicit_softmax_formula():
    torch.manual_seed(0)
    m = tiny()
    attn = m.blocks[0].attn
    x = torch.randn(2, 5, 32)
    qkv = x @ attn.qkv.weight.T + attn.qkv.bias
    q, k, v = qkv.reshape(2, 5, 3, 4, 8).permute(2, 0, 3, 1, 4)
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)
    expected = (w @ v).transpose(1, 2).reshape(2, 5, 32) @ attn.proj.weight.T + attn.proj.bias
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn.attention_map(x), w, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mask", [None, "bool", "additive"])
def test_bf16_cpu_attention_matches_the_float64_formula_forward_and_backward(mask):
    from dinolab.models.layers.attention import attend

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 37, 16, generator=g, dtype=torch.float64) for _ in range(3))
    allowed = torch.rand(2, 1, 37, 37, generator=g) > 0.3
    allowed |= torch.eye(37, dtype=torch.bool)  # every query attends to at least itself
    logits = q @ k.transpose(-1, -2) / 4.0
    attn_mask = None
    if mask is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
        attn_mask = allowed if mask == "bool" else torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))
    expected = torch.softmax(logits, -1) @ v
    leaves = [t.bfloat16().requires_grad_() for t in (q, k, v)]
    out = attend(*leaves, attn_mask.bfloat16() if mask == "additive" else attn_mask)
    assert out.dtype == torch.bfloat16
    cos = F.cosine_similarity(out.double().flatten(1), expected.flatten(1))
    assert cos.min() > 0.999
    out.double().sum().backward()
    ref = [t.detach().requires_grad_() for t in (q, k, v)]
    (torch.softmax((ref[0] @ ref[1].transpose(-1, -2) / 4.0).masked_fill(
        ~allowed if mask else torch.zeros_like(allowed), float("-inf")), -1) @ ref[2]).sum().backward()
    for got, want in zip(leaves, ref):
        assert F.cosine_similarity(got.grad.double().flatten(), want.grad.flatten(), dim=0) > 0.99


def test_last_selfattention_is_row_stochastic_and_consistent():
    m = tiny(num_register_tokens=1)
    a = m.get_last_selfattention(torch.randn(2, 3, 32, 32))
    assert a.shape == (2, 4, 1 + 1 + 16, 18)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 4, 18))


def test_registers_get_no_position_embedding_and_masks_come_before_it():
    m = tiny(num_register_tokens=2)
    with torch.no_grad():
        m.pos_embed.normal_()
        m.mask_token.fill_(3.0)
    x = torch.randn(1, 3, 32, 32)
    masks = torch.zeros(1, 16, dtype=torch.bool)
    masks[0, 5] = True
    tokens, _ = m.prepare_tokens(x, masks)
    torch.testing.assert_close(tokens[:, 1:3], m.register_tokens)
    torch.testing.assert_close(tokens[:, 0], (m.cls_token + m.pos_embed[:, :1])[:, 0])
    # masked patch 5 = mask_token + its position embedding (patch tokens start after CLS and 2 registers)
    torch.testing.assert_close(tokens[0, 3 + 5], m.mask_token[0] + m.pos_embed[0, 1 + 5])
    unmasked = m.patch_embed(x)[0, 4] + m.pos_embed[0, 1 + 4]
    torch.testing.assert_close(tokens[0, 3 + 4], unmasked)


def test_official_interpolation_uses_offset_scale_factor():
    torch.manual_seed(0)
    table = torch.randn(1, 1 + 16, 8)
    got = interpolate_pos_embed(table, (3, 6), offset=0.1, antialias=False)
    grid = table[:, 1:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, scale_factor=(3.1 / 4, 6.1 / 4), mode="bicubic")
    torch.testing.assert_close(got[:, 1:], ref.permute(0, 2, 3, 1).reshape(1, 18, 8))
    torch.testing.assert_close(got[:, :1], table[:, :1])
    # "hf" mode and offset 0 resize to an explicit size instead
    hf = interpolate_pos_embed(table, (3, 6), offset=0.1, antialias=True, mode="hf")
    ref_hf = F.interpolate(grid, size=(3, 6), mode="bicubic", align_corners=False, antialias=True)
    torch.testing.assert_close(hf[:, 1:], ref_hf.permute(0, 2, 3, 1).reshape(1, 18, 8))
    assert not torch.allclose(hf, got)
    # the native grid is returned unchanged
    assert interpolate_pos_embed(table, (4, 4)) is table


def test_k_bias_is_masked_in_dinov3_attention():
    m = tiny(mask_k_bias=True, pos_embed_type="rope", num_register_tokens=1).eval()
    x = torch.randn(2, 3, 32, 32)
    before = m(x)
    with torch.no_grad():
        for blk in m.blocks:
            blk.attn.qkv.bias[32:64].normal_(std=5.0)  # the key third
    torch.testing.assert_close(m(x), before)
    with torch.no_grad():
        m.blocks[0].attn.qkv.bias[:32].normal_(std=5.0)  # the query third does matter
    assert not torch.allclose(m(x), before)


def test_rope_rotates_only_patch_tokens_and_encodes_relative_position():
    from dinolab.models.layers.rope import RopePositionEmbedding, apply_rope

    rope = RopePositionEmbedding(8, base=100.0).eval()
    sin, cos = rope(2, 2)
    # coordinates of a 2x2 grid are (+-0.5, +-0.5); periods are 100**(4i/8) = 1, 10; channel layout
    # [y/p0, y/p1, x/p0, x/p1] repeated twice (rotate-half)
    for idx, (y, x) in enumerate([(-0.5, -0.5), (-0.5, 0.5), (0.5, -0.5), (0.5, 0.5)]):
        ang = [2 * math.pi * v / p for v in (y, x) for p in (1.0, 10.0)] * 2
        torch.testing.assert_close(sin[idx], torch.tensor([math.sin(a) for a in ang]), atol=1e-6, rtol=0)
        torch.testing.assert_close(cos[idx], torch.tensor([math.cos(a) for a in ang]), atol=1e-6, rtol=0)
    x = torch.randn(1, 1, 1 + 4, 8)
    rot = apply_rope(x, sin, cos)
    torch.testing.assert_close(rot[:, :, :1], x[:, :, :1])
    # a rotation preserves norms
    torch.testing.assert_close(rot.norm(dim=-1), x.norm(dim=-1))
    # training-time rescaling changes coordinates, evaluation does not
    rope_aug = RopePositionEmbedding(8, rescale_coords=2.0)
    torch.manual_seed(1)
    coords_train = rope_aug.coords(2, 2, torch.device("cpu"))
    ratio = coords_train / rope.coords(2, 2, torch.device("cpu"))
    assert torch.allclose(ratio, ratio[0, 0].expand_as(ratio))
    assert 0.5 <= ratio[0, 0].item() <= 2.0


def test_intermediate_layers_and_reshape():
    m = tiny(num_register_tokens=2)
    x = torch.randn(2, 3, 32, 40)
    outs = m.get_intermediate_layers(x, n=2, return_class_token=True)
    assert len(outs) == 2
    last_patches, last_cls = outs[-1]
    ff = m.forward_features(x)
    torch.testing.assert_close(last_patches, ff["patches"])
    torch.testing.assert_close(last_cls, ff["cls"])
    (grid,) = m.get_intermediate_layers(x, n=1, reshape=True)
    assert grid.shape == (2, 32, 4, 5)
    torch.testing.assert_close(grid[:, :, 1, 2], ff["patches"][:, 1 * 5 + 2])
    (raw,) = m.get_intermediate_layers(x, n=[0], norm=False)
    assert raw.shape == (2, 20, 32)


def test_local_cls_norm_only_in_training_for_local_crops():
    m = tiny(untie_local_cls_norm=True)
    with torch.no_grad():
        m.local_cls_norm.bias.fill_(7.0)
    x = torch.randn(2, 3, 16, 16)
    m.train()
    g, loc = m.forward_features_list([x, x])
    assert torch.allclose(loc["cls"], torch.full_like(loc["cls"], 7.0), atol=5.0) and not torch.allclose(g["cls"], loc["cls"])
    torch.testing.assert_close(g["patches"], loc["patches"])
    m.eval()
    g, loc = m.forward_features_list([x, x])
    torch.testing.assert_close(g["cls"], loc["cls"])


def test_stochastic_depth_modes():
    x = torch.randn(64, 5, 32)
    for mode in ("sample", "subset"):
        m = tiny(drop_path_rate=0.5, drop_path_uniform=True, drop_path_mode=mode)
        blk = m.blocks[0]
        blk.eval()
        ref = blk(x)
        blk.train()
        torch.manual_seed(0)
        out = blk(x)
        same = torch.isclose(out, x).all(dim=(1, 2))  # samples whose residuals were both dropped
        assert not torch.allclose(out, ref)
        if mode == "subset":
            # residuals computed for a subset only: some samples pass through unchanged
            assert same.any()


def test_create_model_errors_name_the_problem():
    with pytest.raises(ConfigError, match="did you mean"):
        create_model("vit_smal")
    with pytest.raises(ConfigError, match="invalid option"):
        create_model("vit_small", not_an_option=1)


def test_config_rebuilds_identical_architecture():
    m = create_model("dinov3_vits16plus", depth=2)
    m2 = VisionTransformer(**m.config)
    m2.load_state_dict(m.state_dict())
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(m.eval()(x), m2.eval()(x))
    assert dinolab.create_model is create_model


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 3, 20, 37), (3, 1, 16, 24)])
def test_patch_embed_is_the_strided_convolution_of_its_weights(shape):
    from dinolab.models.layers.patch_embed import PatchEmbed

    torch.manual_seed(0)
    pe = PatchEmbed(8, shape[1], 16)
    x = torch.randn(*shape, requires_grad=True)
    got = pe(x)
    want = F.conv2d(x, pe.proj.weight, pe.proj.bias, stride=8).flatten(2).transpose(1, 2)
    assert got.shape == (shape[0], (shape[2] // 8) * (shape[3] // 8), 16)  # remainder rows / columns dropped
    assert torch.allclose(got, want, atol=1e-5)
    g = torch.randn_like(got)
    grads = torch.autograd.grad((got * g).sum(), (x, pe.proj.weight))
    ref = torch.autograd.grad((want * g).sum(), (x, pe.proj.weight))
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(grads, ref))
