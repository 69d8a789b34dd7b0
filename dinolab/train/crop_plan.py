"""Crop sizes per iteration: the configured sizes, Gram-teacher crops and the high-resolution phase.

- Before ``crops.highres.start_epoch``: ``crops.global_crops_size`` / ``crops.local_crops_size``,
  plus Gram-teacher crops of ``gram.img_size`` while the Gram term has a positive weight.
- From ``crops.highres.start_epoch`` on (DINOv3 §5.1 high-resolution adaptation): each iteration
  draws one entry of ``crops.highres`` (global, local, Gram-teacher size) with its probability. The
  draw is a function of ``(train.seed, iteration)`` only, so it is the same on every process and
  after a resume. RoPE backbones take any size; a learned position table is interpolated.

The trainer asks :meth:`CropPlan.multicrop_at` for the :class:`~dinolab.data.MultiCrop` of an
iteration; one instance per distinct size triple is built and reused.

Examples:
    >>> from dinolab.train.config import load_config
    >>> cfg = load_config("default", ["crops.highres.start_epoch=1", "crops.highres.global_sizes=[48]",
    ...                               "crops.highres.local_sizes=[16]", "crops.highres.probabilities=[1.0]"])
    >>> plan = CropPlan(cfg, iters_per_epoch=10)
    >>> plan.sizes_at(9), plan.sizes_at(10)
    (CropSizes(global_size=32, local_size=16, gram_size=None), CropSizes(global_size=48, local_size=16, gram_size=None))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .config import Config
from .objectives.gram_anchoring import GramSchedule

_HIGHRES_STREAM = 0x48524553  # separates the size draw from the iteration's other random streams


@dataclass(frozen=True)
class CropSizes:
    global_size: int
    local_size: int
    gram_size: int | None  # None: no Gram-teacher crops


def max_global_size(global_size: int, highres: list[tuple[int, int, int | None]]) -> int:
    """The largest of ``global_size`` and the high-resolution phase's global sizes."""
    return max([global_size] + [g for g, _, _ in highres])


def largest_global_crop(config: Config) -> int:
    """The largest global crop a run with ``config`` uses (the data loader's default load size is twice it)."""
    h = config.crops.highres
    return max_global_size(config.crops.global_crops_size,
                           [] if h.start_epoch is None else [(g, 0, None) for g in h.global_sizes])


class CropPlan:
    """The crop sizes of every iteration of a run (see the module docstring)."""

    def __init__(self, config: Config, iters_per_epoch: int) -> None:
        cr, h = config.crops, config.crops.highres
        self.seed = config.train.seed
        self.base = CropSizes(cr.global_crops_size, cr.local_crops_size, None)
        self.gram = GramSchedule.from_config(config.gram, iters_per_epoch) if config.gram.loss_weight > 0 else None
        self.gram_size = config.gram.img_size
        self.highres_start = None if h.start_epoch is None else int(round(h.start_epoch * iters_per_epoch))
        self.highres = list(zip(h.global_sizes, h.local_sizes, h.gram_sizes or [None] * len(h.global_sizes)))
        p = np.asarray(h.probabilities, dtype=np.float64)
        self.probabilities = p / p.sum() if p.size and p.sum() > 0 else p
        self._cache: dict[CropSizes, Any] = {}

    @property
    def max_global_size(self) -> int:
        """The largest global crop of the run (the data loader's default load size follows it)."""
        return max_global_size(self.base.global_size, self.highres if self.highres_start is not None else [])

    def sizes_at(self, it: int) -> CropSizes:
        gram_on = self.gram is not None and self.gram.weight_at(it) > 0
        if self.highres_start is not None and it >= self.highres_start:
            rng = np.random.default_rng([self.seed, it, _HIGHRES_STREAM])
            g, loc, gram = self.highres[int(rng.choice(len(self.highres), p=self.probabilities))]
            return CropSizes(g, loc, gram if gram_on else None)
        return CropSizes(self.base.global_size, self.base.local_size, self.gram_size if gram_on else None)

    def multicrop_at(self, it: int, base: Any, make: Callable[[CropSizes], Any]) -> Any:
        """``base`` (the run's own MultiCrop) for the configured sizes, else ``make(sizes)`` (cached)."""
        sizes = self.sizes_at(it)
        if sizes == self.base:
            return base
        if sizes not in self._cache:
            self._cache[sizes] = make(sizes)
        return self._cache[sizes]
