"""`dinolab bench runtime --quick`: four workloads per model, speeds relative to torch fp32, cosines."""

import json

import pytest

from dinolab.cli import main

pytest.importorskip("onnxruntime")


def test_bench_runtime_quick(tmp_path, capsys):
    out = tmp_path / "rt.json"
    assert main(["bench", "runtime", "--quick", "--repeats", "1", "--warmup", "0", "--batch", "1",
                 "--out", str(out)]) == 0
    assert "CPU runtimes" in capsys.readouterr().out
    entry, = json.loads(out.read_text())["runtime"]["models"]
    assert entry["model"] == "dinov2_vits14"
    for w in ("torch/fp32", "torch/bf16", "onnx/fp32", "onnx/int8"):
        e = entry[w]
        assert e["vs_torch_fp32"] == pytest.approx(e["images_per_s"] / entry["torch/fp32"]["images_per_s"])
    assert entry["torch/fp32"]["cosine_cls"]["min"] == pytest.approx(1.0)
    assert entry["onnx/fp32"]["cosine_patches"]["min"] > 0.99999  # the same function
    assert entry["onnx/int8"]["cosine_cls"]["min"] > 0.9
