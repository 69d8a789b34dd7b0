import struct

import numpy as np
import pytest
import torch
from PIL import Image

from dinolab.data.decode import UnreadableImage, decode_image
from dinolab.errors import DataError


def hwc(t: torch.Tensor) -> np.ndarray:
    assert t.dtype == torch.uint8 and t.dim() == 3 and t.shape[0] == 3
    return t.permute(1, 2, 0).numpy()


def test_plain_png_is_exact(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    np.testing.assert_array_equal(hwc(decode_image(tmp_path / "a.png")), a)


def test_exif_orientation_6_is_rotated_clockwise(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[...] = (0, 0, 255)
    stored[:10, :20] = (255, 0, 0)  # top-left quadrant red
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = hwc(decode_image(tmp_path / "r.jpg")).astype(int)
    expected = np.rot90(stored, k=-1).astype(int)  # 90 degrees clockwise: 40 tall, 20 wide
    assert out.shape == (40, 20, 3)
    # JPEG is lossy: compare away from the colour edges.
    assert np.abs(out[2:18, 12:18] - expected[2:18, 12:18]).max() < 30  # red now top-right
    assert np.abs(out[22:38, 2:8] - expected[22:38, 2:8]).max() < 30


def test_grayscale_la_and_rgba_are_composited_on_white(make_image, tmp_path):
    g = hwc(decode_image(make_image(tmp_path / "g.png", (3, 2), "L", color=77)))
    assert (g == 77).all()
    la = hwc(decode_image(make_image(tmp_path / "la.png", (3, 2), "LA", color=(90, 0))))
    assert (la == 255).all()  # fully transparent -> white
    rgba = hwc(decode_image(make_image(tmp_path / "rgba.png", (3, 2), "RGBA", color=(255, 0, 0, 128))))
    a = 128 / 255
    expected = [round(255 * a + 255 * (1 - a)), round(255 * (1 - a)), round(255 * (1 - a))]
    assert (rgba == expected).all()


def test_palette_with_transparent_index(tmp_path):
    im = Image.new("P", (12, 10), 0)
    im.putpalette([0, 0, 0, 200, 30, 40] + [0] * (254 * 3))
    im.paste(1, (0, 0, 6, 10))
    im.save(tmp_path / "p.png", transparency=0)
    out = hwc(decode_image(tmp_path / "p.png"))
    assert (out[:, :6] == (200, 30, 40)).all()
    assert (out[:, 6:] == 255).all()  # index 0 is transparent, not black


def test_cmyk_jpeg_becomes_rgb(make_image, tmp_path):
    # C=0, M=255, Y=255, K=0 is red; the naive conversion gives (255 - C, 255 - M, 255 - Y).
    out = hwc(decode_image(make_image(tmp_path / "c.jpg", (16, 16), "CMYK", color=(0, 255, 255, 0)))).astype(int)
    assert np.abs(out - [255, 0, 0]).max() < 12


def test_sixteen_bit_png_scales_to_eight_bits(tmp_path):
    values = np.array([[0, 257 * 100, 65535, 257 * 3]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = hwc(decode_image(tmp_path / "g16.png"))
    np.testing.assert_array_equal(out[0, :, 0], [0, 100, 255, 3])  # not clipped at 255
    assert (out == out[..., :1]).all()


def test_thirty_two_bit_image_is_stretched(tmp_path):
    values = np.array([[0, 70000, 140000]], np.int32)
    Image.fromarray(values, mode="I").save(tmp_path / "i32.tif")
    out = hwc(decode_image(tmp_path / "i32.tif"))
    np.testing.assert_array_equal(out[0, :, 1], [0, 128, 255])  # min..max -> 0..255


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((250, 0, 0), (0, 0, 250))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=50)
    out = hwc(decode_image(tmp_path / "a.gif")).astype(int)
    assert np.abs(out - [250, 0, 0]).max() <= 4


@pytest.mark.parametrize("size", [(1, 1), (500, 1), (1, 500)])
def test_tiny_and_elongated_images(make_image, tmp_path, size):
    out = decode_image(make_image(tmp_path / "x.png", size))
    assert out.shape == (3, size[1], size[0])


def test_zero_byte_file(tmp_path):
    (tmp_path / "e.jpg").write_bytes(b"")
    with pytest.raises(UnreadableImage) as e:
        decode_image(tmp_path / "e.jpg")
    assert e.value.path == str(tmp_path / "e.jpg") and "empty" in e.value.reason
    assert isinstance(e.value, DataError)


@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_truncated_files(make_image, make_truncated, tmp_path, ext):
    full = make_image(tmp_path / f"full.{ext}", (64, 64), seed=3)
    bad = make_truncated(full, tmp_path / f"cut.{ext}", keep=0.4)
    with pytest.raises(UnreadableImage) as e:
        decode_image(bad)
    assert "truncated or corrupt" in e.value.reason


def test_text_file_named_jpg(tmp_path):
    (tmp_path / "t.jpg").write_text("hello, I am not a JPEG\n")
    with pytest.raises(UnreadableImage, match="not an image"):
        decode_image(tmp_path / "t.jpg")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(UnreadableImage, match="file not found"):
        decode_image(tmp_path / "nope.jpg")
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(UnreadableImage, match="folder"):
        decode_image(tmp_path / "dir.jpg")


def test_huge_declared_size_is_refused_from_the_header(make_bomb_png, tmp_path):
    bomb = make_bomb_png(tmp_path / "bomb.png", 100_000, 100_000)
    assert struct.unpack(">II", bomb.read_bytes()[16:24]) == (100_000, 100_000)
    with pytest.raises(UnreadableImage) as e:
        decode_image(bomb)
    assert "decompression bomb" in e.value.reason and "max_pixels" in e.value.reason
    # Below Pillow's own limit (which only warns there), ours decides and names the size.
    medium = make_bomb_png(tmp_path / "medium.png", 10_000, 10_000)
    with pytest.raises(UnreadableImage, match="10000x10000 = 100,000,000 pixels"):
        decode_image(medium, max_pixels=10**6)


def test_pixel_limit_is_configurable(make_image, tmp_path):
    p = make_image(tmp_path / "a.png", (100, 60))
    with pytest.raises(UnreadableImage, match="6,000 pixels"):
        decode_image(p, max_pixels=5_999)
    assert decode_image(p, max_pixels=6_000).shape == (3, 60, 100)


def test_min_size_decodes_large_jpeg_smaller_but_not_below(make_image, tmp_path):
    p = make_image(tmp_path / "big.jpg", (800, 600), color=(10, 200, 30))
    small = decode_image(p, min_size=100)
    # JPEG draft scales by 1/2, 1/4 or 1/8: the largest reduction keeping the shorter side >= 100 is 1/4.
    assert small.shape == (3, 150, 200)
    assert decode_image(p).shape == (3, 600, 800)


def test_unreadable_image_pickles():
    import pickle

    e = pickle.loads(pickle.dumps(UnreadableImage("a.jpg", "empty file (0 bytes)")))
    assert (e.path, e.reason) == ("a.jpg", "empty file (0 bytes)")


def test_broken_exif_keeps_the_image(tmp_path):
    Image.new("RGB", (9, 5), (0, 128, 0)).save(tmp_path / "x.jpg", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7fjunk")
    assert decode_image(tmp_path / "x.jpg").shape == (3, 5, 9)


def test_the_pixel_limit_message_names_a_knob_every_command_has(tmp_path):
    # issue 22 item 14: the bomb message suggested data.max_pixels to commands that have no such option
    import os
    import subprocess
    import sys

    from PIL import Image

    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    code = ("from dinolab.data.decode import decode_image, UnreadableImage\n"
            f"try:\n    decode_image({str(tmp_path / 'a.png')!r})\n"
            "except UnreadableImage as e:\n    print('refused:', e.reason)\nelse:\n    print('read')\n")
    run = lambda value: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,  # noqa: E731
                                       env={**os.environ, "DINOLAB_MAX_PIXELS": value}, timeout=120)
    small = run("1000")
    assert "refused:" in small.stdout and "DINOLAB_MAX_PIXELS" in small.stdout and "data.max_pixels" in small.stdout
    assert run("1200").stdout.strip() == "read" and run("none").stdout.strip() == "read"
    bad = run("lots")
    assert bad.returncode != 0 and "DINOLAB_MAX_PIXELS='lots'" in bad.stderr
