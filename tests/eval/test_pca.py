import numpy as np
import pytest
import torch

from dinolab.eval.pca import border_mask, first_component_foreground, patch_features, pca_rgb, principal_components
from dinolab.models import VisionTransformer

D = 16


def two_region_features(h=8, w=10, box=(2, 6, 3, 8), seed=0, noise=0.05, split_object=False):
    """Patch features: one cluster inside ``box`` (rows r0:r1, cols c0:c1), another outside.

    With ``split_object`` the object's left and right halves differ along a third direction.
    """
    g = torch.Generator().manual_seed(seed)
    fg_centre = torch.zeros(D)
    fg_centre[0] = 3.0
    bg_centre = torch.zeros(D)
    bg_centre[1] = 3.0
    r0, r1, c0, c1 = box
    obj = torch.zeros(h, w, dtype=torch.bool)
    obj[r0:r1, c0:c1] = True
    f = torch.where(obj[..., None], fg_centre, bg_centre) + noise * torch.randn(h, w, D, generator=g)
    if split_object:
        mid = (c0 + c1) // 2
        f[r0:r1, c0:mid, 2] += 1.0
        f[r0:r1, mid:c1, 2] -= 1.0
    return f, obj


def test_principal_components_match_numpy_svd():
    g = np.random.default_rng(0)
    x = g.normal(size=(200, 6)) * np.array([5.0, 3.0, 2.0, 0.5, 0.2, 0.1])
    x = x @ np.linalg.qr(g.normal(size=(6, 6)))[0]  # rotate so the axes are not the basis
    mean, comps = principal_components(torch.from_numpy(x).float(), k=3)
    np.testing.assert_allclose(mean.numpy(), x.mean(0), atol=1e-5)
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    for c, ref in zip(comps.numpy(), vt[:3]):
        assert abs(float(c @ ref)) == pytest.approx(1.0, abs=1e-4)
        assert c[np.argmax(np.abs(c))] > 0  # the documented sign convention


def test_border_mask():
    m = border_mask(4, 5)
    assert m.sum() == 4 * 5 - 2 * 3
    assert not m[1:3, 1:4].any()


@pytest.mark.parametrize("flip", [False, True])
def test_first_component_separates_two_regions_with_the_object_as_foreground(flip):
    f, obj = two_region_features()
    if flip:  # the sign of a principal component is arbitrary; the border rule must not depend on it
        f = -f
    (fg,) = first_component_foreground([f])
    assert torch.equal(fg, obj)


def test_joint_foreground_over_two_images():
    f1, o1 = two_region_features(box=(1, 4, 1, 5), seed=1)
    f2, o2 = two_region_features(h=6, w=6, box=(2, 5, 2, 5), seed=2)
    fg1, fg2 = first_component_foreground([f1, f2])
    assert torch.equal(fg1, o1) and torch.equal(fg2, o2)


def test_pca_rgb_blacks_out_background_and_refits_on_the_object():
    f, obj = two_region_features(split_object=True)
    out = pca_rgb([f])
    pic = out.pictures[0]
    assert pic.shape == (8, 10, 3)
    assert torch.equal(out.foreground[0], obj)
    assert (pic[~obj] == 0).all()
    fg = pic[obj]
    assert fg.min() >= 0 and fg.max() <= 1
    for c in range(3):  # each component min-max scaled over the foreground
        assert fg[:, c].min().item() == pytest.approx(0.0, abs=1e-6)
        assert fg[:, c].max().item() == pytest.approx(1.0, abs=1e-6)
    # refit on the object: its strongest variation (left vs right half) is the red channel
    left, right = pic[2:6, 3:5, 0], pic[2:6, 6:8, 0]
    assert (left - right).abs().min() > 0.5


def test_pca_rgb_joint_fit_gives_different_objects_different_colours():
    # image 1's object is shifted one way along a third direction, image 2's the other way
    f1, o1 = two_region_features(seed=3)
    f2, o2 = two_region_features(seed=4)
    f1[..., 2] += o1.float()
    f2[..., 2] -= o2.float()
    a, b = pca_rgb([f1, f2]).pictures
    assert abs(a[o1][:, 0].mean() - b[o2][:, 0].mean()) > 0.8
    # fitted one image at a time, each object's red channel is only noise around the middle
    a1, b1 = pca_rgb([f1]).pictures[0], pca_rgb([f2]).pictures[0]
    assert abs(a1[o1][:, 0].mean() - b1[o2][:, 0].mean()) < 0.3


def test_pca_rgb_without_background_removal_colours_every_patch():
    f, _ = two_region_features()
    out = pca_rgb([f], remove_background=False)
    assert out.foreground[0].all()
    assert out.pictures[0][..., 0].max() == pytest.approx(1.0)


def test_patch_features_exclude_registers():
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=24, depth=1, num_heads=2,
                              num_register_tokens=4).eval()
    f = patch_features(model, torch.randn(3, 24, 40))
    assert f.shape == (3, 5, 24)


def test_a_failed_split_falls_back_to_the_full_picture_and_is_flagged():
    a, obj = two_region_features(h=6, w=8, box=(2, 4, 2, 6), seed=5, split_object=True)
    g = torch.Generator().manual_seed(6)
    filled = torch.zeros(4, 4, D)
    filled[..., 0] = 3.0  # the object's features everywhere: an object that fills the frame
    filled += 0.05 * torch.randn(4, 4, D, generator=g)
    empty = torch.zeros(5, 5, D)
    empty[..., 1] = 3.0  # background everywhere
    empty[..., 2] = torch.linspace(-1, 1, 25).reshape(5, 5)  # with some variation to colour
    out = pca_rgb([a, filled, empty])
    assert out.split_failed == [False, True, True]
    assert torch.equal(out.foreground[0], obj) and (out.pictures[0][~obj] == 0).all()
    assert out.foreground[1].all() and out.foreground[2].all()
    assert (out.pictures[2].sum(-1) > 0).any()  # not solid black
    assert pca_rgb([a]).split_failed == [False]
    assert pca_rgb([a], remove_background=False).split_failed == [False]
