import numpy as np
import pytest
import torch

from dinolab.data import ImageDataset, load_builtin
from dinolab.errors import DataError

# Per-class counts of scikit-learn's digits data set (UCI optdigits test part), as documented.
DIGIT_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_digits_count_labels_and_pixels():
    ds = ImageDataset("builtin:digits")
    assert len(ds) == 1797 and ds.classes == [str(d) for d in range(10)]
    assert np.bincount(ds.labels).tolist() == DIGIT_COUNTS
    img = ds.load(0)
    assert img.shape == (3, 64, 64) and img.dtype == torch.uint8
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])  # gray as RGB
    assert ds.paths[0] == "builtin:digits/0000" and ds.paths[-1] == "builtin:digits/1796"


def test_digits_are_the_upscaled_sklearn_digits():
    from sklearn.datasets import load_digits

    raw = load_digits().images[:20]  # 8x8, 0 = paper .. 16 = ink
    ds = ImageDataset("builtin:digits?size=32")
    for i in range(20):
        img = ds.load(i)[0].double()
        blocks = img.reshape(8, 4, 8, 4).mean(dim=(1, 3))  # back to 8x8
        expected = 255.0 * (1.0 - torch.from_numpy(raw[i]) / 16.0)  # dark ink on white
        corr = np.corrcoef(blocks.flatten().numpy(), expected.flatten().numpy())[0, 1]
        assert corr > 0.9


def shape_ds(n=60, size=48, seed=0):
    return ImageDataset(f"builtin:shapes?n={n}&size={size}&seed={seed}")


# Channels expected high (>150) and low (<110) for each caption colour.
COLOUR_CHANNELS = {"red": ("r", "gb"), "green": ("g", "rb"), "blue": ("b", "rg"), "yellow": ("rg", "b"),
                   "magenta": ("rb", "g"), "cyan": ("gb", "r"), "orange": ("r", "b")}


def test_shapes_masks_captions_and_labels_agree_with_the_pixels():
    ds = shape_ds()
    assert len(ds) == 60 and len(ds.classes) >= 4 and ds.has_masks
    assert np.bincount(ds.labels).min() == 60 // len(ds.classes)  # balanced
    for i in range(len(ds)):
        img, mask = ds.load(i), ds.masks(i)
        assert img.shape == (3, 48, 48) and mask.shape == (48, 48) and mask.dtype == torch.bool
        assert 0.02 < mask.float().mean() < 0.6
        obj = img[:, mask].T  # object pixels, K x 3
        colour = obj[0]
        assert (obj == colour).all()  # flat fill exactly on the mask
        background = img[:, ~mask].T
        assert (background == colour).all(dim=1).float().mean() < 0.01
        words = ds.captions[i].split()
        assert words[2] == ds.classes[ds.labels[i]] and words[-1] == "background"
        high, low = COLOUR_CHANNELS[words[1]]
        for c in high:
            assert colour["rgb".index(c)] > 150, ds.captions[i]
        for c in low:
            assert colour["rgb".index(c)] < 110, ds.captions[i]


def test_shapes_geometry():
    ds = shape_ds(n=100, size=96)
    fill = {c: [] for c in ds.classes}
    for i in range(len(ds)):
        m = ds.masks(i).numpy()
        ys, xs = np.nonzero(m)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        fill[ds.classes[ds.labels[i]]].append(m.sum() / box)
    assert all(0.72 < f < 0.85 for f in fill["circle"])  # pi/4 = 0.785 for a disc in its box
    assert all(0.45 < f <= 1.0 for f in fill["square"])  # 0.5 (rotated 45 degrees) .. 1 (aligned)
    assert np.mean(fill["star"]) < np.mean(fill["circle"])


def test_shapes_are_deterministic_and_prefix_stable():
    a, b, c = shape_ds(n=20, seed=3), shape_ds(n=40, seed=3), shape_ds(n=20, seed=4)
    for i in range(20):
        assert torch.equal(a.load(i), b.load(i)) and a.captions[i] == b.captions[i]
    assert any(not torch.equal(a.load(i), c.load(i)) for i in range(20))


def test_shapes_default_size_and_cache():
    s = load_builtin("builtin:shapes")
    assert s.images.shape == (1000, 3, 96, 96) and s.masks.shape == (1000, 96, 96)
    assert load_builtin("builtin:shapes") is s
    assert not s.images.flags.writeable
    img = ImageDataset("builtin:shapes").load(0)
    img[:] = 0  # the caller's copy, not the cached array
    assert s.images[0].any()


def test_builtin_errors_name_the_fix():
    with pytest.raises(DataError, match="did you mean builtin:shapes"):
        ImageDataset("builtin:shape")
    with pytest.raises(DataError, match="unknown option 'count'.*takes n"):
        ImageDataset("builtin:shapes?count=5")
    with pytest.raises(DataError, match="must be an integer"):
        ImageDataset("builtin:shapes?n=many")
    with pytest.raises(DataError, match="between 16"):
        ImageDataset("builtin:shapes?size=4")


def _ink_box(img: np.ndarray) -> tuple[int, int]:
    """(top, left) of the bounding box of the pixels darker than paper in a 2-D uint8 image."""
    rows, cols = np.nonzero(img < 255)
    return int(rows.min()), int(cols.min())


def test_digits_on_a_canvas_are_the_same_digits_moved_with_their_labels():
    plain = load_builtin("builtin:digits")
    centred = load_builtin("builtin:digits?canvas=96")
    moved = load_builtin("builtin:digits?canvas=96&shift=random")
    assert centred.images.shape == moved.images.shape == (1797, 3, 96, 96)
    assert (moved.labels == plain.labels).all() and moved.classes == plain.classes
    assert (centred.images[:, :, 16:80, 16:80] == plain.images).all()
    offsets = []
    for i in range(60):
        tile, img = plain.images[i, 0], moved.images[i, 0]
        (t0, l0), (t1, l1) = _ink_box(tile), _ink_box(img)
        top, left = t1 - t0, l1 - l0  # where the 64 px tile sits in the canvas
        assert 0 <= top <= 32 and 0 <= left <= 32
        assert (img[top:top + 64, left:left + 64] == tile).all()
        rest = img.copy()
        rest[top:top + 64, left:left + 64] = 255
        assert (rest == 255).all()  # blank paper around the digit
        offsets.append((top, left))
    offsets = np.array(offsets)
    assert len({tuple(o) for o in offsets}) > 40 and offsets.std(axis=0).min() > 6  # spread, not centred
    assert offsets.min() <= 4 and offsets.max() >= 28


def test_shifted_digits_are_deterministic_per_seed():
    from dinolab.data.builtin import _digits

    a = load_builtin("builtin:digits?size=16&canvas=32&shift=random").images.copy()
    _digits.cache_clear()
    b = load_builtin("builtin:digits?size=16&canvas=32&shift=random").images
    c = load_builtin("builtin:digits?size=16&canvas=32&shift=random&seed=1").images
    assert (a == b).all() and not (a == c).all()


@pytest.mark.parametrize("spec, message", [
    ("builtin:digits?shift=random", "needs a canvas"),
    ("builtin:digits?canvas=32", "must be at least size=64"),
    ("builtin:digits?canvas=96&shift=left", "'center' or 'random'"),
])
def test_bad_canvas_options_are_named(spec, message):
    with pytest.raises(DataError, match=message):
        load_builtin(spec)
