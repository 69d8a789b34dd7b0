"""Patch similarity maps (issue 19 item 1): against a brute-force cosine loop, point mapping, the command."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

import dinolab
from dinolab.cli import main
from dinolab.errors import DataError
from dinolab.eval.dense import dense_image_size, patch_similarity, patch_tokens, point_to_patch
from dinolab.eval.pca import patch_features
from dinolab.eval.viz import prepare_image


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return dinolab.create_model("vit_tiny", img_size=16, patch_size=8, depth=2, embed_dim=32, num_heads=2).eval()


def _image(h: int, w: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8))


def test_patch_tokens_are_the_final_norm_patches_and_layers_concatenate(model):
    x = torch.randn(2, 3, 16, 24)
    with torch.no_grad():
        ff = model.forward_features(x)["patches"]  # B×N×D, row-major over the 2×3 grid
    tokens = patch_tokens(model, x)
    assert tokens.shape == (2, 32, 2, 3)
    assert torch.allclose(tokens.permute(0, 2, 3, 1).reshape(2, 6, 32), ff, atol=1e-5)
    two = patch_tokens(model, x, layers=2)
    assert torch.allclose(two[:, 32:], tokens, atol=1e-6)  # last block last
    assert not torch.allclose(two[:, :32], tokens, atol=1e-3)
    assert torch.allclose(patch_features(model, x[0]), tokens[0].permute(1, 2, 0), atol=1e-6)


def test_similarity_matches_a_brute_force_cosine_loop(model):
    query, ref = _image(40, 56, 1), _image(32, 32, 2)
    size = 24
    maps, resized = patch_similarity(model, query, [(50.0, 3.0), (0, 39)], [ref], image_size=size)
    # independent: resize as the model sees, then per-patch cosine with math on python floats
    grids = []
    for im in (query, ref):
        _, x = prepare_image(im, 8, size)
        with torch.no_grad():
            f = model.forward_features(x[None])["patches"][0]
        grids.append(f.reshape(x.shape[1] // 8, x.shape[2] // 8, -1).double())
    assert [tuple(r.shape[-2:]) for r in resized] == [(24, 32), (24, 24)]
    for result, (px, py) in zip(maps, [(50.0, 3.0), (0, 39)]):
        row, col = int(py * 24 / 40) // 8, int(px * 32 / 56) // 8
        assert result.patch == (row, col)
        q = grids[0][row, col]
        for grid, got in zip(grids, result.maps):
            want = torch.zeros(grid.shape[:2], dtype=torch.float64)
            for i in range(grid.shape[0]):
                for j in range(grid.shape[1]):
                    v = grid[i, j]
                    want[i, j] = float(q @ v) / math.sqrt(float(q @ q) * float(v @ v))
            assert torch.allclose(got.double(), want, atol=1e-5)
        assert result.maps[0][row, col] == pytest.approx(1.0, abs=1e-5)


def test_point_mapping_and_outside_points():
    assert point_to_patch((0, 0), (100, 200), (48, 96), 16) == (0, 0)
    assert point_to_patch((199.9, 99.9), (100, 200), (48, 96), 16) == (2, 5)
    assert point_to_patch((100, 50), (100, 200), (48, 96), 16) == (1, 3)  # 48 px of 96 -> column 3
    for bad in [(200, 0), (-1, 5), (3, 100)]:
        with pytest.raises(DataError, match=r"outside the image \(200x100 pixels"):
            point_to_patch(bad, (100, 200), (48, 96), 16)


def test_dense_default_size_is_twice_the_model_size(model):
    assert dense_image_size(model) == 448  # create_model records no preprocess: the 224 default
    model.preprocess = dinolab.models.Preprocess(image_size=30)
    try:
        assert dense_image_size(model) == 64  # 60 rounded to 8 px patches
    finally:
        del model.preprocess


def test_command_writes_one_overlay_per_point_and_image(tmp_path, model, capsys):
    w = dinolab.save_model(model, tmp_path / "m.safetensors")
    q = tmp_path / "q.jpg"  # a JPEG: decoded at full size (the points are in its pixels)
    Image.fromarray(_image(24, 40, 3).permute(1, 2, 0).numpy()).save(q)
    ref = tmp_path / "refs"
    ref.mkdir()
    for k in range(2):
        Image.fromarray(_image(16, 16, 4 + k).permute(1, 2, 0).numpy()).save(ref / f"r{k}.png")
    out = tmp_path / "out"
    args = ["similarity", str(w), str(q), "--point", "5,5", "--point", "39,23", "--ref", str(ref), "--out", str(out),
            "--device", "cpu", "--no-progress", "--image-size", "16", "--batch-size", "1"]
    assert main(args) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["q_point1.png", "q_point1_r0.png", "q_point1_r1.png", "q_point2.png", "q_point2_r0.png",
                            "q_point2_r1.png", "q_similarity_sheet.png"])
    marked = np.asarray(Image.open(out / "q_point1.png"))
    assert marked.shape[:2] == (16, 24) and (marked == [255, 0, 0]).all(-1).any()  # the red dot
    assert main(args) == 2  # outputs kept without --force
    assert "already exists" in capsys.readouterr().err
    bad = ["similarity", str(w), str(q), "--point", "40,3", "--out", str(tmp_path / "o2"), "--device", "cpu"]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "point 40,3 is outside the image (40x24 pixels" in err and not (tmp_path / "o2").exists()


def test_batching_equal_sizes_changes_nothing(model):
    query, refs = _image(32, 32, 7), [_image(32, 32, 8), _image(24, 40, 9), _image(32, 32, 10)]
    one, _ = patch_similarity(model, query, [(3, 4)], refs, image_size=16, batch_size=1)
    many, _ = patch_similarity(model, query, [(3, 4)], refs, image_size=16, batch_size=8)
    for a, b in zip(one[0].maps, many[0].maps):
        assert torch.allclose(a, b, atol=1e-5)
