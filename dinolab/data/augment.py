"""Batched photometric augmentations with per-image random parameters.

The functions take ``x``: float ``B×3×H×W`` in [0, 1] and work on any device. :class:`Photometric`
draws every random parameter for a batch at once from a ``torch.Generator`` (:meth:`Photometric.sample`)
and applies them (:meth:`Photometric.__call__`), so a batch can be processed in chunks with the same
result, and a run resumes exactly from a saved generator state. The generator may live on the CPU while
the images are on a GPU: the parameters are small, and keeping the apply/skip decisions on the CPU
means selecting images never waits for the GPU.

Semantics are those of torchvision's ``ColorJitter``, ``RandomGrayscale``, ``GaussianBlur`` and
``RandomSolarize`` on float tensors, which the DINO family trains with:

- brightness ``f``: ``clamp(f·x)``; contrast ``f``: ``clamp(f·x + (1-f)·mean(gray(x)))`` (mean over the
  image); saturation ``f``: ``clamp(f·x + (1-f)·gray(x))``; hue ``h``: RGB→HSV, ``H ← (H + h) mod 1``,
  HSV→RGB. Factors are drawn from ``U(max(0, 1-s), 1+s)``, the hue shift from ``U(-s, s)``.
- Colour jitter applies the four operations in a random order drawn **per image** (torchvision draws one
  ``randperm(4)`` per call, i.e. per image in a per-image pipeline).
- Grayscale uses the ITU-R 601-2 luma weights 0.299/0.587/0.114 (PIL's ``convert("L")``) and keeps
  3 channels.
- Gaussian blur is separable with reflect padding and a per-image sigma. One kernel size serves a batch:
  ``2·ceil(3·sigma_max)+1`` by default (13 for sigma ≤ 2: close to PIL's radius blur used by DINO v1), or
  a fixed size such as DINOv2/v3's 9, which truncates the larger sigmas exactly as they trained.
- Solarize maps ``x ≥ threshold`` to ``1 - x`` (PIL's threshold 128 is ``128/255`` here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

Tensor = torch.Tensor
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)


def _per_image(v: Tensor | float, x: Tensor) -> Tensor:
    return torch.as_tensor(v, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)


def grayscale(x: Tensor) -> Tensor:
    """Luma of ``x`` (B×3×H×W) -> B×1×H×W."""
    r, g, b = x.unbind(1)
    return (LUMA_WEIGHTS[0] * r).add_(g, alpha=LUMA_WEIGHTS[1]).add_(b, alpha=LUMA_WEIGHTS[2]).unsqueeze(1)


def adjust_brightness(x: Tensor, factor: Tensor | float) -> Tensor:
    """``clamp(f·x, 0, 1)``; ``factor`` is a scalar or one value per image (B)."""
    return (x * _per_image(factor, x)).clamp_(0, 1)


def adjust_contrast(x: Tensor, factor: Tensor | float) -> Tensor:
    """Blend with the image's mean luma: ``clamp(f·x + (1-f)·mean(gray(x)))``."""
    f = _per_image(factor, x)
    return (x * f).add_((1 - f) * grayscale(x).mean(dim=(1, 2, 3), keepdim=True)).clamp_(0, 1)


def adjust_saturation(x: Tensor, factor: Tensor | float) -> Tensor:
    """Blend with the grayscale image: ``clamp(f·x + (1-f)·gray(x))``."""
    f = _per_image(factor, x)
    return (x * f).add_((1 - f) * grayscale(x)).clamp_(0, 1)


_SECTOR_OFFSETS = (5.0, 3.0, 1.0)  # n_c of the closed-form HSV→RGB for R, G, B
_BIG = 1e30


def adjust_hue(x: Tensor, shift: Tensor | float) -> Tensor:
    """Rotate the HSV hue by ``shift`` turns (scalar or per image, in [-0.5, 0.5]); S and V are kept.

    With ``V`` = max, ``C`` = max - min and ``6H`` the hue in sectors, channel c of the result is
    ``V - C·clamp(min(k, 4-k), 0, 1)`` with ``k = (n_c + 6H) mod 6``, ``n = (5, 3, 1)`` for R, G, B.
    Written with arithmetic only (no ``where``/``remainder``, which are several times slower on CPU),
    and with few temporaries.
    """
    r, g, b = x.unbind(1)
    maxc = torch.maximum(r, g)
    torch.maximum(maxc, b, out=maxc)
    chroma = torch.minimum(r, g)
    torch.minimum(chroma, b, out=chroma)
    chroma.neg_().add_(maxc)
    # 1.0 where the channel is the maximum, else 0.0; ties go to red, then green (torchvision's precedence).
    is_r = torch.sub(r, maxc).mul_(_BIG).add_(1.0).clamp_(0, 1)
    is_g = torch.sub(g, maxc).mul_(_BIG).add_(1.0).clamp_(0, 1)
    is_g.sub_(is_g * is_r)
    h6 = torch.sub(g, b).mul_(is_r)  # 6·hue·chroma, sector by sector
    tmp = torch.sub(b, r).add_(chroma, alpha=2.0).mul_(is_g)
    h6.add_(tmp)
    is_b = is_r.neg_().add_(1.0).sub_(is_g)
    torch.sub(r, g, out=tmp).add_(chroma, alpha=4.0).mul_(is_b)
    h6.add_(tmp).div_(torch.clamp(chroma, min=1e-12, out=tmp))
    h6.add_(6.0 * _per_image(shift, x).squeeze(1))
    h6.sub_(torch.mul(h6, 1 / 6, out=tmp).floor_().mul_(6.0))  # into [0, 6)
    k = h6.unsqueeze(1) + torch.tensor(_SECTOR_OFFSETS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    out = torch.rsub(k, 4.0)
    torch.minimum(k, out, out=out).clamp_(0, 1)
    out.add_(k.sub_(8.0).abs_().neg_().add_(2.0).clamp_(0, 1))  # k in [1, 11): the wrapped-around part
    return out.mul_(chroma.neg_().unsqueeze(1)).add_(maxc.unsqueeze(1))


def _blend(x: Tensor, op: Tensor, factors: Tensor) -> None:
    """One brightness/contrast/saturation step per image (``op`` in 0..2, -1 = none), in place.

    All three are ``clamp(a·x + β·gray(x) + γ·mean(gray(x)))`` with per-image coefficients, so a batch
    whose images need different operations is still one blend.
    """
    if not bool((op >= 0).any()):
        return
    op_d = op.to(x.device)
    f = factors.gather(1, op_d.clamp(min=0)[:, None]).squeeze(1)
    offset = None
    if bool(((op == CONTRAST) | (op == SATURATION)).any()):
        g = grayscale(x)
        beta = torch.where(op_d == SATURATION, 1 - f, torch.zeros_like(f))
        gamma = torch.where(op_d == CONTRAST, 1 - f, torch.zeros_like(f))
        offset = g.mul(_per_image(beta, x)).add_(_per_image(gamma, x) * g.mean(dim=(1, 2, 3), keepdim=True))
    x.mul_(_per_image(torch.where(op_d >= 0, f, torch.ones_like(f)), x))
    if offset is not None:
        x.add_(offset)
    x.clamp_(0, 1)


def color_jitter(x: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """Brightness, contrast, saturation and hue in a per-image order; in place on ``x`` (returned).

    Args:
        x: float B×3×H×W in [0, 1].
        factors: B×4 (brightness, contrast, saturation factors; hue shift).
        order: B×4 long, a permutation of 0..3 per image (0 brightness, 1 contrast, 2 saturation, 3 hue);
            a row of -1 leaves that image unchanged. A CPU ``order`` avoids GPU syncs.

    Each image has three blend steps (:func:`_blend`) and one hue rotation; the blends run as three
    batched steps and the hue of each image is rotated between the right two of them.
    """
    factors = factors.to(x.device, x.dtype)
    is_hue = (order == HUE).to(torch.uint8)
    blends = order.gather(1, is_hue.argsort(dim=1, stable=True))[:, :3]
    hue_step = torch.where(order[:, 0] >= 0, is_hue.argmax(dim=1), -1)
    for step in range(4):
        apply_where(x, hue_step == step, adjust_hue, factors[:, HUE])
        if step < 3:
            _blend(x, blends[:, step], factors)
    return x


def gaussian_blur(x: Tensor, sigma: Tensor | float, kernel_size: int) -> Tensor:
    """Separable Gaussian blur with one sigma per image (B), reflect padding, odd ``kernel_size``."""
    n, c, h, w = x.shape
    radius = min(kernel_size // 2, h - 1, w - 1)
    if radius <= 0 or n == 0:
        return x.clone()
    sig = _per_image(sigma, x).reshape(-1, 1)
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sig) ** 2).expand(n, -1)
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (n·c, K)
    # Depthwise convolution with one kernel per (image, channel): the fastest per-image blur in torch.
    y = F.pad(x.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k[:, None, :, None], groups=n * c)
    y = F.conv2d(y, k[:, None, None, :], groups=n * c)
    return y.reshape(n, c, h, w)


def solarize(x: Tensor, threshold: float) -> Tensor:
    """``x ≥ threshold`` -> ``1 - x``."""
    return torch.where(x >= threshold, 1.0 - x, x)


def normalize(x: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """``(x - mean) / std`` per channel, in place on ``x`` (returned)."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    return x.sub_(m).div_(s)


def apply_where(x: Tensor, mask: Tensor, fn, params: Tensor | None = None) -> Tensor:
    """``x[i] = fn(x[i], params[i])`` where ``mask[i]``, computing ``fn`` on those images only; in place.

    ``mask`` (B bool) may live on another device than ``x`` (a CPU mask avoids a GPU sync).
    """
    idx = mask.nonzero().squeeze(1).to(x.device)
    if idx.numel() == 0:
        return x
    p = params.to(x.device).index_select(0, idx) if params is not None else None
    return x.index_copy_(0, idx, fn(x.index_select(0, idx), p).to(x.dtype))


def blur_kernel_size(sigma_max: float) -> int:
    """Odd kernel covering ±3 sigma: ``2·ceil(3·sigma_max) + 1``."""
    return 2 * math.ceil(3 * sigma_max) + 1


@dataclass
class PhotometricParams:
    """Per-image random parameters of :class:`Photometric` (first dimension n everywhere)."""

    jitter_order: Tensor  # n×4 long permutation of 0..3, or -1 (no jitter)
    jitter_factors: Tensor  # n×4 brightness, contrast, saturation, hue shift
    gray: Tensor  # n bool
    blur: Tensor  # n bool
    blur_sigma: Tensor  # n
    solarize: Tensor  # n bool

    def take(self, rows: Tensor) -> PhotometricParams:
        """The parameters of images ``rows`` (a long index on the parameters' device)."""
        return PhotometricParams(*(getattr(self, f.name)[rows] for f in fields(self)))


def _probability(name: str, p: float) -> float:
    if not 0.0 <= float(p) <= 1.0:
        raise ConfigError(f"{name}={p!r} is not a probability; use a value in [0, 1]")
    return float(p)


@dataclass(frozen=True)
class Photometric:
    """Colour jitter (p), grayscale (p), Gaussian blur (p per image) and solarize (p per image).

    Args:
        jitter_p: probability of colour jitter.
        jitter: (brightness, contrast, saturation, hue) strengths, torchvision's ``ColorJitter`` arguments.
        gray_p: probability of grayscale.
        blur_sigma: sigma range of the blur (pixels of the output crop).
        blur_kernel_size: odd kernel size, or None for ``2·ceil(3·sigma_max)+1``.
        solarize_threshold: in [0, 1].

    Shapes: ``sample(n, ...)`` -> :class:`PhotometricParams` for n images; ``self(x, params)``
    transforms x (n×3×H×W float in [0, 1]) in place.

    Examples:
        >>> aug = Photometric()
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.rand(4, 3, 32, 32)
        >>> params = aug.sample(4, blur_p=0.5, solarize_p=0.2, generator=g)
        >>> aug(x, params).shape
        torch.Size([4, 3, 32, 32])
    """

    jitter_p: float = 0.8
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    gray_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_size: int | None = None
    solarize_threshold: float = 128 / 255

    def __post_init__(self) -> None:
        _probability("jitter_p", self.jitter_p)
        _probability("gray_p", self.gray_p)
        if len(self.jitter) != 4 or min(self.jitter) < 0 or self.jitter[3] > 0.5:
            raise ConfigError(f"jitter={self.jitter!r} must be 4 non-negative strengths (brightness, contrast, "
                              "saturation, hue ≤ 0.5), e.g. (0.4, 0.4, 0.2, 0.1)")
        if len(self.blur_sigma) != 2 or not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ConfigError(f"blur_sigma={self.blur_sigma!r} must be a range (low, high) with 0 < low ≤ high")
        if self.blur_kernel_size is not None and (self.blur_kernel_size < 1 or self.blur_kernel_size % 2 == 0):
            raise ConfigError(f"blur_kernel_size={self.blur_kernel_size!r} must be odd and positive, or None")

    @property
    def kernel_size(self) -> int:
        return self.blur_kernel_size or blur_kernel_size(self.blur_sigma[1])

    def sample(self, n: int, blur_p: float | Tensor, solarize_p: float | Tensor,
               generator: torch.Generator | None) -> PhotometricParams:
        """Draw the parameters of ``n`` images; ``blur_p``/``solarize_p`` are scalars or per image (n)."""
        dev = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(n, 13, generator=generator, device=dev)
        bri, con, sat, hue = self.jitter
        low = torch.tensor([max(0.0, 1 - bri), max(0.0, 1 - con), max(0.0, 1 - sat), -hue], device=dev)
        high = torch.tensor([1 + bri, 1 + con, 1 + sat, hue], device=dev)
        order = u[:, 2:6].argsort(dim=1)  # a uniform random permutation per image
        order[u[:, 0] >= self.jitter_p] = -1
        lo, hi = self.blur_sigma
        return PhotometricParams(
            jitter_order=order,
            jitter_factors=low + (high - low) * u[:, 6:10],
            gray=u[:, 1] < self.gray_p,
            blur=u[:, 10] < torch.as_tensor(blur_p, device=dev),
            blur_sigma=lo + (hi - lo) * u[:, 11],
            solarize=u[:, 12] < torch.as_tensor(solarize_p, device=dev),
        )

    def __call__(self, x: Tensor, params: PhotometricParams) -> Tensor:
        """Jitter, grayscale, blur, solarize ``x`` (n×3×H×W) in place, with ``params`` of its n images."""
        color_jitter(x, params.jitter_factors, params.jitter_order)
        apply_where(x, params.gray, lambda y, _: grayscale(y).expand_as(y))
        k = self.kernel_size
        apply_where(x, params.blur, lambda y, s: gaussian_blur(y, s, k), params.blur_sigma)
        t = self.solarize_threshold
        return apply_where(x, params.solarize, lambda y, _: solarize(y, t))
