import numpy as np
import pytest
import torch

from dinolab.eval.attention import attention_maps, attention_mask, render_attention
from dinolab.eval.viz import grid_size, prepare_image, upsample
from dinolab.models import VisionTransformer


def brute_force_mask(weights: np.ndarray, keep: float) -> tuple[int, float]:
    """Fewest patches holding >= keep of the mass, and the smallest kept value: try k = 1, 2, ..."""
    w = np.sort(weights.ravel() / weights.sum())[::-1]
    for k in range(1, len(w) + 1):
        if w[:k].sum() >= keep:
            return k, w[k - 1]
    raise AssertionError("unreachable")


def test_attention_mask_on_a_hand_made_distribution():
    attn = torch.tensor([[0.05, 0.40], [0.25, 0.30]])
    # 0.40 alone < 0.6; 0.40 + 0.30 = 0.70 >= 0.6, so exactly those two patches
    expected = torch.tensor([[False, True], [False, True]])
    assert torch.equal(attention_mask(attn, 0.6), expected)
    # unnormalised maps are normalised first
    assert torch.equal(attention_mask(attn * 7.0, 0.6), expected)
    # keep=1 keeps every patch with nonzero weight
    assert attention_mask(attn, 1.0).all()


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9])
def test_attention_mask_is_the_minimal_top_set_per_head(keep):
    g = torch.Generator().manual_seed(0)
    attn = torch.rand(5, 7, 9, generator=g) ** 4  # peaky, like real attention
    mask = attention_mask(attn, keep)
    assert mask.shape == attn.shape and mask.dtype == torch.bool
    for head, m in zip(attn.numpy().astype(np.float64), mask.numpy()):
        k, smallest_kept = brute_force_mask(head, keep)
        assert m.sum() == k
        assert head[m].sum() / head.sum() >= keep
        assert head[m].min() >= head[~m].max() if (~m).any() else True
        assert head[m].min() == pytest.approx(smallest_kept * head.sum())


def test_attention_mask_rejects_bad_keep():
    with pytest.raises(ValueError):
        attention_mask(torch.rand(3, 3), 0.0)


class HandSetAttention(torch.nn.Module):
    """A 'model' whose last-layer attention is given: CLS row = [cls, registers..., patches...]."""

    def __init__(self, cls_row: torch.Tensor, num_heads: int, registers: int, patch_size: int = 8):
        super().__init__()
        self.patch_size, self.num_register_tokens, self.num_heads = patch_size, registers, num_heads
        self.cls_row = cls_row
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def get_last_selfattention(self, x):
        t = self.cls_row.shape[-1]
        attn = torch.full((x.shape[0], self.num_heads, t, t), 1.0 / t)
        attn[:, :, 0] = self.cls_row
        return attn


def test_attention_maps_take_the_cls_row_and_drop_registers():
    h, w, r, heads = 3, 4, 2, 2
    patches = torch.arange(1, h * w + 1, dtype=torch.float32)
    # registers carry large, recognisable weights; they must not appear in the maps
    row = torch.cat([torch.tensor([100.0]), torch.tensor([50.0, 60.0]), patches])
    cls_row = torch.stack([row, 2 * row]) / row.sum()
    model = HandSetAttention(cls_row, heads, r)
    maps = attention_maps(model, torch.zeros(3, h * 8 + 5, w * 8 + 7))  # extra pixels are dropped
    assert maps.shape == (heads, h, w)
    expected = patches.reshape(h, w) / row.sum()  # row-major patch order
    torch.testing.assert_close(maps[0], expected)
    torch.testing.assert_close(maps[1], 2 * expected)


def test_real_model_with_registers_gives_patch_grid_maps_summing_to_the_patch_share():
    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4,
                              num_register_tokens=4).eval()
    x = torch.randn(3, 40, 56)
    maps = attention_maps(model, x)
    assert maps.shape == (4, 5, 7)
    full = model.get_last_selfattention(x[None])[0]  # heads×T×T, T = 1 + 4 + 35
    prefix_weight = full[:, 0, :5].sum(-1)
    torch.testing.assert_close(maps.sum(dim=(1, 2)), 1.0 - prefix_weight, rtol=1e-5, atol=1e-6)
    assert (maps >= 0).all()
    batch = attention_maps(model, torch.stack([x, x]))
    assert batch.shape == (2, 4, 5, 7)


def test_grid_size_and_prepare_image():
    # shorter side -> 224; 640 * 224 / 480 = 298.7 -> 18.7 patches -> 19 * 16 = 304
    assert grid_size(480, 640, 16, 224) == (224, 304)
    assert grid_size(100, 100, 14, 224) == (224, 224)
    # a 1×500 strip: the longer side is capped at 4 × 32 = 128, the shorter side is one patch
    assert grid_size(1, 500, 8, 32) == (8, 128)
    img = torch.full((3, 30, 45), 128, dtype=torch.uint8)
    resized, x = prepare_image(img, 8, 32)
    assert resized.shape == (3, 32, 48) and resized.dtype == torch.uint8
    # 128/255 normalised with ImageNet mean/std of the red channel
    assert x[0, 0, 0].item() == pytest.approx((128 / 255 - 0.485) / 0.229, abs=1e-3)


def test_nearest_upsampling_copies_each_patch_to_its_block():
    mask = torch.tensor([[True, False, True], [False, False, True]])
    big = upsample(mask, (4 * 2, 4 * 3), mode="nearest")
    assert big.dtype == torch.bool
    for i in range(2):
        for j in range(3):
            assert big[4 * i: 4 * i + 4, 4 * j: 4 * j + 4].eq(mask[i, j]).all()


def test_render_attention_pictures():
    attn = torch.rand(3, 4, 6)
    image = torch.randint(0, 256, (3, 32, 48), dtype=torch.uint8)
    pics = render_attention(image, attn, keep=0.6)
    assert len(pics.heads) == 3 and pics.heads[0].shape == (32, 48, 3)
    assert pics.mean.shape == (32, 48, 3)
    assert set(np.unique(pics.mask)) <= {0, 255}
    # the mask picture covers exactly the kept patches of the mean map, 8×8 pixels each
    kept = attention_mask(attn.mean(0), 0.6).sum().item()
    assert (pics.mask == 255).sum() == kept * 64
    assert pics.sheet.ndim == 3 and pics.sheet.shape[2] == 3
