"""Built-in image sets for demos and tests, made in memory (nothing is downloaded or written).

- ``builtin:digits``: scikit-learn's 1,797 real handwritten digits (8x8, bundled with the
  package), upscaled with bicubic interpolation to ``size`` (default 64) as dark ink on white
  paper, RGB, labels 0-9. Options: ``size``; ``canvas`` (default 0: none) places each
  ``size`` x ``size`` digit inside a blank ``canvas`` x ``canvas`` sheet of the same paper (sklearn's
  zero ink, black in its own ink-is-bright rendering), at the centre (``shift=center``, default) or
  at a uniformly random integer offset (``shift=random``: image ``i`` depends only on ``seed`` and
  ``i``). The translation test of the default recipe pairs centred train references
  (``builtin:digits?canvas=96``) with randomly placed queries (``builtin:digits?canvas=96&shift=random``).
- ``builtin:shapes``: ``n`` (default 1000) generated ``size`` x ``size`` (default 96) images of one
  coloured shape (circle, square, triangle, star, cross) at a random position, scale and
  rotation on a textured background (stripes, checks, noise, gradient), with the exact
  foreground mask and a caption ("a red star on a striped background"). Image ``i`` depends
  only on ``seed`` and ``i``, so ``n=500`` is the first half of ``n=1000``; labels cycle
  through the classes. Options: ``n``, ``size``, ``seed``.
- ``builtin:moving_shapes``: ``videos`` (default 4) generated videos of ``frames`` (16) ``size`` x ``size``
  (96) frames: ``objects`` (2, at most 5) textured shapes of distinct kinds and colours moving,
  bouncing, scaling and turning over one textured background, drawn in index order (a higher index
  occludes); a :class:`VideoSet` with the per-frame object-index masks (``data.video.write_video_set``
  writes it in the DAVIS layout). Video ``v`` depends only on ``seed`` and ``v``.

Every set also takes ``split`` and ``imbalance`` (issue 18: small, long-tailed labelled sets):

- ``split=test`` is a balanced held-out part: ``floor(0.2 * n_min)`` images of every class, ``n_min``
  the size of the smallest class of the full set (34 per class for digits, 40 for ``shapes?n=1000``);
  ``split=train`` is everything else; ``split=all`` (the default without ``imbalance``) the full set.
- ``imbalance=R`` makes the train part long-tailed as CIFAR-10-LT is built: class ``c`` of ``C`` keeps
  ``n_c = floor(n_max * R ** (-c / (C - 1)))`` images (at least 1), from ``n_max`` for class 0 down to
  ``n_max / R`` for the last, ``n_max`` being the smallest class's count once its test images are out
  (140 for digits: 140, 90, 58, ..., 2 at R = 50). With ``imbalance`` the default split is ``train``;
  ``split=test`` is the same balanced part for every R, and ``split=all`` the union of the two.
- The images are chosen per class in the order of ``numpy.random.default_rng([seed, c]).permutation``
  (the test part first), so the parts are disjoint and the same on every machine; an image keeps its
  name (``builtin:digits/0123``) from the full set.

Options follow the name as a query string: ``builtin:shapes?n=500&size=64&seed=1``; they are
integers except ``shift`` and ``split``.
Generated sets are cached per process.

Examples:
    >>> s = load_builtin("builtin:shapes?n=10&size=32")
    >>> s.images.shape, s.masks.shape, s.classes[s.labels[0]]
    ((10, 3, 32, 32), (10, 32, 32), 'circle')
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from urllib.parse import parse_qsl

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError

PREFIX = "builtin:"


@dataclass(frozen=True)
class BuiltinSet:
    """An in-memory image set. Arrays are read-only (they are shared through the cache)."""

    name: str
    images: np.ndarray  # (N, 3, H, W) uint8
    labels: np.ndarray  # (N,) int64
    classes: list[str]
    masks: np.ndarray | None = None  # (N, H, W) bool, True on the object
    captions: list[str] | None = None
    names: tuple[str, ...] | None = None  # a split keeps the names its images have in the full set

    @property
    def paths(self) -> list[str]:
        """Stable names for the images, ``builtin:<name>/<index>`` (the index in the full set)."""
        if self.names is not None:
            return list(self.names)
        width = len(str(len(self.images) - 1))
        return [f"{PREFIX}{self.name}/{i:0{width}d}" for i in range(len(self.images))]


def is_builtin(source: object) -> bool:
    return isinstance(source, str) and source.startswith(PREFIX)


def load_builtin(spec: str) -> BuiltinSet:
    """Build (or fetch from the cache) the set named by ``spec``, e.g. ``"builtin:digits?size=32"``."""
    name, _, query = spec[len(PREFIX):].partition("?")
    if name not in _SETS:
        close = difflib.get_close_matches(name, list(_SETS), n=1)
        hint = f" (did you mean {PREFIX}{close[0]}?)" if close else ""
        raise DataError(f"unknown built-in data set {spec!r}{hint}; available: "
                        + ", ".join(PREFIX + n for n in _SETS))
    make, defaults = _SETS[name]
    defaults = {**defaults, **_SPLIT_OPTIONS}
    options = dict(defaults)
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in defaults:
            raise DataError(f"unknown option {key!r} in {spec!r}; {PREFIX}{name} takes "
                            + ", ".join(f"{k} (default {v})" for k, v in defaults.items()))
        if isinstance(defaults[key], str):
            options[key] = value
            continue
        try:
            options[key] = int(value)
        except ValueError:
            raise DataError(f"option {key}={value!r} in {spec!r} must be an integer") from None
    imbalance, split = options.pop("imbalance"), options.pop("split")
    return split_builtin(make(**options), imbalance, split, options.get("seed", 0))


@functools.lru_cache(maxsize=4)
def _digits(size: int, canvas: int = 0, shift: str = "center", seed: int = 0) -> BuiltinSet:
    from sklearn.datasets import load_digits

    if not 8 <= size <= 1024:
        raise DataError(f"builtin:digits size={size} must be between 8 and 1024")
    if shift not in ("center", "random"):
        raise DataError(f"builtin:digits shift={shift!r} must be 'center' or 'random'")
    if canvas and not size <= canvas <= 4096:
        raise DataError(f"builtin:digits canvas={canvas} must be at least size={size} (and at most 4096), "
                        f"or 0 for no canvas")
    if shift == "random" and not canvas:
        raise DataError("builtin:digits shift=random needs a canvas larger than the digit, e.g. "
                        "builtin:digits?canvas=96&shift=random")
    d = load_digits()
    ink = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8), 1 = ink
    ink = F.interpolate(ink, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    gray = torch.round(255.0 * (1.0 - ink)).to(torch.uint8).numpy()  # (N, 1, size, size)
    if canvas:
        gray = _place_on_canvas(gray, canvas, shift, seed)
    images = np.ascontiguousarray(np.broadcast_to(gray, (len(gray), 3) + gray.shape[2:]))
    return _frozen(BuiltinSet("digits", images, d.target.astype(np.int64), [str(c) for c in range(10)]))


def _place_on_canvas(tiles: np.ndarray, canvas: int, shift: str, seed: int) -> np.ndarray:
    """``(N, 1, s, s)`` uint8 tiles -> ``(N, 1, canvas, canvas)`` on blank paper (255), each tile at the centre
    or at a random offset drawn from ``default_rng([seed, i])`` (uniform over the ``canvas - s + 1`` positions)."""
    n, s = len(tiles), tiles.shape[-1]
    out = np.full((n, 1, canvas, canvas), 255, np.uint8)
    for i in range(n):
        if shift == "random":
            top, left = np.random.default_rng([seed, i]).integers(0, canvas - s + 1, size=2)
        else:
            top = left = (canvas - s) // 2
        out[i, :, top:top + s, left:left + s] = tiles[i]
    return out


SHAPES = ("circle", "square", "triangle", "star", "cross")
_COLOURS = {  # saturated, so every one is far from the near-gray backgrounds in some channel
    "red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (240, 210, 20),
    "magenta": (200, 40, 200), "cyan": (20, 200, 210), "orange": (245, 130, 20),
}
_BACKGROUNDS = ("striped", "checkered", "noisy", "gradient")


@functools.lru_cache(maxsize=4)
def _shapes(n: int, size: int, seed: int) -> BuiltinSet:
    if n < 1:
        raise DataError(f"builtin:shapes n={n} must be at least 1")
    if not 16 <= size <= 1024:
        raise DataError(f"builtin:shapes size={size} must be between 16 and 1024")
    images = np.empty((n, 3, size, size), np.uint8)
    masks = np.empty((n, size, size), bool)
    labels = np.arange(n, dtype=np.int64) % len(SHAPES)
    captions = []
    centres = np.arange(size, dtype=np.float64) + 0.5
    xx, yy = np.meshgrid(centres, centres)
    colour_names = list(_COLOURS)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        colour = colour_names[rng.integers(len(colour_names))]
        background = _BACKGROUNDS[rng.integers(len(_BACKGROUNDS))]
        img = _background(background, xx, yy, rng)
        r = rng.uniform(0.22, 0.38) * size
        cx, cy = rng.uniform(r, size - r, size=2)
        mask = _shape_mask(SHAPES[labels[i]], xx - cx, yy - cy, r, rng.uniform(0, 2 * np.pi))
        img[mask] = _COLOURS[colour]
        images[i] = img.transpose(2, 0, 1)
        masks[i] = mask
        captions.append(f"{_article(colour)} {colour} {SHAPES[labels[i]]} on a {background} background")
    return _frozen(BuiltinSet("shapes", images, labels, list(SHAPES), masks, captions))


def _background(kind: str, xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(H, W, 3)`` uint8 texture mixing two muted, near-gray colours."""
    size = xx.shape[0]
    c1, c2 = (rng.uniform(50, 205) + rng.uniform(-20, 20, size=3) for _ in range(2))
    angle = rng.uniform(0, np.pi)
    along = xx * np.cos(angle) + yy * np.sin(angle)
    if kind == "striped":
        period = rng.uniform(6, 16)
        t = (np.mod(along, period) < period / 2).astype(np.float64)
    elif kind == "checkered":
        cell = int(rng.integers(4, 13))
        t = ((xx // cell + yy // cell) % 2).astype(np.float64)
    elif kind == "noisy":
        block = int(rng.integers(2, 6))
        coarse = rng.random((size // block + 1,) * 2)
        t = np.kron(coarse, np.ones((block, block)))[:size, :size]
    else:  # gradient
        t = (along - along.min()) / max(np.ptp(along), 1e-9)
    img = c1 * (1 - t[..., None]) + c2 * t[..., None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float, rotation: float) -> np.ndarray:
    """True where pixel centres at offsets ``(dx, dy)`` from the shape's centre fall inside it."""
    if shape == "circle":
        return dx ** 2 + dy ** 2 <= r ** 2
    if shape == "square":
        radii, angles = np.ones(4), np.arange(4) * np.pi / 2 + np.pi / 4
    elif shape == "triangle":
        radii, angles = np.ones(3), np.arange(3) * 2 * np.pi / 3
    elif shape == "star":
        radii, angles = np.tile([1.0, 0.45], 5), np.arange(10) * np.pi / 5
    else:  # cross: a plus sign with arms of half-width w
        w = 0.33
        corners = [(w, 1), (w, w), (1, w)]
        pts = []
        for k in range(4):
            c, s = np.cos(k * np.pi / 2), np.sin(k * np.pi / 2)
            pts += [(x * c - y * s, x * s + y * c) for x, y in corners]
        pts_arr = np.array(pts)
        radii, angles = np.hypot(pts_arr[:, 0], pts_arr[:, 1]), np.arctan2(pts_arr[:, 1], pts_arr[:, 0])
    vx = r * radii * np.cos(angles + rotation)
    vy = r * radii * np.sin(angles + rotation)
    return _inside_polygon(dx, dy, vx, vy)


def _inside_polygon(px: np.ndarray, py: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
    """Even-odd rule: count crossings of a ray to +x with each edge."""
    inside = np.zeros(px.shape, bool)
    for (x0, y0), (x1, y1) in zip(zip(vx, vy), zip(np.roll(vx, -1), np.roll(vy, -1))):
        if y0 == y1:
            continue
        straddles = (y0 > py) != (y1 > py)
        x_cross = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
        inside ^= straddles & (px < x_cross)
    return inside


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _frozen(s: BuiltinSet) -> BuiltinSet:
    for a in (s.images, s.labels, s.masks):
        if a is not None:
            a.setflags(write=False)
    return s


# ---- long-tailed splits (issue 18): options every set takes --------------------------------------
_SPLIT_OPTIONS = {"imbalance": 0, "split": ""}
TEST_FRACTION = 0.2  # of the smallest class: the balanced held-out part


def long_tail_sizes(n_max: int, n_classes: int, ratio: float) -> list[int]:
    """CIFAR-10-LT class sizes ``n_c = floor(n_max * ratio ** (-c / (C - 1)))``, at least 1; class 0 largest."""
    if n_classes == 1:
        return [n_max]
    return [max(1, int(n_max * ratio ** (-c / (n_classes - 1)))) for c in range(n_classes)]


def split_indices(labels: np.ndarray, n_classes: int, imbalance: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` indices: ``test`` takes ``floor(0.2 * smallest class)`` images of every class, ``train``
    the rest, or with ``imbalance = R`` the first :func:`long_tail_sizes` of the rest; each class's images in
    the order of ``default_rng([seed, c]).permutation``."""
    by_class = [np.flatnonzero(labels == c) for c in range(n_classes)]
    n_test = int(TEST_FRACTION * min(len(m) for m in by_class))
    orders = [np.random.default_rng([seed, c]).permutation(m) for c, m in enumerate(by_class)]
    pool = min(len(o) for o in orders) - n_test
    sizes = long_tail_sizes(pool, n_classes, imbalance) if imbalance else [len(o) - n_test for o in orders]
    test = np.sort(np.concatenate([o[:n_test] for o in orders]))
    train = np.sort(np.concatenate([o[n_test:n_test + n] for o, n in zip(orders, sizes)]))
    return train, test


def split_builtin(s: BuiltinSet, imbalance: int, split: str, seed: int) -> BuiltinSet:
    """The ``split`` (train, test or all) part of ``s`` (see the module docstring); ``s`` itself when neither is set."""
    if imbalance < 0:
        raise DataError(f"builtin:{s.name} imbalance={imbalance} must be at least 1 (0: balanced)")
    split = split or ("train" if imbalance else "all")
    if split not in ("all", "train", "test"):
        raise DataError(f"builtin:{s.name} split={split!r} must be 'train', 'test' or 'all'")
    if split == "all" and not imbalance:
        return s
    train, test = split_indices(np.asarray(s.labels), len(s.classes), imbalance, seed)
    keep = {"train": train, "test": test, "all": np.union1d(train, test)}[split]
    names = tuple(s.paths[i] for i in keep)
    pick = lambda a: None if a is None else np.ascontiguousarray(a[keep])  # noqa: E731
    return _frozen(BuiltinSet(s.name, pick(s.images), pick(s.labels), list(s.classes), pick(s.masks),
                              None if s.captions is None else [s.captions[i] for i in keep], names))


_SETS = {
    "digits": (_digits, {"size": 64, "canvas": 0, "shift": "center", "seed": 0}),
    "shapes": (_shapes, {"n": 1000, "size": 96, "seed": 0}),
}


@dataclass(frozen=True)
class VideoSet:
    """Generated videos with per-frame object masks (``builtin:moving_shapes``). Read-only arrays.

    ``frames`` is ``(V, T, 3, H, W)`` uint8 and ``object_masks`` ``(V, T, H, W)`` uint8 (object index per
    pixel, 0 background, 1..K in depth order: a higher index is drawn in front). As an image set
    (``images``, ``labels``, ``masks``, ``paths``: what :class:`dinolab.data.ImageDataset` reads) its frames
    are the images, in video-major order, labelled by their video, with the foreground as the mask.
    """

    name: str
    frames: np.ndarray
    object_masks: np.ndarray
    captions: list[str] | None = None

    @property
    def videos(self) -> list[str]:
        """Video names, ``video000`` ...; the frames of video ``v`` are ``00000`` ... on disk."""
        return [f"video{v:03d}" for v in range(len(self.frames))]

    @property
    def images(self) -> np.ndarray:  # (V*T, 3, H, W)
        return self.frames.reshape(-1, *self.frames.shape[2:])

    @property
    def labels(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.frames), dtype=np.int64), self.frames.shape[1])

    @property
    def classes(self) -> list[str]:
        return self.videos

    @property
    def masks(self) -> np.ndarray:  # (V*T, H, W) bool
        return self.object_masks.reshape(-1, *self.object_masks.shape[2:]) > 0

    @property
    def paths(self) -> list[str]:
        t = self.frames.shape[1]
        return [f"{PREFIX}{self.name}/{video}/{i:05d}" for video in self.videos for i in range(t)]


@functools.lru_cache(maxsize=2)
def _moving_shapes(videos: int, frames: int, size: int, objects: int, seed: int) -> VideoSet:
    """Video ``v`` depends only on ``(seed, v)``: one background, ``objects`` textured shapes of distinct
    shapes and colours that move in straight lines (bouncing off the borders), grow or shrink and turn."""
    for key, value, lo, hi in (("videos", videos, 1, 1000), ("frames", frames, 2, 1000), ("size", size, 16, 1024),
                               ("objects", objects, 1, len(SHAPES))):
        if not lo <= value <= hi:
            raise DataError(f"builtin:moving_shapes {key}={value} must be between {lo} and {hi}")
    out = np.empty((videos, frames, 3, size, size), np.uint8)
    masks = np.zeros((videos, frames, size, size), np.uint8)
    centres = np.arange(size, dtype=np.float64) + 0.5
    xx, yy = np.meshgrid(centres, centres)
    captions = []
    for v in range(videos):
        rng = np.random.default_rng([seed, v])
        background = _background(_BACKGROUNDS[rng.integers(len(_BACKGROUNDS))], xx, yy, rng)
        tracks = [_track(rng, frames, size) for _ in range(objects)]
        shapes = rng.permutation(len(SHAPES))[:objects]
        colours = rng.permutation(len(_COLOURS))[:objects]
        textures = [_object_texture(list(_COLOURS.values())[c], xx, yy, rng) for c in colours]
        for t in range(frames):
            img = background.copy()
            for k, (track, shape, texture) in enumerate(zip(tracks, shapes, textures)):
                cx, cy, r, angle = track[t]
                inside = _shape_mask(SHAPES[shape], xx - cx, yy - cy, r, angle)
                img[inside] = texture[inside]
                masks[v, t][inside] = k + 1
            out[v, t] = img.transpose(2, 0, 1)
        captions.append(", ".join(f"{list(_COLOURS)[c]} {SHAPES[s]}" for s, c in zip(shapes, colours)))
    video = VideoSet("moving_shapes", out, masks, captions)
    for a in (video.frames, video.object_masks):
        a.setflags(write=False)
    return video


def _track(rng: np.random.Generator, frames: int, size: int) -> np.ndarray:
    """``(frames, 4)`` centre x, y, radius and rotation of one object: constant velocity (reflected at the
    borders), radius scaled linearly by a factor in [0.6, 1.5] over the video, constant spin."""
    r0 = rng.uniform(0.15, 0.25) * size
    radius = r0 * np.linspace(1.0, rng.uniform(0.6, 1.5), frames)
    speed = rng.uniform(0.01, 0.03) * size
    heading = rng.uniform(0, 2 * np.pi)
    start = rng.uniform(0, size, size=2)
    travel = start + np.arange(frames)[:, None] * speed * np.array([np.cos(heading), np.sin(heading)])
    lo, hi = radius[:, None] * 0.5, size - radius[:, None] * 0.5  # at least half the object stays in view
    span = hi - lo
    folded = np.mod(travel - lo, 2 * span)
    centre = lo + np.where(folded > span, 2 * span - folded, folded)
    angle = rng.uniform(0, 2 * np.pi) + np.arange(frames) * rng.uniform(-0.08, 0.08)
    return np.column_stack([centre, radius, angle])


def _object_texture(colour: tuple[int, int, int], xx: np.ndarray, yy: np.ndarray, rng: np.random.Generator
                    ) -> np.ndarray:
    """``(H, W, 3)`` uint8: ``colour`` shaded by a background-style pattern (70-100% brightness)."""
    pattern = _background(_BACKGROUNDS[rng.integers(3)], xx, yy, rng).mean(axis=2)
    t = (pattern - pattern.min()) / max(np.ptp(pattern), 1e-9)
    img = np.asarray(colour, np.float64) * (0.7 + 0.3 * t[..., None])
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


_SETS["moving_shapes"] = (_moving_shapes, {"videos": 4, "frames": 16, "size": 96, "objects": 2, "seed": 0})
