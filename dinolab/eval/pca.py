"""Principal components of patch features as an RGB picture, background removed.

The DINOv2 visualisation (Oquab et al., 2023, Fig. 1): fit a PCA on the patch features of one
image, or of several images jointly so that colours are comparable between them; threshold the
first component to separate foreground from background; refit the PCA on the foreground patches
only; show their first three components as red, green and blue, each min-max scaled to [0, 1]
over all foreground patches; background patches are black.

Which side of the first component is "foreground" is arbitrary in a PCA; here it is the side
that holds the minority of the image-border patches (objects seldom fill the border).
The threshold is 0, i.e. the mean of the projected patches.

PCA is computed exactly: eigendecomposition of the ``D×D`` covariance in float64 (deterministic,
cheap for ``N ≫ D``), each component's sign fixed so that its largest loading is positive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from .dense import patch_tokens


def patch_features(model: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Final-norm patch tokens of a normalised ``3×H×W`` image as ``h×w×D`` float32 (on the CPU).

    Registers are not patches and are never included (see :func:`dinolab.eval.dense.patch_tokens`).
    """
    return patch_tokens(model, image).permute(1, 2, 0).cpu()


def principal_components(x: torch.Tensor, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA of the rows of ``x`` (``N×D``): returns ``(mean D, components k×D)``, strongest first.

    Components are unit vectors with their largest-magnitude entry positive. If ``D < k`` the
    missing components are zero.
    """
    x = x.double()
    mean = x.mean(dim=0)
    xc = x - mean
    cov = xc.T @ xc / max(x.shape[0] - 1, 1)
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    comps = vecs.flip(-1).T[:k]
    sign = torch.sign(comps.gather(1, comps.abs().argmax(dim=1, keepdim=True)))
    comps = comps * torch.where(sign == 0, torch.ones_like(sign), sign)
    if comps.shape[0] < k:
        comps = torch.cat([comps, comps.new_zeros(k - comps.shape[0], comps.shape[1])])
    return mean.float(), comps.float()


def border_mask(h: int, w: int) -> torch.Tensor:
    """bool ``h×w``: True on the first and last row and column."""
    m = torch.zeros(h, w, dtype=torch.bool)
    m[0], m[-1], m[:, 0], m[:, -1] = True, True, True, True
    return m


def first_component_foreground(features: Sequence[torch.Tensor], threshold: float = 0.0) -> list[torch.Tensor]:
    """Foreground masks from the first principal component, fitted jointly on all the maps.

    Args:
        features: ``h_i×w_i×D`` patch features of one or several images.
        threshold: cut on the (centred) first-component projection.

    Returns:
        one bool ``h_i×w_i`` mask per input: patches on the side of the cut that holds the
        minority of the border patches (all images' borders counted together).
    """
    flat = torch.cat([f.reshape(-1, f.shape[-1]) for f in features])
    mean, comps = principal_components(flat, k=1)
    projs = [((f.reshape(-1, f.shape[-1]) - mean) @ comps[0]).reshape(f.shape[:-1]) for f in features]
    above = [p > threshold for p in projs]
    border_above = sum(int(a[border_mask(*a.shape)].sum()) for a in above)
    border_total = sum(int(border_mask(*a.shape).sum()) for a in above)
    if 2 * border_above > border_total:
        return [(p < threshold) for p in projs]
    return above


@dataclass
class PCAPictures:
    """``pictures``: float ``h×w×3`` in [0, 1] per image (black background); ``foreground``: bool ``h×w``;
    ``split_failed``: per image, True when the first component gave it no foreground patch or nothing but
    foreground, so its picture is the full PCA (every patch coloured, as with ``remove_background=False``)."""

    pictures: list[torch.Tensor]
    foreground: list[torch.Tensor]
    split_failed: list[bool] = field(default_factory=list)


def pca_rgb(features: Sequence[torch.Tensor], remove_background: bool = True, threshold: float = 0.0) -> PCAPictures:
    """The first three principal components of patch features as RGB, fitted jointly on all inputs.

    Args:
        features: ``h_i×w_i×D`` patch features (call once per image for per-image colours).
        remove_background: threshold the first component (see :func:`first_component_foreground`)
            and refit on the foreground; otherwise every patch is foreground.
        threshold: cut on the first component.

    Returns:
        :class:`PCAPictures`. An image whose foreground comes out empty or covering every patch (the split
        failed: a uniform image, or in a joint fit an object that fills the frame) is shown whole and
        flagged in ``split_failed``; if fewer than 3 patches are foreground in all, all patches are used.

    Examples:
        >>> feats = [torch.randn(4, 6, 16), torch.randn(5, 5, 16)]
        >>> out = pca_rgb(feats)
        >>> out.pictures[0].shape, out.foreground[1].shape
        (torch.Size([4, 6, 3]), torch.Size([5, 5]))
    """
    if not features:
        raise ValueError("pca_rgb needs at least one feature map")
    features = [f.float() for f in features]
    failed = [False] * len(features)
    if remove_background:
        fg = first_component_foreground(features, threshold)
        failed = [not bool(m.any()) or bool(m.all()) for m in fg]
        fg = [torch.ones_like(m) if bad else m for m, bad in zip(fg, failed)]
        if sum(int(m.sum()) for m in fg) < 3:
            fg = [torch.ones(f.shape[:-1], dtype=torch.bool) for f in features]
    else:
        fg = [torch.ones(f.shape[:-1], dtype=torch.bool) for f in features]
    fg_rows = torch.cat([f[m] for f, m in zip(features, fg)])
    mean, comps = principal_components(fg_rows, k=3)
    proj_fg = (fg_rows - mean) @ comps.T  # n_fg×3
    lo, hi = proj_fg.min(dim=0).values, proj_fg.max(dim=0).values
    scale = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    pictures = []
    for f, m in zip(features, fg):
        rgb = ((f - mean) @ comps.T - lo) / scale
        rgb = rgb.clamp(0, 1) * m[..., None]
        pictures.append(rgb)
    return PCAPictures(pictures=pictures, foreground=fg, split_failed=failed)
