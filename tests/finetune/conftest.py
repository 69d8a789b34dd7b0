"""Tiny labelled folders and a tiny backbone for the fine-tuning tests (16 px digits, ViT dim 32, depth 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

FAST = dict(device="cpu", precision="fp32", progress=False, num_workers=0)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: tiny tensors on a shared 2-core machine are many times faster without barriers."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_digits(root, counts, seed_offset=0):
    """``root/d<c>/<i>.png``: ``counts[c]`` real 16 px digits of class ``c``; returns ``root``."""
    from dinolab.data.builtin import load_builtin

    s = load_builtin("builtin:digits?size=16")
    for c, n in enumerate(counts):
        idx = np.flatnonzero(s.labels == c)[seed_offset:seed_offset + n]
        (root / f"d{c}").mkdir(parents=True, exist_ok=True)
        for i in idx:
            Image.fromarray(s.images[i].transpose(1, 2, 0)).save(root / f"d{c}" / f"{i}.png")
    return root


@pytest.fixture
def digits(tmp_path):
    return write_digits(tmp_path / "digits", [10, 10, 10])


@pytest.fixture
def tiny_weights(tmp_path):
    import dinolab

    torch.manual_seed(0)
    model = dinolab.create_model("vit_tiny", img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    return str(dinolab.save_model(model, tmp_path / "tiny"))
