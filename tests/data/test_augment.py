import colorsys
import itertools

import numpy as np
import pytest
import torch

from dinolab.data import augment as A
from dinolab.errors import ConfigError


def _rand(n=3, h=5, w=6, seed=0):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- reference formulas, per image, in numpy

def _ref_gray(img):  # 3×H×W
    return 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]


def _ref_brightness(img, f):
    return np.clip(img * f, 0, 1)


def _ref_contrast(img, f):
    return np.clip(f * img + (1 - f) * _ref_gray(img).mean(), 0, 1)


def _ref_saturation(img, f):
    return np.clip(f * img + (1 - f) * _ref_gray(img)[None], 0, 1)


def _ref_hue(img, shift):
    out = np.empty_like(img)
    for i, j in itertools.product(range(img.shape[1]), range(img.shape[2])):
        h, s, v = colorsys.rgb_to_hsv(*img[:, i, j])
        out[:, i, j] = colorsys.hsv_to_rgb((h + shift) % 1.0, s, v)
    return out


def test_grayscale_uses_luma_weights_and_keeps_three_channels():
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.2, 0.4, 0.6]]).T.reshape(1, 3, 1, 4)
    g = A.grayscale(x)
    mixed = 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6
    torch.testing.assert_close(g.flatten(), torch.tensor([0.299, 0.587, 0.114, mixed]))
    params = A.Photometric(jitter_p=0, gray_p=1.0).sample(1, 0.0, 0.0, torch.Generator().manual_seed(0))
    y = A.Photometric(jitter_p=0, gray_p=1.0)(x.clone(), params)
    assert y.shape == x.shape
    torch.testing.assert_close(y, g.expand_as(x))


def test_solarize_and_normalize():
    x = torch.tensor([0.0, 0.3, 0.5, 0.502, 0.9]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    y = A.solarize(x, 128 / 255)
    expected = [0.0, 0.3, 0.5, 1 - 0.502, 1 - 0.9]  # 0.5 < 128/255 = 0.50196 <= 0.502
    torch.testing.assert_close(y[0, 0, 0], torch.tensor(expected))
    z = A.normalize(x.clone(), (0.5, 0.25, 0.0), (0.5, 0.25, 2.0))
    torch.testing.assert_close(z[0, :, 0, 4], torch.tensor([(0.9 - 0.5) / 0.5, (0.9 - 0.25) / 0.25, 0.9 / 2.0]))


@pytest.mark.parametrize("op, ref", [(A.adjust_brightness, _ref_brightness), (A.adjust_contrast, _ref_contrast),
                                     (A.adjust_saturation, _ref_saturation)])
def test_blend_ops_match_reference_per_image(op, ref):
    x = _rand()
    f = torch.tensor([0.6, 1.0, 1.4])
    y = op(x, f)
    for i in range(3):
        np.testing.assert_allclose(y[i].numpy(), ref(x[i].numpy().astype(np.float64), float(f[i])), atol=1e-6)


def test_hue_of_pure_colours():
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(A.adjust_hue(red, 1 / 3).flatten(), torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(A.adjust_hue(red, -1 / 3).flatten(), torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(A.adjust_hue(red, 1 / 6).flatten(), torch.tensor([1.0, 1.0, 0.0]))
    grey = torch.full((1, 3, 1, 1), 0.4)
    torch.testing.assert_close(A.adjust_hue(grey, 0.3), grey)


def test_hue_matches_colorsys_for_random_colours_and_ties():
    x = _rand(3, 4, 4, seed=1)
    x[0, :, 0, 0] = torch.tensor([0.5, 0.5, 0.2])  # red/green tie
    x[0, :, 0, 1] = torch.tensor([0.1, 0.7, 0.7])  # green/blue tie
    shifts = torch.tensor([0.1, -0.1, 0.45])
    y = A.adjust_hue(x, shifts)
    for i in range(3):
        np.testing.assert_allclose(y[i].numpy(), _ref_hue(x[i].numpy().astype(np.float64), float(shifts[i])),
                                   atol=1e-5)


def test_color_jitter_applies_each_images_own_order():
    refs = [_ref_brightness, _ref_contrast, _ref_saturation, _ref_hue]
    x = _rand(5, 4, 4, seed=2)
    factors = torch.tensor([[1.3, 0.7, 1.2, 0.08], [0.6, 1.4, 0.8, -0.1], [1.1, 1.1, 1.1, 0.05],
                            [0.8, 1.3, 0.9, 0.02], [1.4, 0.6, 1.2, -0.07]])
    order = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [-1, -1, -1, -1], [1, 3, 0, 2], [2, 0, 3, 1]])
    y = A.color_jitter(x.clone(), factors, order)
    for i in range(5):
        expected = x[i].numpy().astype(np.float64)
        for op in order[i].tolist():
            if op >= 0:
                expected = refs[op](expected, float(factors[i, op]))
        np.testing.assert_allclose(y[i].numpy(), expected, atol=1e-5)


def test_gaussian_blur_matches_direct_2d_convolution_with_reflect_padding():
    x = _rand(2, 9, 11, seed=3)
    sigma = torch.tensor([0.7, 1.6])
    k = 7
    y = A.gaussian_blur(x, sigma, k)
    r = k // 2
    for i in range(2):
        t = np.arange(-r, r + 1)
        g1 = np.exp(-t**2 / (2 * float(sigma[i]) ** 2))
        g2 = np.outer(g1, g1) / g1.sum() ** 2
        pad = np.pad(x[i].numpy().astype(np.float64), ((0, 0), (r, r), (r, r)), mode="reflect")
        expected = np.zeros((3, 9, 11))
        for dy, dx in itertools.product(range(k), range(k)):
            expected += g2[dy, dx] * pad[:, dy: dy + 9, dx: dx + 11]
        np.testing.assert_allclose(y[i].numpy(), expected, atol=1e-5)
    assert A.blur_kernel_size(2.0) == 13


def test_sample_draws_probabilities_ranges_and_uniform_orders():
    aug = A.Photometric(jitter_p=0.8, jitter=(0.4, 0.3, 0.2, 0.1), gray_p=0.2, blur_sigma=(0.5, 1.5))
    n = 24000
    blur_p = torch.tensor([0.1, 0.9]).repeat_interleave(n // 2)
    p = aug.sample(n, blur_p, 0.25, torch.Generator().manual_seed(0))
    jit = p.jitter_order[:, 0] >= 0
    assert abs(jit.float().mean().item() - 0.8) < 0.015
    assert abs(p.gray.float().mean().item() - 0.2) < 0.015
    assert abs(p.solarize.float().mean().item() - 0.25) < 0.015
    assert abs(p.blur[: n // 2].float().mean().item() - 0.1) < 0.015
    assert abs(p.blur[n // 2:].float().mean().item() - 0.9) < 0.015
    f = p.jitter_factors
    for j, (lo, hi) in enumerate([(0.6, 1.4), (0.7, 1.3), (0.8, 1.2), (-0.1, 0.1)]):
        assert lo <= f[:, j].min() and f[:, j].max() <= hi
        assert f[:, j].min() < lo + 0.01 and f[:, j].max() > hi - 0.01
    assert 0.5 <= p.blur_sigma.min() and p.blur_sigma.max() <= 1.5
    orders = p.jitter_order[jit]
    assert (orders.sort(dim=1).values == torch.arange(4)).all()
    counts = torch.unique(orders, dim=0, return_counts=True)[1]
    assert len(counts) == 24 and counts.min() > 0.7 * len(orders) / 24


def test_photometric_applies_blur_only_to_selected_images():
    aug = A.Photometric(jitter_p=0.0, gray_p=0.0, blur_sigma=(1.0, 1.0), blur_kernel_size=5)
    x = _rand(4, 8, 8, seed=4)
    params = aug.sample(4, torch.tensor([1.0, 0.0, 1.0, 0.0]), 0.0, torch.Generator().manual_seed(0))
    y = aug(x.clone(), params)
    torch.testing.assert_close(y[[1, 3]], x[[1, 3]])
    torch.testing.assert_close(y[[0, 2]], A.gaussian_blur(x[[0, 2]], 1.0, 5))


def test_invalid_settings_raise_config_errors():
    with pytest.raises(ConfigError, match="jitter_p"):
        A.Photometric(jitter_p=1.5)
    with pytest.raises(ConfigError, match="blur_kernel_size"):
        A.Photometric(blur_kernel_size=4)
