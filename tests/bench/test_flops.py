"""The analytic FLOP counter against counts worked out by hand, and against torch's op counter."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dinolab.bench.flops import (
    dino_step_flops,
    ffn_hidden_dim,
    head_flops_per_row,
    vit_forward_breakdown,
    vit_forward_flops,
)
from dinolab.models import DINOHead, VisionTransformer

# A tiny ViT: 8x8 images, 4x4 patches -> N = 4 patches, T = 1 + 4 = 5 tokens, D = 8, H = 32, 2 blocks.
TINY = dict(img_size=8, patch_size=4, in_chans=3, embed_dim=8, depth=2, num_heads=2, mlp_ratio=4.0)


def test_tiny_vit_by_hand():
    b = vit_forward_breakdown(TINY, (8, 8))
    # patch embedding: N * (C*p*p) * D multiply-adds = 4 * 48 * 8 = 1536 -> 3072 FLOPs
    assert b["patch_embed"] == 3072
    # per block: qkv 5*8*24 = 960 MACs, QK^T 5*5*8 = 200, AV 200, proj 5*8*8 = 320, MLP 5*8*32*2 = 2560
    assert b["qkv"] == 2 * 2 * 960
    assert b["attn_qk"] == 2 * 2 * 200 and b["attn_av"] == 2 * 2 * 200
    assert b["proj"] == 2 * 2 * 320
    assert b["ffn"] == 2 * 2 * 2560
    assert b["total"] == 3072 + 2 * 2 * (960 + 200 + 200 + 320 + 2560)  # 20032
    assert vit_forward_flops(TINY, (8, 8), batch=3) == 3 * 20032


def test_registers_swiglu_and_non_square_by_hand():
    cfg = dict(TINY, num_register_tokens=2, ffn_layer="swiglu", swiglu_align=8)
    # SwiGLU width: int(32 * 2 / 3) = 21, rounded up to a multiple of 8 -> 24
    assert ffn_hidden_dim(cfg) == 24
    # 8x12 image: 2x3 = 6 patches, T = 1 + 2 + 6 = 9; remainder pixels (13th column) are dropped
    b = vit_forward_breakdown(cfg, (8, 13))
    assert b["patch_embed"] == 2 * 6 * 48 * 8
    assert b["qkv"] == 2 * 2 * 9 * 8 * 24
    assert b["attn_qk"] == 2 * 2 * 81 * 8
    assert b["ffn"] == 2 * 2 * 9 * 8 * 24 * 3  # three matrices: w1, w2, w3


def test_head_by_hand():
    head = DINOHead(8, 16, hidden_dim=12, bottleneck_dim=4, nlayers=3)
    # nlayers=3: Linear 8->12, Linear 12->12, Linear 12->4, then the prototypes 4->16
    assert head_flops_per_row(head) == 2 * (8 * 12 + 12 * 12 + 12 * 4 + 4 * 16)
    assert head_flops_per_row(DINOHead(8, 16, bottleneck_dim=4, nlayers=1)) == 2 * (8 * 4 + 4 * 16)


def test_step_is_three_student_forwards_plus_one_teacher_forward():
    f = dino_step_flops(TINY, batch=2, global_size=8, n_global=2, local_size=4, n_local=3, head_row_flops=100)
    local = 2 * 3 * vit_forward_breakdown(TINY, (4, 4))["total"]  # 1 patch, T = 2
    student = 2 * 2 * 20032 + local + 100 * 2 * 5
    teacher = 2 * 2 * 20032 + 100 * 2 * 2
    assert f["student_forward"] == student and f["teacher_forward"] == teacher
    assert f["total"] == 3 * student + teacher


@pytest.mark.parametrize("regs,ffn", [(0, "mlp"), (4, "swiglu")])
def test_matches_torch_op_counter(regs, ffn):
    """torch's FlopCounterMode sees the convolution and linear layers (not CPU SDPA): add attention by hand."""
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=4,
                              num_register_tokens=regs, ffn_layer=ffn).eval()
    x = torch.randn(2, 3, 32, 40)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.forward_features(x)
    counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    matmuls = sum(v for k, v in counts.items() if "attention" not in k)
    t = 1 + regs + 4 * 5
    attention = 2 * 3 * (2 * 2 * t * t * 32)  # batch 2, 3 blocks, QK^T and AV
    assert vit_forward_flops(model.config, (32, 40), batch=2) == pytest.approx(matmuls + attention, rel=1e-9)


def test_head_matches_torch_op_counter():
    head = DINOHead(16, 64, hidden_dim=32, bottleneck_dim=8)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        head(torch.randn(5, 16))
    assert 5 * head_flops_per_row(head) == counter.get_total_flops()


def test_masked_patch_tokens_go_through_the_patch_head_of_student_and_teacher():
    base = dino_step_flops(TINY, batch=2, global_size=8, head_row_flops=100)
    f = dino_step_flops(TINY, batch=2, global_size=8, head_row_flops=100, patch_rows=7, patch_head_row_flops=50)
    assert f["student_forward"] == base["student_forward"] + 7 * 50
    assert f["teacher_forward"] == base["teacher_forward"] + 7 * 50
    assert f["total"] == base["total"] + 4 * 7 * 50  # student forward + backward (3x), teacher forward


def test_expected_masked_tokens_match_the_masks_the_sampler_draws():
    import random
    from types import SimpleNamespace

    from dinolab.bench.train_step import StepSize, expected_masked_tokens
    from dinolab.data.masking import sample_ibot_masks

    size = StepSize(batch=16, global_size=224)
    ibot = SimpleNamespace(mask_sample_probability=0.5, mask_ratio_min_max=(0.1, 0.5))
    trainer = SimpleNamespace(objectives=[SimpleNamespace(name="ibot")], config=SimpleNamespace(ibot=ibot),
                              student={"backbone": SimpleNamespace(patch_size=16)})
    rng = random.Random(0)
    drawn = [float(sample_ibot_masks(32, (14, 14), 0.5, (0.1, 0.5), rng).sum()) for _ in range(200)]
    assert expected_masked_tokens(trainer, size) == pytest.approx(sum(drawn) / len(drawn), rel=0.05)
    trainer.objectives = [SimpleNamespace(name="dino")]
    assert expected_masked_tokens(trainer, size) == 0.0
