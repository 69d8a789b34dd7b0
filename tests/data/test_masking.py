import math
import random

import numpy as np
import pytest
import torch

from dinolab.data.masking import MaskingGenerator, sample_ibot_masks
from dinolab.errors import ConfigError


def _components(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """4-connected components of a 2-D bool array, by flood fill."""
    seen = np.zeros_like(mask)
    comps = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        stack, comp = [start], []
        seen[start] = True
        while stack:
            i, j = stack.pop()
            comp.append((i, j))
            for a, b in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
                if 0 <= a < mask.shape[0] and 0 <= b < mask.shape[1] and mask[a, b] and not seen[a, b]:
                    seen[a, b] = True
                    stack.append((a, b))
        comps.append(comp)
    return comps


def test_masks_never_exceed_target_and_mostly_reach_it():
    gen = MaskingGenerator((14, 14), max_num_patches=98)
    rng = random.Random(0)
    fill = []
    for _ in range(300):
        target = rng.randint(0, 98)
        m = gen(target, rng)
        assert m.shape == (14, 14) and m.dtype == torch.bool
        assert int(m.sum()) <= target
        if target:
            fill.append(int(m.sum()) / target)
    assert gen(0, rng).sum() == 0
    assert np.mean(fill) > 0.9


def test_masks_are_made_of_blocks():
    """Blocks of a ≥4-patch target have ≥3 patches (h·w rounding can give 1×3); only the tail blocks, drawn once
    fewer than 4 patches remain (≤3 patches in all), can be smaller; nearly all masked patches sit in blocks ≥4."""
    gen = MaskingGenerator((14, 14), max_num_patches=98)
    rng = random.Random(1)
    in_big, total = 0, 0
    for _ in range(300):
        m = gen(rng.randint(20, 98), rng).numpy()
        sizes = [len(c) for c in _components(m)]
        assert sum(s for s in sizes if s < 3) <= 3
        in_big += sum(s for s in sizes if s >= 4)
        total += sum(sizes)
    assert in_big / total > 0.97


@pytest.mark.parametrize("area, aspect", [(9, 1.0), (16, 4.0), (16, 0.25), (18, 2.0)])
def test_a_single_block_has_the_requested_area_and_aspect(area, aspect):
    # min = max = target area and a fixed aspect: one block of round(sqrt(A·a)) rows × round(sqrt(A/a)) columns.
    gen = MaskingGenerator((14, 14), max_num_patches=area, min_num_patches=area, min_aspect=aspect, max_aspect=aspect)
    h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
    m = gen(h * w, random.Random(2)).numpy()
    rows, cols = np.nonzero(m)
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (h, w)
    assert m.sum() == h * w


def test_default_aspect_range_gives_both_orientations_within_rounding_bounds():
    gen = MaskingGenerator((14, 14), max_num_patches=98)
    rng = random.Random(3)
    ratios = []
    for _ in range(400):
        m = gen(rng.randint(4, 30), rng).numpy()
        for comp in _components(m):
            r = np.array(comp)
            hh, ww = np.ptp(r[:, 0]) + 1, np.ptp(r[:, 1]) + 1
            if hh * ww == len(comp):  # a solid rectangle: one block
                ratios.append(hh / ww)
    ratios = np.array(ratios)
    # aspect in [0.3, 1/0.3]; rounding a ≥4-patch area can stretch it to 1×5 at most.
    assert ratios.min() >= 1 / 5 and ratios.max() <= 5
    assert (ratios < 0.7).mean() > 0.2 and (ratios > 1.4).mean() > 0.2


def test_ibot_masks_stratified_ratios_and_count():
    n, grid = 64, (14, 14)
    N = 196
    rng = random.Random(4)
    masks = sample_ibot_masks(n, grid, probability=0.5, ratio_range=(0.1, 0.5), generator=rng)
    assert masks.shape == (n, N) and masks.dtype == torch.bool
    counts = masks.sum(1)
    masked = counts[counts > 0]
    assert len(masked) == int(n * 0.5)
    probs = np.linspace(0.1, 0.5, 33)
    # masked crop i asks for int(N·U(probs[i], probs[i+1])) and never exceeds it: sorted counts lie below
    # the sorted upper bounds, and the masked ratios spread over the whole range.
    upper = np.floor(N * probs[1:])
    assert (np.sort(masked.numpy()) <= upper).all()
    assert masked.max() / N <= 0.5 and masked.min() >= 1
    assert masked.max() / N > 0.4 and masked.min() / N < 0.15
    # the masked crops are shuffled among all crops, not the first half
    assert 0 < int((counts[: n // 2] > 0).sum()) < n // 2


def test_ibot_masks_resume_from_saved_rng_state():
    rng = random.Random(5)
    sample_ibot_masks(8, (6, 6), generator=rng)
    state = rng.getstate()
    a = sample_ibot_masks(8, (6, 6), generator=rng)
    rng.setstate(state)
    b = sample_ibot_masks(8, (6, 6), generator=rng)
    c = sample_ibot_masks(8, (6, 6), generator=rng)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_ibot_mask_edge_cases():
    assert sample_ibot_masks(3, (4, 4), probability=0.0, generator=random.Random(0)).sum() == 0
    assert sample_ibot_masks(0, (4, 4), generator=random.Random(0)).shape == (0, 16)
    with pytest.raises(ConfigError, match="ratio_range"):
        sample_ibot_masks(4, (4, 4), ratio_range=(0.5, 0.1))
