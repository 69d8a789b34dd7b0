"""LoRA merge equivalence on a real ViT, and temperature scaling against scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from dinolab.finetune.calibration import fit_temperature, nll
from dinolab.finetune.lora import LoRALinear, add_lora, merge_lora
from dinolab.models import VisionTransformer


@pytest.mark.parametrize("options", [{}, {"mask_k_bias": True, "layerscale_init": 1e-1},
                                     {"ffn_layer": "swiglu"}])
def test_merged_lora_equals_adapters(options):
    torch.manual_seed(0)
    vit = VisionTransformer(img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=2, **options)
    keys = sorted(vit.state_dict())
    names = add_lora(vit, rank=4, alpha=8)
    assert len(names) == 2 * (4 if options.get("ffn_layer") != "swiglu" else 5)
    with torch.no_grad():
        for m in vit.modules():
            if isinstance(m, LoRALinear):
                m.lora_b.normal_(std=0.5)  # B starts at zero; make the adapters matter
    x = torch.randn(3, 3, 16, 16)
    vit.eval()
    before = vit.forward_features(x)
    plain = VisionTransformer(img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=2, **options)
    assert merge_lora(vit) == len(names)
    assert sorted(vit.state_dict()) == keys  # an ordinary backbone again
    plain.load_state_dict(vit.state_dict())
    after = plain.eval().forward_features(x)
    for k in ("cls", "patches"):
        assert (before[k] - after[k]).abs().max() <= 1e-5
    assert (before["cls"] - VisionTransformer(img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                                              **options).eval().forward_features(x)["cls"]).abs().max() > 1e-3


def test_lora_starts_as_identity_and_trains_only_adapters():
    lin = torch.nn.Linear(6, 5)
    wrapped = LoRALinear(lin, rank=2, alpha=4)
    x = torch.randn(4, 6)
    assert torch.equal(wrapped(x), lin(x))
    assert [n for n, p in wrapped.named_parameters() if p.requires_grad] == ["lora_a", "lora_b"]
    assert wrapped.scale == 2.0


def _scipy_temperature(z: np.ndarray, y: np.ndarray) -> float:
    def f(log_t):
        return -log_softmax(z / np.exp(log_t), axis=1)[np.arange(len(y)), y].mean()
    return float(np.exp(minimize_scalar(f, bounds=(-4, 4), method="bounded", options={"xatol": 1e-10}).x))


@pytest.mark.parametrize("scale", [0.3, 4.0])
def test_temperature_matches_scipy(scale):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 200)
    z = rng.normal(size=(200, 4))
    z[np.arange(200), y] += 1.0
    z *= scale  # under- or over-confident logits
    t = fit_temperature(torch.tensor(z, dtype=torch.float32), torch.tensor(y))
    assert t == pytest.approx(_scipy_temperature(z.astype(np.float32).astype(np.float64), y), rel=1e-4)
    assert (t > 1) == (scale > 1)
    manual = -log_softmax(z / t, axis=1)[np.arange(200), y].mean()
    assert nll(torch.tensor(z), torch.tensor(y), t) == pytest.approx(manual, rel=1e-6)
