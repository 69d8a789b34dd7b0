"""Shared fixtures: small image files and folders built in ``tmp_path``.

- ``make_image(path, ...)``: write one image file (any Pillow mode / format);
  ``make_bomb_png``, ``make_truncated``: crafted bad files.
- ``image_folder(...)``: a folder of small images, flat or one subfolder per class.
- ``bad_image_corpus()``: good images mixed with every odd-but-readable and every unreadable
  kind of file; returns which is which, for tests that must report exactly the bad ones.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _noise_rgb(size: tuple[int, int], seed: int) -> np.ndarray:
    w, h = size
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def write_image(path: Path, size: tuple[int, int] = (32, 24), mode: str = "RGB", *, seed: int = 0,
                color=None, **save_kwargs) -> Path:
    """Write a ``size`` = (width, height) image: random RGB noise converted to ``mode``, or a flat ``color``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new(mode, size, color) if color is not None else Image.fromarray(_noise_rgb(size, seed)).convert(mode)
    im.save(path, **save_kwargs)
    return path


def png_with_declared_size(path: Path, width: int, height: int) -> Path:
    """A small valid PNG whose IHDR then claims ``width`` x ``height`` (a decompression bomb header)."""
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 20, 30)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    # Layout: 8-byte signature, then IHDR: length(4) type(4) width(4) height(4) ... crc(4).
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def truncated_copy(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


@pytest.fixture
def full_metrics_disk(monkeypatch):
    """Every ``metrics.jsonl`` write fails as on a full disk (ENOSPC)."""
    import errno

    from dinolab.runtime import metrics_log

    class Full:
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            pass

    monkeypatch.setattr(metrics_log, "open", lambda *a, **k: Full(), raising=False)


@pytest.fixture
def make_image():
    """``make_image(path, size=(w, h), mode="RGB", seed=0, color=None, **save_kwargs) -> path``."""
    return write_image


@pytest.fixture
def make_bomb_png():
    """``make_bomb_png(path, width, height) -> path``: a PNG header declaring a huge size."""
    return png_with_declared_size


@pytest.fixture
def make_truncated():
    """``make_truncated(src, dst, keep=0.5) -> dst``: the first ``keep`` share of ``src``'s bytes."""
    return truncated_copy


@pytest.fixture
def image_folder(tmp_path):
    """Factory: ``image_folder(classes=("cat", "dog"), per_class=3, size=(32, 24), name="images")``.

    With ``classes=None`` the images are written flat. Returns the folder.
    """
    def build(classes=("cat", "dog"), per_class: int = 3, size=(32, 24), name: str = "images") -> Path:
        root = tmp_path / name
        for c, cls in enumerate(classes or [None]):
            for i in range(per_class):
                sub = root / cls if cls else root
                write_image(sub / f"img{i:02d}.png", size, seed=100 * c + i)
        return root
    return build


@dataclass
class Corpus:
    root: Path
    good: list[str]  # readable, odd kinds included
    bad: list[str]  # unreadable


@pytest.fixture
def bad_image_corpus(tmp_path):
    """Factory: ``bad_image_corpus(n_plain=8)`` -> :class:`Corpus` in ``tmp_path/corpus``.

    Readable: ``n_plain`` plain RGB JPEG/PNGs plus a CMYK JPEG, a 16-bit PNG, a palette PNG with a
    transparent colour, an RGBA PNG, an LA PNG, a grayscale JPEG, an animated GIF, an EXIF-rotated
    JPEG, a 1x1 PNG and a 1x500 PNG. Unreadable: a zero-byte file, a truncated JPEG, a truncated PNG,
    a text file named .jpg and a PNG declaring 100000 x 100000 pixels.
    """
    def build(n_plain: int = 8) -> Corpus:
        root = tmp_path / "corpus"
        good: list[Path] = []
        for i in range(n_plain):
            good.append(write_image(root / f"plain_{i:02d}.{'jpg' if i % 2 else 'png'}", (40, 30), seed=i))
        good.append(write_image(root / "cmyk.jpg", (36, 28), "CMYK", seed=50))
        good.append(_sixteen_bit_png(root / "gray16.png"))
        good.append(_palette_with_transparency(root / "palette_transparent.png"))
        good.append(write_image(root / "rgba.png", (20, 20), "RGBA", color=(255, 0, 0, 128)))
        good.append(write_image(root / "la.png", (20, 20), "LA", color=(90, 0)))
        good.append(write_image(root / "gray.jpg", (30, 30), "L", seed=51))
        good.append(_animated_gif(root / "animated.gif"))
        good.append(_exif_rotated_jpeg(root / "exif_rot6.jpg"))
        good.append(write_image(root / "one_pixel.png", (1, 1)))
        good.append(write_image(root / "strip_1x500.png", (500, 1), seed=52))
        bad = [root / "empty.jpg", root / "truncated.jpg", root / "truncated.png", root / "text.jpg",
               root / "bomb.png"]
        bad[0].write_bytes(b"")
        truncated_copy(write_image(tmp_path / "full.jpg", (64, 64), seed=53), bad[1], keep=0.4)
        truncated_copy(write_image(tmp_path / "full.png", (64, 64), seed=54), bad[2], keep=0.5)
        bad[3].write_text("this is not an image\n")
        png_with_declared_size(bad[4], 100_000, 100_000)
        return Corpus(root, sorted(map(str, good)), sorted(map(str, bad)))
    return build


def _sixteen_bit_png(path: Path) -> Path:
    a = (np.arange(24 * 16, dtype=np.uint32).reshape(16, 24) * 170).astype(np.uint16)
    Image.fromarray(a).save(path)
    return path


def _palette_with_transparency(path: Path) -> Path:
    im = Image.new("P", (12, 10), 0)
    im.putpalette([0, 0, 0, 200, 30, 40] + [0] * (254 * 3))
    im.paste(1, (0, 0, 6, 10))  # left half index 1 (red-ish), right half index 0 (transparent)
    im.save(path, transparency=0)
    return path


def _animated_gif(path: Path) -> Path:
    frames = [Image.new("RGB", (16, 16), c) for c in ((250, 0, 0), (0, 0, 250), (0, 250, 0))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    return path


def _exif_rotated_jpeg(path: Path) -> Path:
    """Stored 40 wide x 20 tall with orientation 6 (display rotated 90 degrees clockwise)."""
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 20, 10))  # stored top-left quadrant red
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(path, exif=exif, quality=95)
    return path
