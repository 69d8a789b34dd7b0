"""builtin:moving_shapes and the video files: masks, determinism, palette PNGs, frame order."""

import numpy as np
import pytest
import torch
from PIL import Image

from dinolab.data import ImageDataset
from dinolab.data.builtin import load_builtin
from dinolab.data.video import davis_palette, mask_png, open_frames, read_mask, write_video_set
from dinolab.errors import DataError

SPEC = "builtin:moving_shapes?videos=2&frames=5&size=32&objects=3"


def test_videos_frames_and_masks():
    v = load_builtin(SPEC)
    assert v.frames.shape == (2, 5, 3, 32, 32) and v.frames.dtype == np.uint8
    assert v.object_masks.shape == (2, 5, 32, 32)
    assert set(np.unique(v.object_masks)) <= {0, 1, 2, 3}
    assert (v.object_masks > 0).any() and (v.object_masks == 0).any()
    assert not np.array_equal(v.object_masks[0, 0], v.object_masks[0, -1])  # objects move or scale
    assert not v.frames.flags.writeable
    assert v.videos == ["video000", "video001"]


def test_a_video_depends_only_on_seed_and_index():
    small = load_builtin("builtin:moving_shapes?videos=1&frames=5&size=32&objects=3")
    assert np.array_equal(small.frames[0], load_builtin(SPEC).frames[0])
    other = load_builtin("builtin:moving_shapes?videos=1&frames=5&size=32&objects=3&seed=1")
    assert not np.array_equal(small.frames, other.frames)


def test_the_frames_are_an_image_set_too():
    ds = ImageDataset(SPEC)
    assert len(ds) == 10 and ds.classes == ["video000", "video001"]
    assert ds.paths[6].endswith("video001/00001")
    assert ds.masks(6).dtype == torch.bool and ds.masks(6).any()


@pytest.mark.parametrize("option", ["objects=9", "frames=1", "size=8"])
def test_bad_options_are_named(option):
    with pytest.raises(DataError, match=option.split("=")[0]):
        load_builtin(f"builtin:moving_shapes?{option}")


def test_palette_png_round_trip(tmp_path):
    mask = np.array([[0, 1, 2], [3, 0, 255]], np.uint8)
    path = tmp_path / "m.png"
    path.write_bytes(mask_png(mask))
    with Image.open(path) as im:
        assert im.mode == "P"
        assert im.getpalette()[3:6] == [128, 0, 0]
    assert np.array_equal(read_mask(path), mask)
    pal = davis_palette()
    assert pal[3].tolist() == [128, 128, 0] and pal[4].tolist() == [0, 0, 128]


def test_rgb_masks_number_their_colours(tmp_path):
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 2] = (0, 255, 0)
    rgb[1, 0] = (255, 0, 0)
    rgb[1, 1] = (0, 255, 0)
    Image.fromarray(rgb).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png").tolist() == [[0, 0, 1], [2, 1, 0]]  # first appearance, row-major


def test_unreadable_mask_is_named(tmp_path):
    (tmp_path / "m.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="m.png"):
        read_mask(tmp_path / "m.png")


def test_write_video_set_and_read_the_frames_back(tmp_path):
    v = load_builtin(SPEC)
    write_video_set(v, tmp_path)
    frames = open_frames(tmp_path / "JPEGImages" / "video001")
    assert frames.names == ["00000", "00001", "00002", "00003", "00004"]
    read = list(frames)
    assert len(read) == 5 and read[2][0] == "00002"
    assert np.abs(read[2][1].numpy().astype(int) - v.frames[1, 2].astype(int)).mean() < 6  # JPEG, quality 95
    gt = read_mask(tmp_path / "Annotations" / "video001" / "00003.png")
    assert np.array_equal(gt, v.object_masks[1, 3])


def test_frames_are_in_natural_name_order(tmp_path):
    for name in ["f10.png", "f2.png", "f1.png", "notes.txt"]:
        Image.new("RGB", (4, 4)).save(tmp_path / name) if name.endswith("png") else (tmp_path / name).write_text("x")
    assert open_frames(tmp_path).names == ["f1", "f2", "f10"]


def test_two_frames_with_one_name_are_refused(tmp_path):
    for name in ["00001.png", "00001.jpg", "00002.png"]:
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    with pytest.raises(DataError, match="00001.jpg and 00001.png"):
        open_frames(tmp_path)
