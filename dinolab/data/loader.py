"""Batches of decoded, resized ``uint8`` images for training and evaluation.

Workers only decode and resize (augmentation runs batched on the training device, see
:mod:`dinolab.data.multicrop`). Unreadable files are dropped inside the worker and reported
with the batch, never raised. Each batch is a dict:

- ``images``: ``(B, 3, H, W)`` uint8, each image in the top-left corner, zero padding elsewhere
- ``sizes``: ``(B, 2)`` long, the valid ``(h, w)`` of each image
- ``labels``: ``(B,)`` long, ``-1`` when the data set has no labels
- ``indices``: ``(B,)`` long, positions in the data set
- ``bad``: list of ``(path, reason)`` for the files of this batch that could not be read

``B`` is the number of readable images, so a batch can be smaller than ``batch_size``
(even empty, when every file in it is bad).

Two resize modes:

- ``"train"``: the shorter side becomes ``load_size``; an image longer than ``max_aspect``
  times its shorter side is first centre-cropped to that aspect, so panoramas and 1-pixel
  strips neither explode in memory nor dominate the padding.
- ``"eval"``: the shorter side becomes ``round(load_size * 256 / 224)`` (bicubic, antialiased),
  then a centre ``load_size`` x ``load_size`` crop: the standard k-NN / linear-probe protocol.
  With ``preprocess=`` (a :class:`dinolab.models.Preprocess`) its resize rule is used instead.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from .decode import UnreadableImage

RESIZE_MODES = ("train", "eval")
_EVAL_RATIO = 256 / 224
# In eval mode an image is pre-cropped only beyond this aspect (far past any photo), so ordinary
# images are resized exactly as Resize + CenterCrop would.
_EVAL_MAX_ASPECT = 4.0


def resize_train(image: torch.Tensor, load_size: int, max_aspect: float = 2.0) -> torch.Tensor:
    """``(3, H, W)`` uint8 -> ``(3, h, w)`` uint8 with ``min(h, w) == load_size`` and aspect <= ``max_aspect``."""
    image = _crop_aspect(image, max_aspect)
    h, w = image.shape[-2:]
    scale = load_size / min(h, w)
    return _resize(image, (max(1, round(h * scale)), max(1, round(w * scale))))


def resize_eval(image: torch.Tensor, image_size: int, *, crop_fraction: float | None = None,
                interpolation: str = "bicubic") -> torch.Tensor:
    """``(3, H, W)`` uint8 -> ``(3, image_size, image_size)``: shorter side to ``round(image_size*256/224)``
    (or ``round(image_size / crop_fraction)``; antialiased ``interpolation``), then the centre crop."""
    image = _crop_aspect(image, _EVAL_MAX_ASPECT)
    h, w = image.shape[-2:]
    short = round(image_size * _EVAL_RATIO) if crop_fraction is None else round(image_size / crop_fraction)
    # Resize(int) semantics: the longer side is truncated, not rounded.
    new_h, new_w = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
    image = _resize(image, (new_h, new_w), interpolation)
    top, left = int(round((new_h - image_size) / 2)), int(round((new_w - image_size) / 2))
    return image[:, top:top + image_size, left:left + image_size]


def resize_exact(image: torch.Tensor, size: tuple[int, int], interpolation: str = "bicubic") -> torch.Tensor:
    """``(3, H, W)`` uint8 -> ``(3, *size)`` uint8, aspect not kept (antialiased ``interpolation``)."""
    return _resize(image, tuple(size), interpolation)


def _crop_aspect(image: torch.Tensor, max_aspect: float) -> torch.Tensor:
    """Centre-crop the longer side so that ``long <= max_aspect * short``."""
    h, w = image.shape[-2:]
    keep = max(1, int(min(h, w) * max_aspect))
    if h > keep:
        top = (h - keep) // 2
        return image[:, top:top + keep]
    if w > keep:
        left = (w - keep) // 2
        return image[:, :, left:left + keep]
    return image


def _resize(image: torch.Tensor, size: tuple[int, int], interpolation: str = "bicubic") -> torch.Tensor:
    if tuple(image.shape[-2:]) == size:
        return image
    x = F.interpolate(image[None].float(), size=size, mode=interpolation, align_corners=False, antialias=True)
    return x[0].round_().clamp_(0, 255).to(torch.uint8)


class ShardedSampler(Sampler[int]):
    """Indices for one process: the whole set, or this rank's share under ``torch.distributed``.

    Each epoch is a fresh permutation (when ``shuffle``) that depends only on ``seed`` and the
    epoch, so every rank draws the same one and takes every ``world_size``-th index from
    ``rank`` on. Without ``drop_last`` the permutation is padded by wrapping around so every rank
    gets the same count (as ``DistributedSampler``); with it the tail is dropped. :meth:`skip`
    resumes mid-epoch.

    Examples:
        >>> s = ShardedSampler(10, shuffle=True, seed=0, rank=1, world_size=2)
        >>> s.set_epoch(3); s.skip(2)
        >>> len(s)
        3
    """

    def __init__(self, n: int, *, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 rank: int | None = None, world_size: int | None = None):
        distributed = dist.is_available() and dist.is_initialized()
        self.rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        self.world_size = world_size if world_size is not None else (dist.get_world_size() if distributed else 1)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in [0, {self.world_size})")
        self.n, self.shuffle, self.seed, self.drop_last = n, shuffle, seed, drop_last
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of ``epoch`` and start at its beginning."""
        self.epoch, self.start = epoch, 0

    def skip(self, n_samples: int) -> None:
        """Start this epoch after the first ``n_samples`` of this rank's indices (resume mid-epoch)."""
        self.start = n_samples

    def shard(self) -> np.ndarray:
        """This rank's indices for the current epoch, before :meth:`skip` is applied."""
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle
                 else np.arange(self.n))
        if self.drop_last:
            order = order[: (self.n // self.world_size) * self.world_size]
        else:
            total = math.ceil(self.n / self.world_size) * self.world_size
            order = np.resize(order, total)  # wraps around
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard()[self.start:].tolist())

    def __len__(self) -> int:
        return max(0, len(self.shard()) - self.start)


class _Decoded(Dataset):
    """Decode + resize one item in a worker; a bad file becomes a report, not an exception."""

    def __init__(self, dataset: Any, resize_mode: str, load_size: int, max_aspect: float, preprocess: Any = None):
        self.dataset, self.resize_mode, self.load_size, self.max_aspect = dataset, resize_mode, load_size, max_aspect
        self.preprocess = preprocess
        labels = getattr(dataset, "labels", None)
        self.labels = None if labels is None else np.asarray(labels)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        label = -1 if self.labels is None else int(self.labels[i])
        try:
            if self.resize_mode == "train":
                # Decoding large JPEGs at a reduced scale is fine for training, not for the eval protocol.
                image = resize_train(self.dataset.load(i, min_size=self.load_size), self.load_size, self.max_aspect)
            elif self.preprocess is not None:
                image = self.preprocess.resize_image(self.dataset.load(i))
            else:
                image = resize_eval(self.dataset.load(i), self.load_size)
        except UnreadableImage as e:
            return {"index": i, "label": label, "image": None, "bad": (e.path, e.reason)}
        return {"index": i, "label": label, "image": image, "bad": None}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack decoded items into a padded batch (see the module docstring), dropping bad ones."""
    good = [it for it in items if it["image"] is not None]
    sizes = torch.tensor([list(it["image"].shape[-2:]) for it in good], dtype=torch.long).reshape(-1, 2)
    h, w = (int(sizes[:, 0].max()), int(sizes[:, 1].max())) if good else (0, 0)
    images = torch.zeros(len(good), 3, h, w, dtype=torch.uint8)
    for k, it in enumerate(good):
        images[k, :, : sizes[k, 0], : sizes[k, 1]] = it["image"]
    return {
        "images": images,
        "sizes": sizes,
        "labels": torch.tensor([it["label"] for it in good], dtype=torch.long),
        "indices": torch.tensor([it["index"] for it in good], dtype=torch.long),
        "bad": [it["bad"] for it in items if it["image"] is None],
    }


def make_loader(dataset: Any, batch_size: int, *, shuffle: bool = False, drop_last: bool = False,
                num_workers: int = 0, seed: int = 0, resize_mode: str = "eval", load_size: int = 224,
                max_aspect: float = 2.0, sampler: Sampler | None = None, epoch: int = 0, start_batch: int = 0,
                pin_memory: bool = False, preprocess: Any = None) -> DataLoader:
    """A ``DataLoader`` over ``dataset`` (an :class:`~dinolab.data.ImageDataset` or anything with
    ``paths``, ``labels`` and ``load(i, min_size=None)``) yielding the batches described above.

    Args:
        batch_size: files per batch (before bad ones are dropped).
        shuffle, seed, epoch: order of a :class:`ShardedSampler` (a fresh permutation per epoch;
            under ``torch.distributed`` each rank gets its share). Call ``loader.sampler.set_epoch(e)``
            for later epochs.
        drop_last: drop the last incomplete batch (and, distributed, the tail that does not divide).
        num_workers: decoding processes (0 decodes in this process).
        resize_mode: ``"train"`` (shorter side ``load_size``, aspect capped at ``max_aspect``, padded)
            or ``"eval"`` (fixed ``load_size`` square centre crop).
        sampler: your own sampler instead of the ShardedSampler (``set_epoch`` called if it has one).
        start_batch: resume the epoch after this many batches (needs a sampler with ``skip``).
        preprocess: in eval mode, an object whose ``resize_image(uint8 3xHxW)`` gives the square fed to the
            model (a :class:`dinolab.models.Preprocess`); ``load_size`` must then be its ``image_size``.

    Examples:
        >>> from dinolab.data import ImageDataset
        >>> loader = make_loader(ImageDataset("builtin:shapes?n=8&size=32"), 4, resize_mode="eval", load_size=16)
        >>> batch = next(iter(loader))
        >>> batch["images"].shape, batch["sizes"][0].tolist(), batch["bad"]
        (torch.Size([4, 3, 16, 16]), [16, 16], [])
    """
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode={resize_mode!r} is not one of {RESIZE_MODES}")
    if batch_size < 1 or load_size < 1:
        raise ValueError(f"batch_size ({batch_size}) and load_size ({load_size}) must be positive")
    if sampler is None:
        sampler = ShardedSampler(len(dataset), shuffle=shuffle, seed=seed, drop_last=drop_last)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    if start_batch:
        if not hasattr(sampler, "skip"):
            raise ValueError("start_batch needs a sampler with a skip(n_samples) method, e.g. ShardedSampler")
        sampler.skip(start_batch * batch_size)
    return DataLoader(_Decoded(dataset, resize_mode, load_size, max_aspect, preprocess), batch_size=batch_size,
                      sampler=sampler, num_workers=num_workers, collate_fn=collate, drop_last=drop_last,
                      pin_memory=pin_memory, persistent_workers=num_workers > 0)
