"""ONNX export of tiny DINO v1 / DINOv2-reg / DINOv3 backbones and a classifier, run by ONNX Runtime."""

import json

import numpy as np
import pytest
import torch

import dinolab
from dinolab.errors import ConfigError, DinolabError
from dinolab.export import export_onnx, load_onnx

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

TINY = dict(depth=1, embed_dim=32, num_heads=2)
MODELS = {  # name -> (preset, training size, traced size)
    "dino": ("dino_vits16", 48, 32),          # learned positions, +0.1 offset resize
    "dinov2_reg": ("dinov2_vits14_reg", 42, 28),  # learned positions, antialiased resize, 4 registers
    "dinov3": ("dinov3_vits16", 32, 32),      # RoPE, 4 storage tokens
}


def tiny(preset: str, img_size: int, seed: int = 0):
    torch.manual_seed(seed)
    m = dinolab.create_model(preset, img_size=img_size, **TINY).eval()
    with torch.no_grad():  # a trained table is far from the 0.02 init; make the resize matter
        if m.pos_embed is not None:
            m.pos_embed.normal_()
        for blk in m.blocks:
            for ls in (blk.ls1, blk.ls2):
                if hasattr(ls, "gamma"):
                    ls.gamma.fill_(1.0)
    return m


@pytest.fixture(scope="module", params=sorted(MODELS))
def exported(request, tmp_path_factory):
    preset, img, traced = MODELS[request.param]
    model = tiny(preset, img)
    path = tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx"
    result = export_onnx(model, path, image_size=traced)
    return model, path, result


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_outputs_match_eager_at_non_square_sizes(exported):
    model, path, result = exported
    assert all(c.ok for c in result.checks) and len(result.checks) == 2
    assert {c.shape[0] for c in result.checks} == {1, 3} and any(c.shape[2] != c.shape[3] for c in result.checks)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert names == (["cls", "patches", "registers"] if model.num_register_tokens else ["cls", "patches"])
    assert [i.name for i in session.get_inputs()] == ["pixel_values"]  # no mask-token input
    p = model.patch_size
    for b, gh, gw in [(2, 3, 5), (1, 4, 2), (2, model.img_size // p, model.img_size // p)]:
        x = torch.randn(b, 3, gh * p, gw * p)
        got = dict(zip(names, session.run(names, {"pixel_values": x.numpy()})))
        with torch.no_grad():
            ref = model.forward_features(x)
        assert got["patches"].shape == (b, gh * gw, 32)
        for name in names:
            assert rel(got[name], ref[name].numpy()) <= 1e-4, (name, b, gh, gw)


def test_metadata_records_preprocessing_and_architecture(exported):
    model, path, _ = exported
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    pre = json.loads(meta["dinolab.preprocess"])
    assert pre["mean"] == [0.485, 0.456, 0.406] and pre["std"] == [0.229, 0.224, 0.225]
    assert int(meta["dinolab.patch_size"]) == model.patch_size
    assert int(meta["dinolab.num_register_tokens"]) == model.num_register_tokens
    assert json.loads(meta["dinolab.config"])["pos_embed_type"] == model.pos_embed_type
    backbone = load_onnx(path)
    assert backbone.depth == 1 and backbone.embed_dim == 32 and backbone.preprocess.image_size == pre["image_size"]


def test_model_preprocess_attribute_is_recorded(tmp_path):
    model = tiny("dinov3_vits16", 32)
    model.preprocess = {"image_size": 48, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "resize": "squash"}
    path = export_onnx(model, tmp_path / "m.onnx", dynamic=False, verify_export=False).paths["fp32"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pre = json.loads(session.get_modelmeta().custom_metadata_map["dinolab.preprocess"])
    assert pre == model.preprocess
    shape = session.get_inputs()[0].shape
    assert shape[1:] == [3, 48, 48] and not isinstance(shape[0], int)  # fixed size, dynamic batch


def test_classifier_head_logits_probabilities_and_class_names(tmp_path):
    model = tiny("dinov2_vits14", 28)
    torch.manual_seed(1)
    head = torch.nn.Linear(64, 3)  # on [cls, mean patch]
    names = ["cat", "dog", "owl"]
    result = export_onnx(model, tmp_path / "clf.onnx", head=head, class_names=names, head_input="cls_patch_mean",
                         image_size=28)
    assert all(c.ok for c in result.checks)
    session = ort.InferenceSession(str(result.paths["fp32"]), providers=["CPUExecutionProvider"])
    assert json.loads(session.get_modelmeta().custom_metadata_map["dinolab.class_names"]) == names
    x = torch.randn(2, 3, 42, 28)
    logits, probs, cls = session.run(["logits", "probabilities", "cls"], {"pixel_values": x.numpy()})
    with torch.no_grad():
        out = model.forward_features(x)
        ref = head(torch.cat([out["cls"], out["patches"].mean(1)], -1))
    assert rel(logits, ref.numpy()) <= 1e-4
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs, torch.softmax(ref, -1).numpy(), atol=1e-5)
    assert model.training is False and head.training is True  # modes restored


def test_fp16_and_int8_variants(tmp_path):
    model = tiny("dinov3_vits16", 32)
    result = export_onnx(model, tmp_path / "m.onnx", fp16=True, int8=True)
    assert set(result.paths) == {"fp32", "fp16", "int8"}
    assert result.paths["int8"].name == "m.int8.onnx" and result.paths["fp16"].name == "m.fp16.onnx"
    by = {v: [c for c in result.checks if c.variant == v] for v in result.paths}
    assert all(min(c.cosine.values()) > 0.999 for c in by["fp16"])
    assert all(min(c.cosine.values()) > 0.99 for c in by["int8"])
    types = {i.op_type for i in onnx.load(str(result.paths["int8"])).graph.node}
    assert any("Integer" in t or "Quant" in t for t in types)  # really quantised
    fp16 = onnx.load(str(result.paths["fp16"]))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer)


def test_invalid_inputs_are_refused_before_export(tmp_path):
    model = tiny("dinov2_vits14", 28)
    with pytest.raises(ConfigError, match="not a multiple of the patch size 14"):
        export_onnx(model, tmp_path / "a.onnx", image_size=30)
    model.preprocess = {"mean": [0.5], "std": [0.5]}
    with pytest.raises(ConfigError, match="mean has 1 values but the model takes 3"):
        export_onnx(model, tmp_path / "a.onnx", image_size=28)
    del model.preprocess
    with pytest.raises(ConfigError, match="2 class names"):
        export_onnx(model, tmp_path / "a.onnx", head=torch.nn.Linear(32, 3), class_names=["a", "b"])
    with pytest.raises(ConfigError, match="opset"):
        export_onnx(model, tmp_path / "a.onnx", opset=11)
    with pytest.raises(ConfigError, match="VisionTransformer"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "a.onnx")
    assert not list(tmp_path.iterdir())  # nothing written


def test_runtime_backbone_checks_its_inputs(exported):
    model, path, _ = exported
    backbone = load_onnx(path)
    with pytest.raises(ConfigError, match="3-channel"):
        backbone.forward_features(torch.randn(1, 1, 32, 32))
    with pytest.raises(ConfigError, match="n_last_blocks=1"):
        backbone.get_intermediate_layers(torch.randn(1, 3, 32, 32), 2)
    p = model.patch_size
    x = torch.randn(1, 3, 2 * p + 3, 3 * p + 1)  # remainder pixels dropped, as the backbone does
    with torch.no_grad():
        ref = model.forward_features(x)["cls"]
    assert rel(backbone(x).numpy(), ref.numpy()) <= 1e-4


def test_not_onnx_files_are_clear_errors(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(DinolabError, match="not a readable ONNX model"):
        load_onnx(bad)
    with pytest.raises(DinolabError, match="does not exist"):
        load_onnx(tmp_path / "missing.onnx")
