"""Pixel verification of candidate duplicate pairs: is one image an edited copy of the other?

Nearest neighbours in a DINO embedding space are *candidates*: the space is semantic, so two
different photos of one texture, or two drawings in one style, can be as close as a photo and its
re-encoded copy. LVD-142M avoids this with a copy-detection model (SSCD); without one, the
candidates can be checked the way image retrieval checks its matches (geometric verification):
align the two pictures and see whether their pixels agree.

For a pair (A, B) each image in turn plays the *outer* picture and the other the *inner* one. Both
become RGB thumbnails (shorter side ``size``) and are reduced to their *detail*: the thumbnail
minus its Gaussian blur at σ = ``size / 8``. This removes the broad layout of light and dark that
many different pictures share (a vignette, sky above ground, shapes on a plain background), so what
must line up is each picture's own structure. The inner detail is resized to a fraction ``f`` of the
outer frame (``1 - max_crop <= f <= 1``, in one-pixel steps, its aspect ratio kept) and slid over the
outer detail; at every offset the normalised cross-correlation (NCC, in [-1, 1]) is taken over the
three channels together (each centred on its own mean), so the colours must agree as well as the
shapes: two pictures with a dark edge in one place but different colours do not match. The pair's
score is the best NCC over offsets, fractions, both roles and (``flips``) the mirrored inner picture.

Resized, re-encoded and slightly cropped copies score close to 1 (NCC ignores brightness and
contrast changes); different pictures score far lower, even tiles of one texture, because their
pixels do not line up. On the planted benchmark every original-copy pair scored ≥ 0.83 and every
pair of different pictures ≤ 0.66 (BENCHMARKS.md), hence the default ``min_score`` 0.75. Rotations, strong crops,
overlays and other heavy edits are *not* verified: verification trades recall on those for precision.

Pictures with *little* detail (drawings upscaled from a few pixels, smooth blurred shapes) have few
independent pixels, so different drawings of one shape correlate highly: two distinct 8×8 digits
upscaled to 32 px score up to 0.96, while their resized, re-encoded, cropped or mirrored copies score
≥ 0.99. A picture counts as low-detail when less than ``LOW_DETAIL`` (0.4) of its detail's energy is
finer than a quarter of the thumbnail (lost by shrinking the detail 4× and enlarging it back; digits
0.15-0.25, photo-like textures with grain 0.72). When both pictures are low-detail the NCC must reach
``low_detail_min_score`` (0.98): the reported score is the NCC rescaled so that this NCC lands on
``min_score`` (``1 - (1 - ncc)·(1 - min_score) / (1 - low_detail_min_score)``), so callers keep
comparing one score with ``min_score`` (clipped at -1; nothing changes when ``min_score`` is
already the higher of the two).

Pictures without detail (standard deviation of the detail below 1/255: flat or smoothly shaded)
carry nothing to align: such a pair scores 1 if neither has detail and their thumbnails, resized to
one frame, differ by at most 4/255 on average, else 0.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..device import cpu_threads
from ..errors import ConfigError
from .store import _progress_iter

FLAT_STD = 1.0 / 255
FLAT_MEAN_TOLERANCE = 4.0 / 255
LOW_DETAIL = 0.4


@dataclass(frozen=True)
class PixelVerifier:
    """Scores candidate pairs by aligning their thumbnails (see the module docstring).

    Attributes:
        min_score: pairs whose best NCC reaches this are verified duplicates.
        max_crop: largest share of each side an edited copy may have lost to cropping.
        size: shorter side of the thumbnails, in pixels (memory: ``3·size²`` bytes per image).
        flips: also try the mirrored picture (a horizontally flipped copy is a duplicate).
        low_detail_min_score: NCC a pair of low-detail pictures must reach (see the module docstring).

    Examples:
        >>> v = PixelVerifier()
        >>> scores = v.scores(["a.jpg", "a_small.jpg", "b.jpg"], np.array([[0, 1], [0, 2]]))  # doctest: +SKIP
        >>> (scores >= v.min_score).tolist()                                                   # doctest: +SKIP
        [True, False]
    """

    min_score: float = 0.75
    max_crop: float = 0.2
    size: int = 64
    flips: bool = True
    low_detail_min_score: float = 0.98

    def __post_init__(self) -> None:
        if not -1.0 <= self.min_score <= 1.0:
            raise ConfigError(f"verify min_score={self.min_score} must be an NCC in [-1, 1]")
        if not -1.0 <= self.low_detail_min_score < 1.0:
            raise ConfigError(f"verify low_detail_min_score={self.low_detail_min_score} must be an NCC in [-1, 1)")
        if not 0.0 <= self.max_crop < 1.0:
            raise ConfigError(f"verify max_crop={self.max_crop} must be in [0, 1) (a share of each side)")
        if self.size < 8:
            raise ConfigError(f"verify size={self.size} must be at least 8 pixels")

    def scores(self, paths: Sequence[str], edges: np.ndarray, progress: bool = True) -> np.ndarray:
        """Best NCC of each pair ``edges[e] = (i, j)`` of ``paths`` (E float32; NaN if unreadable)."""
        edges = np.asarray(edges, np.int64).reshape(-1, 2)
        thumbs, bad = self._thumbnails(paths, np.unique(edges), progress)
        out = np.full(len(edges), np.nan, np.float32)
        with cpu_threads(1):  # per-pair work is too small to share: threads only wait (device.cpu_threads)
            for e in _progress_iter(range(len(edges)), "verifying pairs", progress, min_items=200):
                i, j = edges[e]
                if i in thumbs and j in thumbs:
                    out[e] = self.pair_score(thumbs[i].float() / 255, thumbs[j].float() / 255)
        if bad:
            first, reason = bad[0]
            warnings.warn(f"{len(bad)} image(s) could not be read for verification (first: {first}: {reason}); "
                          f"their pairs count as not verified, so both images are kept", stacklevel=2)
        return out

    def pair_score(self, a: torch.Tensor, b: torch.Tensor) -> float:
        """Score of two thumbnails (``(C, h, w)`` or ``(h, w)`` float in [0, 1], the same C): the best
        over both roles. Each is first resized to shorter side ``size`` (as :meth:`scores` reads them),
        so the detail's blur is the same share of both pictures."""
        a, b = (_to_size(t[None] if t.dim() == 2 else t, self.size) for t in (a, b))
        sigma = self.size / 8
        da, db = detail(a, sigma), detail(b, sigma)
        flat_a, flat_b = bool(da.std() < FLAT_STD), bool(db.std() < FLAT_STD)
        if flat_a or flat_b:
            if not (flat_a and flat_b):
                return 0.0
            b_as_a = F.interpolate(b[None], size=a.shape[-2:], mode="bilinear", antialias=True, align_corners=False)
            return float(float((a - b_as_a[0]).abs().mean()) <= FLAT_MEAN_TOLERANCE)
        ncc = max(self._inside(da, db), self._inside(db, da))
        if self.low_detail_min_score > self.min_score and fine_share(da) < LOW_DETAIL and fine_share(db) < LOW_DETAIL:
            return max(-1.0, 1.0 - (1.0 - ncc) * (1.0 - self.min_score) / (1.0 - self.low_detail_min_score))
        return ncc

    def _inside(self, outer: torch.Tensor, inner: torch.Tensor) -> float:
        """Best NCC of ``inner`` (C×h×w) resized and placed inside ``outer`` (C×H×W).

        The inner height runs over every pixel from ``(1 - max_crop)·H`` to ``H``: first every other
        one, then the two neighbours of the best (the score varies smoothly with the scale).
        """
        big_h, big_w = outer.shape[-2:]
        aspect = inner.shape[-1] / inner.shape[-2]
        o = outer[None]
        sums = _window_tables(o)  # shared by every height tried
        scores: dict[int, float] = {}

        def at(h: int) -> float:
            if h not in scores:
                w = int(round(h * aspect))
                if not 2 <= w <= big_w:
                    scores[h] = -1.0
                else:
                    t = F.interpolate(inner[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)
                    kernels = torch.cat([t, t.flip(-1)]) if self.flips else t
                    scores[h] = float(_ncc(o, kernels, sums).max())
            return scores[h]

        low = max(2, int(np.ceil(big_h * (1 - self.max_crop))))
        coarse = max(range(big_h, low - 1, -2), key=at)  # from the full frame down, every other height
        for h in (coarse - 1, coarse + 1):
            if low <= h <= big_h:
                at(h)
        return max(scores.values())

    def _thumbnails(self, paths: Sequence[str], rows: np.ndarray, progress: bool):
        from ..data.decode import UnreadableImage, decode_image

        thumbs, bad = {}, []
        for i in _progress_iter(rows.tolist(), "reading thumbnails", progress, min_items=200):
            try:
                img = decode_image(paths[i], min_size=self.size)
            except UnreadableImage as e:
                bad.append((e.path, e.reason))
                continue
            thumbs[i] = (thumbnail(img, self.size) * 255).round().byte()  # 1 byte a value while many are held
        return thumbs, bad


def thumbnail(image: torch.Tensor, size: int) -> torch.Tensor:
    """RGB float thumbnail in [0, 1] with shorter side ``size``: ``(3, H, W) uint8 -> (3, h, w)``."""
    h, w = image.shape[-2:]
    scale = size / min(h, w)
    shape = (max(1, round(h * scale)), max(1, round(w * scale)))
    x = image.float()[None] / 255.0
    return F.interpolate(x, size=shape, mode="bilinear", antialias=True, align_corners=False)[0]


def detail(thumb: torch.Tensor, sigma: float) -> torch.Tensor:
    """``thumb`` (``(C, h, w)`` or ``(h, w)``) minus its Gaussian blur of standard deviation ``sigma`` px,
    per channel (edges replicated)."""
    x = thumb[None] if thumb.dim() == 2 else thumb
    radius = min(int(3 * sigma), min(x.shape[-2:]) - 1)
    r = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-r * r / (2 * sigma * sigma))
    k = k / k.sum()
    t = F.pad(x[:, None], (radius, radius, radius, radius), mode="replicate")  # channels as a batch
    blurred = F.conv2d(F.conv2d(t, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))[:, 0]
    return (x - blurred).view_as(thumb)


def _to_size(t: torch.Tensor, size: int) -> torch.Tensor:
    """``(C, h, w)`` float resized (bilinear, antialiased) to shorter side ``size``; unchanged if it has it."""
    h, w = t.shape[-2:]
    if min(h, w) == size:
        return t
    shape = (max(1, round(h * size / min(h, w))), max(1, round(w * size / min(h, w))))
    return F.interpolate(t[None].float(), size=shape, mode="bilinear", antialias=True, align_corners=False)[0]


def fine_share(d: torch.Tensor) -> float:
    """Share (in [0, 1], as a norm ratio) of a detail image ``(C, h, w)`` that is finer than a quarter
    of its size: what shrinking it 4× and enlarging it back loses."""
    h, w = d.shape[-2:]
    small = F.interpolate(d[None], size=(max(2, h // 4), max(2, w // 4)), mode="bilinear", antialias=True,
                          align_corners=False)
    back = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]
    return float((d - back).norm() / d.norm().clamp_min(1e-12))


def _ncc(outer: torch.Tensor, kernels: torch.Tensor,
         sums: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """NCC of each kernel ``(K, C, h, w)`` at every offset inside ``outer`` ``(1, C, H, W)``: ``(K, H-h+1, W-w+1)``.

    Each channel is centred on its own mean (in the kernel and in the window); the correlation is
    then taken over all channels at once, so the colours of the structure must agree too.
    ``sums``: :func:`_window_tables` of ``outer``, when the caller tries several kernel sizes on it.
    """
    n = kernels.shape[-1] * kernels.shape[-2]
    k = kernels - kernels.mean(dim=(-1, -2), keepdim=True)
    k = k / k.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    num = F.conv2d(outer, k)[0]  # Σ k·window; each channel of k sums to 0, so the window means drop out
    h, w = kernels.shape[-2:]
    table, table_sq = sums if sums is not None else _window_tables(outer)
    total, total_sq = _window_sums(table, h, w), _window_sums(table_sq, h, w)
    window_norm = (total_sq - total * total / n).clamp_min(0).sum(0).sqrt().float()
    floor = FLAT_STD * (n * kernels.shape[1]) ** 0.5
    return torch.where(window_norm > floor, num / window_norm.clamp_min(1e-12), torch.zeros_like(num))


def _window_tables(outer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed-area tables ``(C, H+1, W+1)`` of ``outer`` ``(1, C, H, W)`` and of its square, in float64
    (a window's variance is a difference of two such sums)."""
    o = outer[0].double()
    return tuple(F.pad(x.cumsum(-1).cumsum(-2), (1, 0, 1, 0)) for x in (o, o * o))


def _window_sums(table: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Sum of every ``h×w`` window, from a summed-area table ``(C, H+1, W+1)``: ``(C, H-h+1, W-w+1)``."""
    return table[:, h:, w:] - table[:, :-h, w:] - table[:, h:, :-w] + table[:, :-h, :-w]


__all__ = ["PixelVerifier", "thumbnail", "detail", "fine_share", "LOW_DETAIL"]
