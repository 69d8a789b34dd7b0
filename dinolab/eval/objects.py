"""Unsupervised object discovery: a foreground mask per image, no labels, scored by Jaccard.

Three ways to get a patch-level mask from a frozen ViT (then upsampled, nearest, to pixels):

``"attention"``
    The last block's [CLS]→patch attention averaged over heads, keeping the fewest patches that
    hold 60% of its mass (DINO's threshold, :func:`dinolab.eval.attention.attention_mask`).
    ``heads="vote"`` keeps patches that a majority of the per-head masks keep, ``"union"`` any.
``"pca"``
    The sign of the first principal component of the image's patch features, with the side that
    holds the minority of border patches as foreground (:func:`dinolab.eval.pca.first_component_foreground`).
``"similarity"``
    LOST-style seed expansion (Siméoni et al., 2021), on the final-norm patch features centred by
    their mean over the image (LOST uses the last block's keys uncentred; centring makes the
    sign of a correlation meaningful for normed tokens, which otherwise all correlate positively):
    the seed is the patch with the fewest positive correlations (objects are smaller than the
    background); the seed set is the ``seed_fraction`` lowest-degree patches that correlate
    positively with the seed (LOST: k = 100, about 15% of a PASCAL image's patches at patch 16);
    a patch is foreground when its summed correlation with the seed set is positive; the mask is
    the 4-connected component that contains the seed (LOST draws a box around it; we keep the mask).

The baseline is a box centred in the image with the image's aspect ratio, covering 50% of its
area. :func:`evaluate_object_discovery` also reports the best centred box over areas 5%..95%,
chosen on the evaluated images themselves (an optimistic baseline: it uses the ground truth).
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from .attention import attention_maps, attention_mask
from .pca import first_component_foreground, patch_features
from .viz import prepare_image, upsample

METHODS = ("attention", "pca", "similarity")
BOX_AREAS = tuple(round(0.05 * i, 2) for i in range(1, 20))


def jaccard(pred: torch.Tensor | np.ndarray, gt: torch.Tensor | np.ndarray) -> float:
    """Intersection over union of two bool masks of the same shape; 1.0 when both are empty."""
    p, g = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if p.shape != g.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {g.shape}")
    union = np.logical_or(p, g).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, g).sum() / union)


def centered_box(h: int, w: int, area: float = 0.5) -> torch.Tensor:
    """bool ``h×w`` box centred in the image, same aspect ratio, covering about ``area`` of it."""
    s = float(np.sqrt(area))
    bh, bw = max(1, round(h * s)), max(1, round(w * s))
    top, left = (h - bh) // 2, (w - bw) // 2
    m = torch.zeros(h, w, dtype=torch.bool)
    m[top: top + bh, left: left + bw] = True
    return m


def mask_from_attention(attn: torch.Tensor, keep: float = 0.6, heads: str = "mean") -> torch.Tensor:
    """bool ``h×w`` foreground from ``heads×h×w`` [CLS] attention (see the module docstring)."""
    if heads == "mean":
        return attention_mask(attn.mean(dim=0), keep)
    per_head = attention_mask(attn, keep)
    if heads == "union":
        return per_head.any(dim=0)
    if heads == "vote":
        return per_head.sum(dim=0) * 2 > attn.shape[0]
    raise ValueError(f"heads must be 'mean', 'vote' or 'union', got {heads!r}")


def mask_from_pca(features: torch.Tensor) -> torch.Tensor:
    """bool ``h×w`` foreground from the first principal component of ``h×w×D`` patch features."""
    return first_component_foreground([features])[0]


def _component_containing(mask: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    from scipy.ndimage import label

    labels, _ = label(mask)  # 4-connectivity
    return labels == labels[seed] if mask[seed] else np.zeros_like(mask)


def mask_from_similarity(features: torch.Tensor, seed_fraction: float = 0.15) -> torch.Tensor:
    """bool ``h×w`` foreground by LOST-style seed expansion over ``h×w×D`` patch features."""
    h, w, d = features.shape
    f = features.reshape(-1, d).double()
    f = f - f.mean(dim=0)
    corr = f @ f.T
    degree = (corr > 0).sum(dim=1)
    seed = int(torch.argmin(degree))
    k = max(1, round(seed_fraction * h * w))
    candidates = torch.argsort(degree, stable=True)[:k]
    seeds = candidates[corr[seed, candidates] > 0]
    if seeds.numel() == 0:  # cannot happen unless the seed feature is exactly the mean
        seeds = torch.tensor([seed])
    fg = (corr[:, seeds].sum(dim=1) > 0).reshape(h, w).numpy()
    return torch.from_numpy(_component_containing(fg, divmod(seed, w)))


def discover(model: torch.nn.Module, image: torch.Tensor, method: str = "attention", keep: float = 0.6,
             heads: str = "mean") -> torch.Tensor:
    """bool ``h×w`` patch-level foreground of one normalised ``3×H×W`` image by ``method``.

    ``keep`` and ``heads`` apply to the attention method (see :func:`mask_from_attention`).
    """
    return _discover_all(model, image, (method,), keep, heads)[method]


def _discover_all(model: torch.nn.Module, image: torch.Tensor, methods: Sequence[str], keep: float,
                  heads: str = "mean") -> dict[str, torch.Tensor]:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {unknown[0]!r}")
    # one backbone pass for the attention, one for the patch features however many methods use them
    feats = patch_features(model, image) if {"pca", "similarity"} & set(methods) else None
    out = {}
    for m in methods:
        if m == "attention":
            out[m] = mask_from_attention(attention_maps(model, image), keep, heads)
        elif m == "pca":
            out[m] = mask_from_pca(feats)
        else:
            out[m] = mask_from_similarity(feats)
    return out


class MaskedImages(Protocol):
    """What :func:`evaluate_object_discovery` needs: ``builtin:shapes`` is one."""

    def __len__(self) -> int: ...
    def load(self, i: int) -> torch.Tensor: ...
    def masks(self, i: int) -> Any: ...


def gt_mask(masks: Any) -> torch.Tensor:
    """A ground-truth mask as bool ``H×W``: nonzero pixels, several ``K×H×W`` object masks joined."""
    m = torch.as_tensor(np.asarray(masks))
    if m.dim() == 3:
        m = (m != 0).any(dim=0)
    if m.dim() != 2:
        raise ValueError(f"expected an H×W or K×H×W ground-truth mask, got shape {tuple(m.shape)}")
    return m != 0


def object_masks(model: torch.nn.Module, image: torch.Tensor, methods: Sequence[str] = ("attention",), *,
                 image_size: int | None = None, keep: float = 0.6, heads: str = "mean",
                 preprocess: Any = None) -> dict[str, torch.Tensor]:
    """Pixel masks of one ``uint8 3×H×W`` image: ``{method: bool H×W}`` at the image's own size.

    The image is sized for the model by :func:`dinolab.eval.viz.prepare_image` (shorter side about
    ``image_size``, default that of ``preprocess`` / ``model.preprocess``, else 224; sides multiples of
    the patch size) and normalised as the model's preprocess says; each patch mask is upsampled back
    to ``H×W`` with nearest neighbour.
    """
    from ..models.preprocess import resolve_preprocess

    pp = resolve_preprocess(model, image_size=image_size, preprocess=preprocess)
    _, x = prepare_image(image, model.patch_size, preprocess=pp)
    size = (image.shape[1], image.shape[2])
    masks = _discover_all(model, x, methods, keep, heads)
    return {m: upsample(mask, size, mode="nearest") for m, mask in masks.items()}


def box_baselines(gts: Sequence[torch.Tensor]) -> dict[str, float]:
    """Mean Jaccard of centred boxes against ``gts``: the 50%-area box and the best area in ``BOX_AREAS``."""
    means = {a: float(np.mean([jaccard(centered_box(*g.shape, a), g) for g in gts])) for a in BOX_AREAS}
    best = max(means, key=means.get)
    return {"box_jaccard": means[0.5], "best_box_jaccard": means[best], "best_box_area": best}


@dataclass
class ObjectDiscoveryResult:
    """Mean Jaccard of ``method`` and of the centred-box baselines (see :func:`box_baselines`) over ``n`` images."""

    method: str
    n: int
    jaccard: float
    box_jaccard: float
    best_box_jaccard: float
    best_box_area: float
    per_image: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ObjectsResult:
    """What :func:`evaluate_objects` found.

    Attributes:
        methods: the methods run, in order.
        n: images evaluated (readable ones); ``n_scored``: of those, with ground-truth masks.
        jaccard: ``{method: mean Jaccard}`` over the scored images (empty without ground truth).
        per_image: ``{method: [Jaccard per scored image]}``.
        baselines: :func:`box_baselines` of the scored images (empty without ground truth).
        bad: ``(path, reason)`` of each unreadable image.
    """

    methods: list[str]
    n: int = 0
    n_scored: int = 0
    jaccard: dict[str, float] = field(default_factory=dict)
    per_image: dict[str, list[float]] = field(default_factory=dict)
    baselines: dict[str, float] = field(default_factory=dict)
    bad: list[tuple[str, str]] = field(default_factory=list)


@torch.no_grad()
def evaluate_objects(model: torch.nn.Module, dataset: Any, methods: Sequence[str] = ("attention",), *,
                     image_size: int | None = None, preprocess: Any = None, keep: float = 0.6, heads: str = "mean",
                     limit: int | None = None, device: str | torch.device = "auto", precision: str = "auto",
                     progress: bool = True,
                     on_image: Callable[[int, torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None], None]
                     | None = None) -> ObjectsResult:
    """Object masks of the first ``limit`` images of ``dataset`` by each of ``methods``, scored by Jaccard
    against ``dataset.masks(i)`` where the data has masks (``masks`` missing or returning None: unscored).

    Args:
        model: a ViT backbone; moved to ``device`` and run in ``precision`` (see :mod:`dinolab.device`).
        dataset: ``len``, ``load(i, min_size=None)`` -> uint8 ``3×H×W``, optionally ``masks(i)``.
        image_size, preprocess: how images are sized and normalised (see :func:`object_masks`).
        on_image: called as ``on_image(i, image, masks, gt)`` per readable image (``masks``:
            ``{method: bool H×W}``; ``gt``: bool ``H×W`` or None), e.g. to write pictures.

    Unreadable images are skipped and listed in ``bad``.
    """
    from tqdm import tqdm

    from ..data.decode import UnreadableImage
    from ..device import autocast, resolve_device, resolve_precision
    from ..models.preprocess import resolve_preprocess

    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    pp = resolve_preprocess(model, image_size=image_size, preprocess=preprocess)
    model = model.to(dev).eval()
    n = len(dataset) if limit is None else min(limit, len(dataset))
    res = ObjectsResult(list(methods), per_image={m: [] for m in methods})
    gts: list[torch.Tensor] = []
    sized = "min_size" in inspect.signature(dataset.load).parameters  # decode large files at a reduced scale
    for i in tqdm(range(n), desc="objects", disable=None if progress else True):
        try:
            image = dataset.load(i, min_size=pp.image_size) if sized else dataset.load(i)
        except UnreadableImage as e:
            res.bad.append((e.path, e.reason))
            continue
        with autocast(dev, prec):  # the image stays on the CPU: the model's forward moves the batch
            masks = object_masks(model, image, methods, keep=keep, heads=heads, preprocess=pp)
        gt = dataset.masks(i) if hasattr(dataset, "masks") else None
        if gt is not None:
            gt = gt_mask(gt)
            gts.append(gt)
            for m, mask in masks.items():
                res.per_image[m].append(jaccard(mask, gt))
        res.n += 1
        if on_image is not None:
            on_image(i, image, masks, gt)
    res.n_scored = len(gts)
    if gts:
        res.jaccard = {m: float(np.mean(v)) for m, v in res.per_image.items()}
        res.baselines = box_baselines(gts)
    return res


def evaluate_object_discovery(model: torch.nn.Module, dataset: MaskedImages, method: str = "attention", *,
                              image_size: int | None = None, keep: float = 0.6, heads: str = "mean",
                              limit: int | None = None, progress: bool = True) -> ObjectDiscoveryResult:
    """Mean Jaccard of ``method``'s masks against ``dataset.masks(i)``, next to centred boxes.

    Masks are compared at each image's own resolution (see :func:`object_masks`); one method of
    :func:`evaluate_objects`, on the CPU in fp32.

    Examples:
        >>> from dinolab.data import ImageDataset                     # doctest: +SKIP
        >>> r = evaluate_object_discovery(model, ImageDataset("builtin:shapes"), "attention")  # doctest: +SKIP
        >>> r.jaccard, r.box_jaccard                                  # doctest: +SKIP
    """
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise ValueError("object discovery needs at least one image")
    r = evaluate_objects(model, dataset, (method,), image_size=image_size, keep=keep, heads=heads, limit=n,
                         device="cpu", precision="fp32", progress=progress)
    if r.n_scored == 0:
        raise ValueError("object discovery needs ground-truth masks (dataset.masks(i)); none were found")
    return ObjectDiscoveryResult(method=method, n=r.n_scored, jaccard=r.jaccard[method], per_image=r.per_image[method],
                                 **r.baselines)
