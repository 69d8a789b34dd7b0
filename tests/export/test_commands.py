"""`dinolab export` and `dinolab embed --runtime onnx` end to end on a tiny model."""

import numpy as np
import pytest
import torch

import dinolab
from dinolab.cli import main
from dinolab.eval.features import Embeddings

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = dinolab.create_model("dinov2_vits14_reg", img_size=28, depth=1, embed_dim=32, num_heads=2)
    folder = tmp_path_factory.mktemp("w")
    weights = dinolab.save_model(model, folder / "tiny.safetensors")
    out = folder / "tiny.onnx"
    assert main(["export", str(weights), "--out", str(out), "--image-size", "28"]) == 0
    return weights, out


def test_export_prints_the_check_and_refuses_to_overwrite(exported, capsys):
    weights, out = exported
    assert main(["export", str(weights), "--out", str(out), "--image-size", "28"]) == 2
    assert str(out) in capsys.readouterr().err


def test_export_refuses_bad_input_before_tracing(exported, tmp_path, capsys):
    weights, _ = exported
    assert main(["export", str(weights), "--out", str(tmp_path / "a.onnx"), "--image-size", "30"]) == 2
    assert "not a multiple of the patch size 14" in capsys.readouterr().err
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00" * 64)
    assert main(["export", str(junk), "--out", str(tmp_path / "b.onnx")]) == 2
    assert str(junk) in capsys.readouterr().err
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "b.onnx").exists()


def test_embed_runtime_onnx_equals_torch(exported, image_folder, tmp_path, capsys):
    weights, onnx_path = exported
    root = image_folder(classes=("a", "b"), per_class=5, size=(40, 30))
    common = ["--image-size", "42", "--num-workers", "0", "--device", "cpu", "--precision", "fp32", "--patch-mean"]
    assert main(["embed", str(weights), str(root), "--out", str(tmp_path / "t.npz"), *common]) == 0
    assert main(["embed", str(onnx_path), str(root), "--out", str(tmp_path / "o.npz"), "--runtime", "onnx",
                 *common]) == 0
    t, o = Embeddings.load(tmp_path / "t.npz"), Embeddings.load(tmp_path / "o.npz")
    assert o.paths == t.paths and o.classes == t.classes and len(o) == 10
    np.testing.assert_allclose(o.cls, t.cls, rtol=0, atol=1e-4 * np.abs(t.cls).max())
    np.testing.assert_allclose(o.patch_mean, t.patch_mean, rtol=0, atol=1e-4 * np.abs(t.patch_mean).max())
    capsys.readouterr()
    # the wrong runtime for the file is named with the fix
    assert main(["embed", str(onnx_path), str(root), "--out", str(tmp_path / "x.npz")]) == 2
    assert "--runtime onnx" in capsys.readouterr().err
    assert main(["embed", str(weights), str(root), "--out", str(tmp_path / "x.npz"), "--runtime", "onnx"]) == 2
    assert "dinolab export" in capsys.readouterr().err


def test_knn_runs_on_the_onnx_runtime(exported, image_folder, tmp_path):
    _, onnx_path = exported
    root = image_folder(classes=("a", "b"), per_class=4, size=(28, 28))
    assert main(["knn", str(onnx_path), "--train", str(root), "--val", str(root), "--runtime", "onnx",
                 "--image-size", "28", "--num-workers", "0", "--device", "cpu", "--k", "3"]) == 0
