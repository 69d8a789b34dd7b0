import math

import pytest
import torch
import torch.nn.functional as F

from dinolab.data import multicrop as M
from dinolab.data.multicrop import MultiCrop, sample_crop_boxes
from dinolab.errors import ConfigError, DataError

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _plain(**kw) -> MultiCrop:
    """Geometry only: no flips, no photometric changes (override as needed)."""
    base = dict(hflip_p=0.0, jitter_p=0.0, gray_p=0.0, blur_p=(0, 0, 0), solarize_p=(0, 0))
    return MultiCrop(**{**base, **kw})


def _unnorm(x):
    return x * STD + MEAN


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- boxes

def test_boxes_lie_inside_the_valid_region_and_follow_scale_and_ratio():
    sizes = torch.tensor([[100, 200], [300, 120], [64, 64], [37, 51]]).repeat(1500, 1)
    h, w = sizes[:, 0], sizes[:, 1]
    for scale in [(0.05, 0.4), (0.4, 1.0)]:
        box = sample_crop_boxes(sizes, scale, (3 / 4, 4 / 3), _gen(1))
        top, left, ch, cw = box.unbind(1)
        assert (top >= 0).all() and (left >= 0).all() and (ch >= 1).all() and (cw >= 1).all()
        assert (top + ch <= h).all() and (left + cw <= w).all()
    # local scale: candidates nearly always fit, so area and aspect follow the requested laws
    box = sample_crop_boxes(sizes, (0.05, 0.4), (3 / 4, 4 / 3), _gen(2))
    top, left, ch, cw = box.unbind(1)
    frac = (ch * cw).double() / (h * w).double()
    ratio = cw.double() / ch.double()
    assert frac.min() > 0.05 * 0.8 and frac.max() < 0.4 * 1.2  # integer rounding of small sides
    assert ratio.min() > 0.75 * 0.8 and ratio.max() < 4 / 3 * 1.2
    assert abs(frac.mean().item() - 0.225) < 0.01  # U(0.05, 0.4)
    assert abs(ratio.log().mean().item()) < 0.02  # log-uniform on a symmetric range
    assert abs((top.double() / (h - ch).clamp(min=1)).mean().item() - 0.5) < 0.03  # uniform position


def test_fallback_is_the_centred_crop_at_the_clamped_ratio():
    # a 20×200 strip cannot hold 90% of its area at aspect ≤ 4/3: all tries fail
    box = sample_crop_boxes(torch.tensor([[20, 200], [200, 20]]), (0.9, 1.0), (3 / 4, 4 / 3), _gen())
    # wide: h = 20, w = round(20·4/3) = 27, left = (200-27)//2 = 86; tall: w = 20, h = round(20/(3/4)) = 27
    assert box.tolist() == [[0, 86, 20, 27], [86, 0, 27, 20]]


# ---------------------------------------------------------------- geometry of the resampled crops

def _linear_images(b, hw):
    """uint8 images I_c(y, x) = y + 2x + 10c (no overflow for hw ≤ 70)."""
    y = torch.arange(hw).view(hw, 1)
    x = torch.arange(hw).view(1, hw)
    img = torch.stack([y + 2 * x + 10 * c for c in range(3)])
    return img.to(torch.uint8).unsqueeze(0).repeat(b, 1, 1, 1)


def _check_linear(crops, boxes, flips, size, hw, tol):
    """Each output pixel equals the linear image at the source point its box maps it to (away from edges)."""
    checked = 0
    t = torch.arange(size, dtype=torch.float64) + 0.5
    for crop, (top, left, h, w), flip in zip(crops.double(), boxes.tolist(), flips.tolist()):
        sy = top + t * h / size - 0.5
        tx = (size - t) if flip else t
        sx = left + tx * w / size - 0.5
        expected = torch.stack([sy[:, None] + 2 * sx[None, :] + 10 * c for c in range(3)]) / 255
        # taps reach ~2 pixels of the sampled mip level (a level is at most 1.33× the scale factor)
        reach = 3 * max(1.0, 1.34 * math.sqrt(h * w) / size) + 1
        inside_y = (sy > reach) & (sy < hw - 1 - reach)
        inside_x = (sx > reach) & (sx < hw - 1 - reach)
        ok = inside_y[:, None] & inside_x[None, :]
        err = (crop - expected).abs().amax(0)[ok]
        checked += ok.sum().item()
        assert err.numel() == 0 or err.max() < tol, (top, left, h, w, flip, err.max())
    return checked


# Bilinear interpolation reproduces a linear image exactly; PyTorch's bicubic (a = -0.75) does not quite
# (up to ~0.05 of a level pixel's step, and a mip level's steps are up to 8 grey levels here).
@pytest.mark.parametrize("mode, tol", [("bilinear", 1e-4), ("bicubic", 1.2 / 255)])
def test_crops_sample_their_boxes_with_flips_and_mip_levels(mode, tol):
    hw, b = 64, 12
    mc = _plain(global_size=16, local_size=6, n_local=3, global_scale=(0.2, 1.0), local_scale=(0.05, 0.5),
                gram_size=40, hflip_p=0.5, interpolation=mode)
    out = mc(_linear_images(b, hw), torch.full((b, 2), hw), _gen(3))
    assert out.global_flips.any() and not out.global_flips.all()
    n = _check_linear(_unnorm(out.global_crops), out.global_boxes, out.global_flips, 16, hw, tol)
    n += _check_linear(_unnorm(out.local_crops), out.local_boxes, out.local_flips, 6, hw, tol)
    # Gram crops: the global boxes and flips at another resolution
    n += _check_linear(_unnorm(out.gram_crops), out.global_boxes, out.global_flips, 40, hw, tol)
    assert n > 2000


def test_full_image_crop_is_the_image_and_a_flip_mirrors_it():
    img = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=_gen())
    sizes = torch.full((2, 2), 16)
    kw = dict(global_size=16, local_size=16, n_local=1, global_scale=(1, 1), local_scale=(1, 1), ratio=(1, 1))
    out = _plain(**kw)(img, sizes, _gen())
    expected = img.float() / 255
    torch.testing.assert_close(_unnorm(out.global_crops), torch.cat([expected, expected]), atol=1e-5, rtol=0)
    torch.testing.assert_close(_unnorm(out.local_crops), expected, atol=1e-5, rtol=0)
    flipped = _plain(hflip_p=1.0, **kw)(img, sizes, _gen())
    torch.testing.assert_close(_unnorm(flipped.global_crops), torch.cat([expected, expected]).flip(-1),
                               atol=1e-5, rtol=0)


def test_upscaling_matches_bicubic_resize():
    img = torch.randint(0, 256, (3, 3, 12, 12), dtype=torch.uint8, generator=_gen())
    out = _plain(global_size=30, n_local=0, global_scale=(1, 1), ratio=(1, 1))(img, torch.full((3, 2), 12), _gen())
    expected = F.interpolate(img.float() / 255, size=30, mode="bicubic", align_corners=False).clamp(0, 1)
    torch.testing.assert_close(_unnorm(out.global_crops[:3]), expected, atol=1e-5, rtol=0)


def test_strong_downscaling_averages_instead_of_aliasing():
    # A one-pixel checkerboard shrunk 4x: plain bicubic sampling would return a pattern of 0s and 1s;
    # an anti-aliased resize returns the mean, 0.5.
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    board = (((yy + xx) % 2) * 255).to(torch.uint8).expand(2, 3, 64, 64).contiguous()
    out = _plain(global_size=16, local_size=32, n_local=1, global_scale=(1, 1), local_scale=(1, 1), ratio=(1, 1))(
        board, torch.full((2, 2), 64), _gen())
    torch.testing.assert_close(_unnorm(out.global_crops), torch.full((4, 3, 16, 16), 0.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(_unnorm(out.local_crops), torch.full((2, 3, 32, 32), 0.5), atol=1e-5, rtol=0)
    # a 2x reduction of a smooth image is exactly the 2×2 block mean
    img = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8, generator=_gen())
    out = _plain(global_size=16, n_local=0, global_scale=(1, 1), ratio=(1, 1))(img, torch.full((1, 2), 32), _gen())
    block_mean = (img.double() / 255).view(1, 3, 16, 2, 16, 2).mean(dim=(3, 5))
    torch.testing.assert_close(_unnorm(out.global_crops[:1]).double(), block_mean, atol=1e-5, rtol=0)


def test_mip_atlas_packs_each_level_with_its_margin_and_zeros_the_rest():
    g = _gen(5)
    img = torch.randint(0, 256, (2, 3, 20, 12), dtype=torch.uint8, generator=g)
    x = torch.rand(2, 3, 20, 12, generator=g)
    assert torch.equal(M._half(x.clone()), F.avg_pool2d(x, 2))  # the fast 2×2 mean is avg_pool2d's, bit for bit
    atlas = M._MipAtlas(img, 2)
    m = M._MARGIN
    covered = torch.zeros(atlas.tensor.shape[-2:], dtype=torch.bool)
    level = img.double() / 255
    for k, (y, x0) in enumerate(atlas.origins):
        y, x0 = int(y), int(x0)
        h, w = level.shape[-2:]
        torch.testing.assert_close(atlas.tensor[..., y:y + h, x0:x0 + w].double(), level, atol=1e-6, rtol=0)
        # the margin replicates the level's edge pixels
        torch.testing.assert_close(atlas.tensor[..., y - m, x0:x0 + w].double(), level[..., 0, :], atol=1e-6, rtol=0)
        torch.testing.assert_close(atlas.tensor[..., y:y + h, x0 + w + m - 1].double(), level[..., :, -1],
                                   atol=1e-6, rtol=0)
        covered[y - m:y + h + m, x0 - m:x0 + w + m] = True
        if k < 2:
            level = level.view(2, 3, h // 2, 2, w // 2, 2).mean(dim=(3, 5))
    assert len(atlas.origins) == 3 and (~covered).any()
    assert (atlas.tensor[..., ~covered] == 0).all()


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_padding_never_leaks_into_crops(mode):
    g = _gen(5)
    b, hp = 16, 48
    sizes = torch.randint(8, hp + 1, (b, 2), generator=g)
    sizes[0] = torch.tensor([hp, 9])
    img = torch.empty(b, 3, hp, hp, dtype=torch.uint8)
    img[:, 0], img[:, 1:] = 255, 0  # pure red padding
    for i, (h, w) in enumerate(sizes.tolist()):
        gray = torch.randint(0, 121, (h, w), generator=g, dtype=torch.uint8)
        img[i, :, :h, :w] = gray  # gray content 0..120: never red
    out = _plain(global_size=20, local_size=8, n_local=4, global_scale=(0.05, 1), hflip_p=0.5, gram_size=32,
                 interpolation=mode)(img, sizes, g)
    for crops in (out.global_crops, out.local_crops, out.gram_crops):
        x = _unnorm(crops)
        torch.testing.assert_close(x[:, 0], x[:, 1], atol=2e-5, rtol=0)
        torch.testing.assert_close(x[:, 0], x[:, 2], atol=2e-5, rtol=0)
        if mode == "bilinear":  # no overshoot: every value is an average of content values
            assert x.max() <= 120 / 255 + 1e-5
    h, w = sizes[:, :1].repeat(2, 1), sizes[:, 1:].repeat(2, 1)
    top, left, ch, cw = out.global_boxes.unbind(1)
    assert (top[:, None] + ch[:, None] <= h).all() and (left[:, None] + cw[:, None] <= w).all()


# ---------------------------------------------------------------- layout, normalisation, randomness

def test_shapes_crop_major_order_normalisation_and_second_crop_solarize():
    b = 5
    colours = torch.tensor([[10 + 40 * i, 255 - 40 * i, 200] for i in range(b)], dtype=torch.uint8)
    img = colours.view(b, 3, 1, 1).expand(b, 3, 24, 24).contiguous()
    mc = _plain(global_size=12, local_size=6, n_local=3, solarize_p=(0.0, 1.0))
    out = mc(img, torch.full((b, 2), 24), _gen())
    assert out.global_crops.shape == (2 * b, 3, 12, 12) and out.local_crops.shape == (3 * b, 3, 6, 6)
    assert out.gram_crops is None and out.global_crops.dtype == torch.float32
    c = colours.float() / 255
    solarized = torch.where(c >= 128 / 255, 1 - c, c)
    for i in range(b):
        normalised = (c[i] - MEAN.flatten()) / STD.flatten()
        torch.testing.assert_close(out.global_crops[i], normalised.view(3, 1, 1).expand(3, 12, 12))
        torch.testing.assert_close(_unnorm(out.global_crops[b + i: b + i + 1])[0],
                                   solarized[i].view(3, 1, 1).expand(3, 12, 12))
        for k in range(3):
            torch.testing.assert_close(_unnorm(out.local_crops[k * b + i: k * b + i + 1])[0],
                                       c[i].view(3, 1, 1).expand(3, 6, 6))


def _batch(b=6, hw=40, seed=0):
    g = _gen(seed)
    return torch.randint(0, 256, (b, 3, hw, hw), dtype=torch.uint8, generator=g), \
        torch.randint(hw // 2, hw + 1, (b, 2), generator=g)


def test_same_seed_same_crops_other_seed_different_and_exact_resume():
    img, sizes = _batch()
    mc = MultiCrop(global_size=16, local_size=8, n_local=2, gram_size=24)
    a, b = mc(img, sizes, _gen(7)), mc(img, sizes, _gen(7))
    for f in ("global_crops", "local_crops", "gram_crops", "global_boxes", "local_boxes"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert not torch.equal(a.global_crops, mc(img, sizes, _gen(8)).global_crops)
    g = _gen(9)
    mc(img, sizes, g)
    state = g.get_state()
    first = mc(img, sizes, g)
    g2 = torch.Generator()
    g2.set_state(state)
    assert torch.equal(first.global_crops, mc(img, sizes, g2).global_crops)


def test_chunked_processing_gives_the_same_result(monkeypatch):
    img, sizes = _batch(b=7)
    mc = MultiCrop(global_size=16, local_size=8, n_local=2, gram_size=20)
    whole = mc(img, sizes, _gen(3))
    monkeypatch.setattr(M, "_CPU_CHUNK_ELEMENTS", 1)  # one image per chunk
    chunked = mc(img, sizes, _gen(3))
    for f in ("global_crops", "local_crops", "gram_crops"):
        torch.testing.assert_close(getattr(chunked, f), getattr(whole, f), atol=1e-4, rtol=0)  # float rounding


def _roughness(x):
    d = (x[..., 1:] - x[..., :-1]).abs().mean(dim=(1, 2, 3))
    return d / x.std(dim=(1, 2, 3))


def test_blur_is_applied_with_the_per_crop_probabilities():
    b = 300
    img = torch.randint(0, 256, (b, 3, 32, 32), dtype=torch.uint8, generator=_gen())
    sizes = torch.full((b, 2), 32)
    kw = dict(global_size=16, local_size=12, n_local=2, global_scale=(0.6, 1), local_scale=(0.3, 0.5),
              blur_sigma=(1.5, 2.0))
    never = _plain(**kw)(img, sizes, _gen(1))
    always = _plain(**kw, blur_p=(1, 1, 1))(img, sizes, _gen(1))
    for group in ("global_crops", "local_crops"):
        sharp, soft = _roughness(getattr(never, group)), _roughness(getattr(always, group))
        assert soft.max() < sharp.min()  # blurred and unblurred crops are told apart by roughness
    threshold = {g: (_roughness(getattr(never, g)).min() + _roughness(getattr(always, g)).max()) / 2
                 for g in ("global_crops", "local_crops")}
    out = _plain(**kw, blur_p=(0.2, 0.7, 0.5))(img, sizes, _gen(2))
    blurred_g = _roughness(out.global_crops) < threshold["global_crops"]
    blurred_l = _roughness(out.local_crops) < threshold["local_crops"]
    assert abs(blurred_g[:b].float().mean().item() - 0.2) < 0.08
    assert abs(blurred_g[b:].float().mean().item() - 0.7) < 0.08
    assert abs(blurred_l.float().mean().item() - 0.5) < 0.08


def test_gram_crops_share_global_boxes_and_skip_photometric_changes():
    img, sizes = _batch(b=5, seed=4)
    heavy = MultiCrop(global_size=16, local_size=8, n_local=1, gram_size=32, jitter_p=1.0, gray_p=1.0,
                      blur_p=(1, 1, 1), solarize_p=(1, 1))
    clean = _plain(global_size=16, local_size=8, n_local=1, gram_size=32, hflip_p=0.5)
    a, b = heavy(img, sizes, _gen(6)), clean(img, sizes, _gen(6))
    assert torch.equal(a.global_boxes, b.global_boxes) and torch.equal(a.global_flips, b.global_flips)
    torch.testing.assert_close(a.gram_crops, b.gram_crops)
    assert not torch.allclose(a.global_crops, b.global_crops, atol=1e-3)


# ---------------------------------------------------------------- presets and errors

def test_presets():
    v2 = MultiCrop.dinov2()
    assert v2.blur_p == (0.0, 0.9, 0.5) and v2.global_scale == (0.32, 1.0) and v2.local_scale == (0.05, 0.32)
    assert v2.photometric.kernel_size == 9
    assert MultiCrop.dinov2(faithful_blur_bug=False).blur_p == (1.0, 0.1, 0.5)
    v1 = MultiCrop.dino_v1()
    assert v1.blur_p == (1.0, 0.1, 0.5) and v1.global_scale == (0.4, 1.0) and v1.photometric.kernel_size == 13
    v3 = MultiCrop.dinov3(gram_size=512, hflip_p=0.0)
    assert (v3.global_size, v3.local_size, v3.gram_size, v3.hflip_p) == (256, 112, 512, 0.0)
    assert v3.solarize_p == (0.0, 0.2) and v3.photometric.jitter == (0.4, 0.4, 0.2, 0.1)


def test_invalid_inputs_raise_user_errors():
    img, sizes = _batch(b=2)
    mc = MultiCrop(global_size=16, local_size=8, n_local=1)
    with pytest.raises(DataError, match="uint8"):
        mc(img.float(), sizes, _gen())
    with pytest.raises(DataError, match="sizes"):
        mc(img, torch.tensor([[41, 10], [10, 10]]), _gen())
    with pytest.raises(ConfigError, match="global_scale"):
        MultiCrop(global_scale=(0.5, 0.2))
    with pytest.raises(ConfigError, match="interpolation"):
        MultiCrop(interpolation="nearest")
    with pytest.raises(ConfigError, match="blur_p"):
        MultiCrop(blur_p=(1.0, 0.1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    img, sizes = _batch(b=4)
    mc = MultiCrop(global_size=16, local_size=8, n_local=2, gram_size=24)
    cpu = mc(img, sizes, _gen(1))
    gpu = mc(img.cuda(), sizes.cuda(), _gen(1))
    assert gpu.global_crops.device.type == "cuda"
    for f in ("global_crops", "local_crops", "gram_crops"):
        torch.testing.assert_close(getattr(gpu, f).cpu(), getattr(cpu, f), atol=1e-3, rtol=0)


# ---------------------------------------------------------------- pad (zoom-out and translation)

def test_pad_sets_the_image_on_a_canvas_of_its_border_colour():
    img = torch.full((1, 3, 16, 16), 250, dtype=torch.uint8)
    img[0, :, :, 7:9] = 0  # a stroke from the top edge to the bottom: replicating the edge would streak it
    img[0, 0, 3:6, 3:6] = 120
    big = torch.zeros(1, 3, 20, 24, dtype=torch.uint8)  # padded batch: the valid region is the top-left 16x16
    big[..., :16, :16] = img
    mc = _plain(global_size=24, local_size=8, n_local=1, global_scale=(1.0, 1.0), ratio=(1.0, 1.0),
                pad=0.25, interpolation="bilinear")
    crops = mc(big, torch.tensor([[16, 16]]), _gen())
    expected = torch.full((3, 24, 24), 250 / 255)  # 16 px + 4 px of paper on each side, whole canvas crop
    expected[:, 4:20, 4:20] = img[0] / 255
    assert torch.equal(crops.global_boxes, torch.tensor([[-4, -4, 24, 24]] * 2))  # in the source's pixels
    torch.testing.assert_close(_unnorm(crops.global_crops)[0], expected, atol=1e-5, rtol=0)
    top, left, h, w = crops.local_boxes[0].tolist()
    assert -4 <= top and top + h <= 20 and -4 <= left and left + w <= 20


def test_pad_places_the_object_at_varied_positions_and_sizes():
    img = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    img[0, :, 8:24, 8:24] = 0  # a black square on white
    mc = _plain(global_size=32, local_size=8, n_local=0, global_scale=(0.4, 1.0), pad=0.5,
                interpolation="bilinear")
    crops = mc(img.expand(200, -1, -1, -1).contiguous(), torch.tensor([[32, 32]] * 200), _gen(3))
    dark = _unnorm(crops.global_crops)[:, 0] < 0.5  # (400, 32, 32)
    rows, cols = torch.arange(32.0), torch.arange(32.0)
    area = dark.float().sum((1, 2))
    cy = (dark.float().sum(2) * rows).sum(1) / area.clamp(min=1)
    cx = (dark.float().sum(1) * cols).sum(1) / area.clamp(min=1)
    seen = area > 0
    # a 64 px canvas, crops of 40-64 px: the 16 px square is 8-12.8 px in the 32 px crop (16-32 px without pad)
    assert 55 < area.min() < 80 and 140 < area.max() < 180
    assert cy[seen].std() > 3 and cx[seen].std() > 3  # and moved about
    with pytest.raises(ConfigError, match="pad=-0.1"):
        MultiCrop(pad=-0.1)


@pytest.mark.parametrize("sizes", [[[12, 10]] * 3, [[12, 10], [9, 12], [12, 12]]])
def test_pad_fills_each_canvas_with_its_own_ring_median(sizes):
    # one size takes the batched path, mixed sizes the per-image one: both give each image its own fill
    g = _gen(7)
    images = torch.randint(0, 256, (3, 3, 12, 12), dtype=torch.uint8, generator=g)
    sizes = torch.tensor(sizes)
    out, new_sizes, offsets = M._pad_images(images, sizes, 0.5)
    for i, (h, w) in enumerate(sizes.tolist()):
        img = images[i, :, :h, :w]
        ph, pw = round(h * 0.5), round(w * 0.5)
        assert offsets[i].tolist() == [ph, pw] and new_sizes[i].tolist() == [h + 2 * ph, w + 2 * pw]
        ring = torch.cat([img[:, 0], img[:, -1], img[:, :, 0], img[:, :, -1]], 1).sort(dim=1).values
        fill = ring[:, (ring.shape[1] - 1) // 2]  # the lower median, as torch.median
        expected = fill[:, None, None].expand(3, h + 2 * ph, w + 2 * pw).clone()
        expected[:, ph:ph + h, pw:pw + w] = img
        assert torch.equal(out[i, :, :h + 2 * ph, :w + 2 * pw], expected)
