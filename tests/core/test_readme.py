"""The README's claims about the Python API and the official weights stay true."""

import re
from pathlib import Path

import torch

import dinolab

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_forward_features_keys_in_the_readme_are_the_real_ones():
    start = README.index("out = model.forward_features(images)")
    comment = README[start:README.index("emb = dinolab.embed", start)]
    documented = set(re.findall(r'"(\w+)":', comment))
    model = dinolab.create_model("vit_tiny", img_size=16, patch_size=8, depth=1, num_register_tokens=2)
    with torch.no_grad():
        out = model.forward_features(torch.zeros(1, 3, 16, 16))
    assert documented == set(out)
    assert out["masks"] is None and out["prenorm"].shape == (1, 1 + 2 + 4, 192)


def test_the_readme_says_where_official_weights_are_published_and_their_file_names():
    section = README[README.index("**Where the official weights are.**"):]
    for repo in ("facebookresearch/dino", "facebookresearch/dinov2", "facebookresearch/dinov3", "facebook/dinov2-*",
                 "facebook/dinov3-*"):
        assert f"`{repo}" in section, repo
    for name in ("dino_deitsmall16_pretrain.pth", "_full_checkpoint.pth", "dinov2_vit{s,b,l,g}14_reg4_pretrain.pth",
                 "dinov3_vits16_pretrain_lvd1689m-08c60483.pth", "`config.json`", "`model.safetensors`"):
        assert name in section, name
    assert "http" not in section.split("dinolab's own files")[0]  # names, not invented links
