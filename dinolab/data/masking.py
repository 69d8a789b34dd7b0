"""iBOT block masks: BEiT-style rectangular blocks on the patch grid, with DINOv2's stratified ratios.

All randomness comes from a ``random.Random`` passed in by the caller (DINOv2 uses Python's global
``random``). Its state is a plain picklable tuple: save ``rng.getstate()`` with a checkpoint and
``rng.setstate(state)`` on resume to get the same masks again.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch

from ..errors import ConfigError


class MaskingGenerator:
    """Block masking of an ``h×w`` patch grid (BEiT; DINOv2 ``data/masking.py``).

    Blocks are added until the requested number of patches is masked or a block cannot be added.
    Each block: target area ``U(min_num_patches, m)`` with ``m`` = min(remaining patches,
    ``max_num_patches``), aspect ratio (height/width) log-uniform in ``[min_aspect, max_aspect]``,
    ``h = round(sqrt(area·aspect))``, ``w = round(sqrt(area/aspect))``, which must be smaller than the
    grid; a random position; accepted only if it masks between 1 and ``m`` new patches; up to 10 tries.
    A mask never exceeds the requested count but can fall short of it. As in the reference, a block may
    have fewer than ``min_num_patches`` patches: rounding can make a 1×3 block of a 4-patch target, and
    the last blocks are drawn with a target area below ``min_num_patches`` once fewer patches remain.

    Args:
        input_size: (h, w) of the patch grid (an int for a square grid).
        max_num_patches: largest block area (DINOv2: half the grid).
        min_num_patches: smallest block target area.
        min_aspect, max_aspect: aspect range; ``max_aspect`` defaults to ``1/min_aspect``.

    Shapes: ``__call__(num_masking_patches, rng)`` -> h×w bool tensor.

    Examples:
        >>> gen = MaskingGenerator((14, 14), max_num_patches=98)
        >>> mask = gen(40, random.Random(0))
        >>> mask.shape, int(mask.sum()) <= 40
        (torch.Size([14, 14]), True)
    """

    def __init__(self, input_size: int | tuple[int, int], max_num_patches: float, min_num_patches: int = 4,
                 min_aspect: float = 0.3, max_aspect: float | None = None) -> None:
        self.height, self.width = (input_size, input_size) if isinstance(input_size, int) else map(int, input_size)
        if self.height < 1 or self.width < 1:
            raise ConfigError(f"input_size={input_size!r} must be a positive patch grid (h, w)")
        if min_aspect <= 0 or (max_aspect is not None and max_aspect < min_aspect):
            raise ConfigError(f"aspect range ({min_aspect!r}, {max_aspect!r}) must satisfy 0 < min ≤ max")
        self.max_num_patches = max_num_patches
        self.min_num_patches = min_num_patches
        max_aspect = max_aspect or 1 / min_aspect
        self.log_aspect_ratio = (math.log(min_aspect), math.log(max_aspect))

    def _add_block(self, mask: np.ndarray, max_patches: float, rng: random.Random) -> int:
        """Try (up to 10 times) to add one block masking ≤ ``max_patches`` new patches; return how many."""
        for _ in range(10):
            area = rng.uniform(self.min_num_patches, max_patches)
            aspect = math.exp(rng.uniform(*self.log_aspect_ratio))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if w < self.width and h < self.height:
                top = rng.randint(0, self.height - h)
                left = rng.randint(0, self.width - w)
                block = mask[top: top + h, left: left + w]
                new = h * w - int(block.sum())
                if 0 < new <= max_patches:
                    block[...] = True
                    return new
        return 0

    def __call__(self, num_masking_patches: int, rng: random.Random) -> torch.Tensor:
        """An h×w bool mask with at most ``num_masking_patches`` True entries."""
        mask = np.zeros((self.height, self.width), dtype=bool)
        count = 0
        while count < num_masking_patches:
            added = self._add_block(mask, min(num_masking_patches - count, self.max_num_patches), rng)
            if added == 0:
                break
            count += added
        return torch.from_numpy(mask)


def sample_ibot_masks(n_images: int, grid_hw: tuple[int, int], probability: float = 0.5,
                      ratio_range: tuple[float, float] = (0.1, 0.5), generator: random.Random | None = None,
                      mask_generator: MaskingGenerator | None = None) -> torch.Tensor:
    """iBOT masks for a batch of crops, as DINOv2's collate function draws them.

    ``int(n_images·probability)`` crops get a mask; their ratios are stratified: with
    ``probs = linspace(r0, r1, n_masked + 1)``, masked crop i asks for ``int(N·U(probs[i], probs[i+1]))``
    patches. The other crops get empty masks, and the list is shuffled (so the two global crops of an
    image are masked independently).

    Args:
        n_images: number of crops (DINOv2 masks all 2B global crops of a batch).
        grid_hw: (h, w) patch grid, N = h·w.
        probability: share of crops that are masked.
        ratio_range: (min, max) masked share of a masked crop.
        generator: a seeded ``random.Random`` (save/restore with ``getstate``/``setstate``); None uses a
            fresh unseeded one.
        mask_generator: the block generator; default ``MaskingGenerator(grid_hw, max_num_patches=0.5·N)``
            (DINOv2's ``train.py``).

    Returns:
        n_images×N bool tensor, row-major over the grid (the model's patch order).

    Examples:
        >>> masks = sample_ibot_masks(8, (14, 14), generator=random.Random(0))
        >>> masks.shape, int((masks.sum(1) > 0).sum())
        (torch.Size([8, 196]), 4)
    """
    if not 0.0 <= probability <= 1.0:
        raise ConfigError(f"probability={probability!r} must be in [0, 1] (DINOv2 uses 0.5)")
    if not 0.0 <= ratio_range[0] <= ratio_range[1] <= 1.0:
        raise ConfigError(f"ratio_range={tuple(ratio_range)!r} must satisfy 0 ≤ min ≤ max ≤ 1, e.g. (0.1, 0.5)")
    rng = generator if generator is not None else random.Random()
    h, w = grid_hw
    n_patches = h * w
    gen = mask_generator or MaskingGenerator((h, w), max_num_patches=0.5 * n_patches)
    n_masked = int(n_images * probability)
    probs = np.linspace(ratio_range[0], ratio_range[1], n_masked + 1)
    masks = [gen(int(n_patches * rng.uniform(probs[i], probs[i + 1])), rng) for i in range(n_masked)]
    masks += [torch.zeros(h, w, dtype=torch.bool) for _ in range(n_images - n_masked)]
    rng.shuffle(masks)
    if not masks:
        return torch.zeros(0, n_patches, dtype=torch.bool)
    return torch.stack(masks).flatten(1)


def sample_ibot_masks_at(rows: torch.Tensor, n_total: int, grid_hw: tuple[int, int], probability: float = 0.5,
                         ratio_range: tuple[float, float] = (0.1, 0.5), seed: int = 0,
                         mask_generator: MaskingGenerator | None = None) -> torch.Tensor:
    """Rows ``rows`` of iBOT masks for a batch of ``n_total`` crops, drawing only those rows' blocks.

    The same distribution as :func:`sample_ibot_masks` over all ``n_total`` crops: a permutation drawn
    from ``seed`` gives ``int(n_total·probability)`` crops a masking-ratio stratum each (``linspace``
    of ``ratio_range``); a crop's ratio and blocks come from its own ``random.Random((seed, row))``. So
    a crop's mask depends on its row in the whole batch and on ``seed`` only, not on which rows are
    asked for together (processes, micro-batches), and the work is proportional to ``len(rows)``.

    Shapes: ``rows`` (R,) long in ``[0, n_total)`` -> R×N bool (row-major patch grid).

    Examples:
        >>> full = sample_ibot_masks_at(torch.arange(8), 8, (4, 4), seed=3)
        >>> torch.equal(sample_ibot_masks_at(torch.tensor([5, 2]), 8, (4, 4), seed=3), full[[5, 2]])
        True
    """
    if not 0.0 <= probability <= 1.0:
        raise ConfigError(f"probability={probability!r} must be in [0, 1] (DINOv2 uses 0.5)")
    if not 0.0 <= ratio_range[0] <= ratio_range[1] <= 1.0:
        raise ConfigError(f"ratio_range={tuple(ratio_range)!r} must satisfy 0 ≤ min ≤ max ≤ 1, e.g. (0.1, 0.5)")
    h, w = grid_hw
    n_patches = h * w
    gen = mask_generator or MaskingGenerator((h, w), max_num_patches=0.5 * n_patches)
    n_masked = int(n_total * probability)
    probs = np.linspace(ratio_range[0], ratio_range[1], n_masked + 1)
    stratum = np.full(n_total, -1)
    stratum[np.random.default_rng([seed, 0]).permutation(n_total)[:n_masked]] = np.arange(n_masked)
    masks = []
    for row in rows.tolist():
        s = int(stratum[row])
        if s < 0:
            masks.append(torch.zeros(h, w, dtype=torch.bool))
            continue
        rng = random.Random(int(np.random.SeedSequence([seed, 1, row]).generate_state(1)[0]))
        masks.append(gen(int(n_patches * rng.uniform(probs[s], probs[s + 1])), rng))
    if not masks:
        return torch.zeros(0, n_patches, dtype=torch.bool)
    return torch.stack(masks).flatten(1)
