"""Semi-supervised video object segmentation by label propagation (DINO v1's DAVIS protocol).

Given the object masks of the first frame, each later frame's labels are a weighted vote of the labels of
context patches (Caron et al., 2021, after Jabri et al. / UVC):

1. features: the last block's patch tokens (after the final norm), L2-normalised, ``h×w×D`` per frame;
2. context: the first frame with its given mask (one-hot per object at patch resolution: the object
   index at each patch's centre pixel) plus the ``n_last_frames`` = 7 previous frames with their predicted
   soft labels (patch resolution, not argmaxed);
3. affinity of target patch ``t`` to context patch ``s``: ``exp(cos(f_t, f_s) / 0.1)``, zero unless ``s``
   lies within ``radius`` = 12 patches of ``t`` in both directions (a (2·12+1)² square);
4. per target patch, the ``topk`` = 5 largest affinities over all context frames are kept (ties with the
   5th kept too), normalised to sum to 1; the target's soft labels are the weighted sum of the sources';
5. output: the soft labels bilinearly upsampled to the frame's working size, each object channel min-max
   scaled to [0, 1] (``norm_mask``), argmax, then nearest-resized to the frame's own size.

All frames are resized to the first frame's working size (shorter side about ``image_size``, both sides
multiples of the patch size; DINO v1 floors the longer side to a multiple of 64 instead), so every frame
has the same patch grid.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PropagationSettings:
    """DINO v1's ``eval_video_segmentation.py`` defaults."""

    n_last_frames: int = 7
    radius: int = 12  # size_mask_neighborhood, in patches (<= 0: no restriction)
    topk: int = 5
    temperature: float = 0.1


def neighbourhood(h: int, w: int, radius: int) -> torch.Tensor:
    """bool ``(h·w, h·w)``: ``[s, t]`` True when patches ``s`` and ``t`` (row-major) are at most ``radius``
    rows and ``radius`` columns apart."""
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    i, j = i.reshape(-1), j.reshape(-1)
    return ((i[:, None] - i[None]).abs() <= radius) & ((j[:, None] - j[None]).abs() <= radius)


def propagate_step(target: torch.Tensor, sources: torch.Tensor, labels: torch.Tensor,
                   allowed: torch.Tensor | None, topk: int = 5, temperature: float = 0.1, chunk: int = 1024
                   ) -> torch.Tensor:
    """Soft labels of one target frame from its context.

    Args:
        target: ``(N, D)`` target patch features; sources: ``(M, N, D)`` features of the M context frames
            (both L2-normalised here).
        labels: ``(M, C, N)`` soft labels of the context patches.
        allowed: bool ``(N, N)`` ``[source, target]`` neighbourhood (None: every pair).
        chunk: target patches done at once (each is independent; this bounds the ``M·N × chunk`` affinities).

    Returns:
        ``(C, N)`` target soft labels, each patch's weights summing to 1 over its top-k sources.
    """
    t = F.normalize(target.float(), dim=-1)
    s = F.normalize(sources.float(), dim=-1)
    m, c, n = labels.shape
    flat = labels.float().permute(1, 0, 2).reshape(c, m * n)
    out = []
    for lo in range(0, t.shape[0], chunk):
        aff = torch.exp(torch.einsum("msd,td->mst", s, t[lo:lo + chunk]) / temperature)  # (M, N_source, chunk)
        if allowed is not None:
            aff = aff * allowed[None, :, lo:lo + chunk]
        aff = aff.reshape(m * n, -1)
        kth = torch.topk(aff, k=min(topk, aff.shape[0]), dim=0).values.min(dim=0).values
        aff = torch.where(aff < kth, torch.zeros_like(aff), aff)
        out.append(flat @ (aff / aff.sum(dim=0, keepdim=True)))
    return torch.cat(out, dim=1)


def first_frame_labels(mask: np.ndarray, grid: tuple[int, int], object_ids: list[int]) -> torch.Tensor:
    """One-hot ``(C, h, w)`` float of an ``H×W`` object-index mask at patch resolution: the value at each
    patch's centre pixel (nearest), one channel per entry of ``object_ids``."""
    h, w = grid
    rows = np.minimum(((np.arange(h) + 0.5) * mask.shape[0] / h).astype(int), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * mask.shape[1] / w).astype(int), mask.shape[1] - 1)
    small = torch.from_numpy(mask[np.ix_(rows, cols)].astype(np.int64))
    return torch.stack([(small == k).float() for k in object_ids])


def hard_mask(soft: torch.Tensor, work_size: tuple[int, int], out_size: tuple[int, int],
              object_ids: list[int]) -> np.ndarray:
    """``(C, h, w)`` soft labels -> ``uint8 H×W`` object indices at ``out_size`` (see step 5 above)."""
    up = F.interpolate(soft[None].float(), size=work_size, mode="bilinear", align_corners=False)[0]
    lo = up.amin(dim=(1, 2), keepdim=True)
    hi = up.amax(dim=(1, 2), keepdim=True)
    up = torch.where(hi > 0, (up - lo) / (hi - lo).clamp_min(1e-12), up)  # norm_mask: channels with a max > 0
    index = up.argmax(dim=0)
    if tuple(work_size) != tuple(out_size):
        index = F.interpolate(index[None, None].float(), size=out_size, mode="nearest-exact")[0, 0].long()
    return np.asarray(object_ids, np.uint8)[index.cpu().numpy()]


class LabelPropagation:
    """The context of one video: the first frame (features, one-hot labels) and a queue of recent frames.

    ``step(features)`` gives a frame's ``(C, h, w)`` soft labels and puts it in the queue.
    """

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, settings: PropagationSettings = PropagationSettings()):
        h, w, d = features.shape
        self.grid, self.settings = (h, w), settings
        self.first = (features.reshape(h * w, d), labels.reshape(labels.shape[0], h * w).to(features.device))
        self.queue: deque = deque(maxlen=settings.n_last_frames)
        self.allowed = neighbourhood(h, w, settings.radius).to(features.device) if settings.radius > 0 else None

    def step(self, features: torch.Tensor) -> torch.Tensor:
        h, w = self.grid
        if tuple(features.shape[:2]) != (h, w):
            raise ValueError(f"frame has a {tuple(features.shape[:2])} patch grid, the video {(h, w)}")
        target = features.reshape(h * w, -1)
        context = [self.first, *self.queue]
        soft = propagate_step(target, torch.stack([f for f, _ in context]), torch.stack([lab for _, lab in context]),
                              self.allowed, self.settings.topk, self.settings.temperature)
        if self.settings.n_last_frames > 0:
            self.queue.append((target, soft))
        return soft.reshape(-1, h, w)


@torch.no_grad()
def frame_features(model: torch.nn.Module, batch: torch.Tensor, device: torch.device, precision: str) -> torch.Tensor:
    """``(B, h, w, D)`` float32 final-norm patch tokens of a normalised ``(B, 3, H, W)`` batch, on ``device``."""
    from ..device import autocast

    p = model.patch_size
    with autocast(device, precision):
        patches = model.forward_features(batch.to(device))["patches"]
    return patches.float().reshape(batch.shape[0], batch.shape[2] // p, batch.shape[3] // p, -1)
