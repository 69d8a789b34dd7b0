"""Loading and saving weights: dinolab format, official DINO v1/v2/v3 layouts, safety and errors."""

import argparse
import json
import os
import pickle

import pytest
import torch

import dinolab
from dinolab.errors import ConfigError, DinolabError, WeightsError
from dinolab.models import DINOHead, VisionTransformer, create_model
from dinolab.models.formats.infer import infer_config
from dinolab.models.formats.tensor_files import write_safetensors
from dinolab.models.presets import PRESETS


def perturbed(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def tiny(name="dinov2_vits14", seed=0, **kw):
    base = dict(embed_dim=192, num_heads=3, depth=2, img_size=32, patch_size=8)  # width 192: 3 heads inferred
    return perturbed(create_model(name, **dict(base, **kw)), seed)


def outputs(model, h=32, w=48):
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = model.forward_features(x)
    return torch.cat([out["cls"][:, None], out["registers"], out["patches"]], dim=1)


# --- dinolab format ---------------------------------------------------------------------------------

def test_save_model_writes_safetensors_and_json_and_loads_back_exactly(tmp_path):
    from safetensors.torch import load_file

    model = tiny("dinov3_vits16")
    path = dinolab.save_model(model, tmp_path / "m", metadata={"run": "abc"})
    assert path == tmp_path / "m.safetensors"
    record = json.loads((tmp_path / "m.json").read_text())
    assert record["format"] == "dinolab" and record["format_version"] == 1
    assert record["config"]["pos_embed_type"] == "rope" and record["metadata"] == {"run": "abc"}
    tensors = load_file(path)  # the reference reader agrees with our streaming writer
    assert sorted(tensors) == sorted(model.state_dict())
    assert all(torch.equal(tensors[k], v) for k, v in model.state_dict().items())

    for spelling in (tmp_path / "m", tmp_path / "m.safetensors", tmp_path / "m.json"):
        loaded = dinolab.load_model(spelling)
        assert loaded.config == model.config and not loaded.training
        assert torch.equal(outputs(loaded), outputs(model))


def test_safetensors_alone_is_enough_and_folder_is_accepted(tmp_path):
    model = tiny("dinov2_vits14_reg")
    dinolab.save_model(model, f"{tmp_path / 'dir'}/")  # a trailing slash means a folder
    assert (tmp_path / "dir" / "model.safetensors").exists()
    assert torch.equal(outputs(dinolab.load_model(tmp_path / "dir")), outputs(model))
    (tmp_path / "dir" / "model.json").unlink()  # the architecture is also in the safetensors header
    assert torch.equal(outputs(dinolab.load_model(tmp_path / "dir" / "model.safetensors")), outputs(model))


def test_save_model_refuses_to_overwrite(tmp_path):
    a, b = tiny(seed=0), tiny(seed=1)
    dinolab.save_model(a, tmp_path / "m.safetensors")
    before = (tmp_path / "m.safetensors").read_bytes()
    with pytest.raises(DinolabError, match="overwrite=True"):
        dinolab.save_model(b, tmp_path / "m.safetensors")
    assert (tmp_path / "m.safetensors").read_bytes() == before
    dinolab.save_model(b, tmp_path / "m.safetensors", overwrite=True)
    assert torch.equal(outputs(dinolab.load_model(tmp_path / "m")), outputs(b))


def test_save_model_unwraps_compiled_or_ddp_style_wrappers(tmp_path):
    class Wrapper(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    model = tiny()
    dinolab.save_model(Wrapper(model), tmp_path / "m")
    assert torch.equal(outputs(dinolab.load_model(tmp_path / "m")), outputs(model))
    with pytest.raises(WeightsError, match="VisionTransformer"):
        dinolab.save_model(DINOHead(8, 4), tmp_path / "head")


def test_pos_embed_resize_override_and_architecture_overrides(tmp_path):
    dinolab.save_model(tiny(), tmp_path / "m")
    m = dinolab.load_model(tmp_path / "m", pos_embed_resize="hf", drop_path_rate=0.2)
    assert m.pos_embed_resize == "hf" and m.config["drop_path_rate"] == 0.2
    with pytest.raises(ConfigError, match="pos_embed_resize"):
        dinolab.load_model(tmp_path / "m", pos_embed_resize="bilinear")
    with pytest.raises(ConfigError, match="unknown architecture option"):
        dinolab.load_model(tmp_path / "m", num_layers=3)


def test_newer_format_or_unknown_option_is_a_clear_error(tmp_path):
    dinolab.save_model(tiny(), tmp_path / "m")
    record = json.loads((tmp_path / "m.json").read_text())
    (tmp_path / "m.json").write_text(json.dumps(dict(record, format_version=99)))
    with pytest.raises(WeightsError, match="upgrade dinolab"):
        dinolab.load_model(tmp_path / "m")
    record["config"]["hyper_attention"] = True
    (tmp_path / "m.json").write_text(json.dumps(record))
    with pytest.raises(WeightsError, match="hyper_attention"):
        dinolab.load_model(tmp_path / "m")


def test_streaming_safetensors_writer_handles_dtypes(tmp_path):
    from safetensors.torch import load_file

    tensors = {"bf16": torch.randn(3, 5).bfloat16(), "mask": torch.tensor([True, False, True]),
               "i64": torch.arange(7), "empty": torch.zeros(1, 0, 4), "t": torch.randn(4, 6).t()}
    write_safetensors(tmp_path / "x.safetensors", tensors, {"k": "v"})
    back = load_file(tmp_path / "x.safetensors")
    assert all(torch.equal(back[k], v) and back[k].dtype == v.dtype for k, v in tensors.items())


# --- official DINO v1 -------------------------------------------------------------------------------

def test_dino_v1_plain_backbone_state_dict(tmp_path):
    model = tiny("dino_vits16")
    sd = {k: v for k, v in model.state_dict().items() if k != "mask_token"}  # v1 files have no mask token
    torch.save(sd, tmp_path / "dino_deitsmall8_pretrain.pth")
    loaded = dinolab.load_model(tmp_path / "dino_deitsmall8_pretrain.pth")
    cfg = loaded.config
    assert (cfg["embed_dim"], cfg["depth"], cfg["num_heads"], cfg["patch_size"], cfg["img_size"]) == (192, 2, 3, 8, 32)
    assert cfg["layerscale_init"] is None and cfg["norm_eps"] == 1e-6 and cfg["interpolate_offset"] == 0.1
    assert torch.equal(outputs(loaded), outputs(model))


def test_dino_v1_full_checkpoint_teacher_by_default_student_on_request(tmp_path):
    teacher, student = tiny("dino_vits16", seed=1), tiny("dino_vits16", seed=2)
    head = DINOHead(192, 32, hidden_dim=16, bottleneck_dim=8)

    def wrap(model, prefix):
        sd = {f"{prefix}backbone.{k}": v for k, v in model.state_dict().items() if k != "mask_token"}
        sd.update({f"{prefix}head.{k}": v for k, v in head.state_dict().items()})
        return sd

    ckpt = {"student": wrap(student, "module."), "teacher": wrap(teacher, ""), "epoch": 3,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}, "dino_loss": {"center": torch.zeros(1, 32)},
            "args": argparse.Namespace(arch="vit_small", patch_size=8)}
    torch.save(ckpt, tmp_path / "checkpoint.pth")
    assert torch.equal(outputs(dinolab.load_model(tmp_path / "checkpoint.pth")), outputs(teacher))
    got = dinolab.load_model(tmp_path / "checkpoint.pth", checkpoint_key="student")
    assert torch.equal(outputs(got), outputs(student))
    with pytest.raises(WeightsError, match="ema"):
        dinolab.load_model(tmp_path / "checkpoint.pth", checkpoint_key="ema")


# --- official DINOv2 / DINOv3 -----------------------------------------------------------------------

def test_dinov2_giant_style_packed_swiglu_and_block_chunks(tmp_path):
    model = tiny("dinov2_vitg14_reg")
    sd = {}
    for k, v in model.state_dict().items():
        if ".mlp.w2." in k:
            continue
        if ".mlp.w1." in k:  # official ViT-g packs w1 and w2 as w12 = [w1; w2]
            k, v = k.replace(".w1.", ".w12."), torch.cat([v, model.state_dict()[k.replace(".w1.", ".w2.")]])
        sd[k] = v
    torch.save(sd, tmp_path / "dinov2_vitg14_reg4_pretrain.pth")
    loaded = dinolab.load_model(tmp_path / "dinov2_vitg14_reg4_pretrain.pth")
    assert loaded.config["ffn_layer"] == "swiglu" and loaded.num_register_tokens == 4
    assert (loaded.interpolate_offset, loaded.interpolate_antialias) == (0.0, True)
    assert torch.equal(outputs(loaded), outputs(model))

    chunked = {k.replace("blocks.", "blocks.0.", 1): v for k, v in sd.items()}  # one chunk: blocks.0.<i>.*
    assert "blocks.0.1.norm1.weight" in chunked
    torch.save(chunked, tmp_path / "chunked.pth")
    assert torch.equal(outputs(dinolab.load_model(tmp_path / "chunked.pth")), outputs(model))


@pytest.mark.parametrize("layout", ["teacher", "model"])
def test_dinov2_v3_training_checkpoints_drop_heads(tmp_path, layout):
    teacher, student = tiny("dinov3_vits16", seed=1), tiny("dinov3_vits16", seed=2)
    head = {f"dino_head.{k}": v for k, v in DINOHead(192, 16, hidden_dim=8, bottleneck_dim=4).state_dict().items()}

    def official(m):
        return {("storage_tokens" if k == "register_tokens" else k): v for k, v in m.state_dict().items()}

    if layout == "teacher":
        ckpt = {"teacher": {**{f"backbone.{k}": v for k, v in official(teacher).items()}, **head}}
    else:
        ckpt = {"model": {**{f"teacher.backbone.{k}": v for k, v in official(teacher).items()},
                          **{f"student.backbone.{k}": v for k, v in official(student).items()},
                          **{f"teacher.{k}": v for k, v in head.items()}}, "iteration": 10}
    torch.save(ckpt, tmp_path / "ckpt.pth")
    loaded = dinolab.load_model(tmp_path / "ckpt.pth")
    assert loaded.config["norm_eps"] == 1e-5
    assert torch.equal(outputs(loaded), outputs(teacher))
    if layout == "model":
        assert torch.equal(outputs(dinolab.load_model(tmp_path / "ckpt.pth", checkpoint_key="student")),
                           outputs(student))


@pytest.mark.parametrize("name", sorted(n for n in PRESETS if not n.startswith("vit_")))
def test_architecture_inferred_from_released_shapes(name):
    """Every released architecture is recovered from its (meta) state dict alone."""
    with torch.device("meta"):
        model = create_model(name)
        sd = model.state_dict()
        if name.startswith("dino_"):
            sd.pop("mask_token")
        cfg = infer_config(sd)
        again = VisionTransformer(**cfg)
    got, want = again.config, model.config
    for key in ("embed_dim", "depth", "num_heads", "patch_size", "img_size", "num_register_tokens", "pos_embed_type",
                "ffn_layer", "qkv_bias", "norm_eps", "untie_local_cls_norm", "pos_embed_resize"):
        assert got[key] == want[key], key
    assert (got["mask_k_bias"] and got["qkv_bias"]) == (want["mask_k_bias"] and want["qkv_bias"])
    if got["pos_embed_type"] == "learned":
        assert (got["interpolate_offset"], got["interpolate_antialias"]) == (want["interpolate_offset"],
                                                                           want["interpolate_antialias"])
    assert (got["layerscale_init"] is None) == (want["layerscale_init"] is None)
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_heads_rule_and_override(tmp_path):
    model = tiny("dinov2_vits14", embed_dim=64, num_heads=4)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    assert dinolab.load_model(tmp_path / "w.pth").num_heads == 1  # width 64 -> head dim 64
    loaded = dinolab.load_model(tmp_path / "w.pth", num_heads=4)
    assert torch.equal(outputs(loaded), outputs(model))
    torch.save(tiny("dinov2_vits14", embed_dim=40, num_heads=4).state_dict(), tmp_path / "odd.pth")
    with pytest.raises(WeightsError, match="num_heads"):
        dinolab.load_model(tmp_path / "odd.pth")


# --- safety and errors ------------------------------------------------------------------------------

class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _OpensFile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("payload", [_RunsCommand, _OpensFile])
@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, payload, writer):
    marker = tmp_path / "pwned"
    obj = {"teacher": {"cls_token": torch.zeros(1, 1, 8)}, "args": payload(marker)}
    path = tmp_path / "evil.pth"
    if writer == "torch":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj))
    with pytest.raises(WeightsError, match="refused") as info:
        dinolab.load_model(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_shape_mismatch_names_the_file_and_the_keys(tmp_path):
    sd = tiny("dinov2_vits14").state_dict()
    sd["blocks.0.attn.qkv.weight"] = torch.zeros(10, 192)
    del sd["blocks.1.norm2.bias"]
    sd["blocks.0.attn.extra"] = torch.zeros(3)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(WeightsError) as info:
        dinolab.load_model(tmp_path / "bad.pth")
    msg = str(info.value)
    for part in ("bad.pth", "blocks.0.attn.qkv.weight (10, 192) vs model (576, 192)",
                 "missing keys (1): blocks.1.norm2.bias", "unexpected keys (1): blocks.0.attn.extra"):
        assert part in msg


def test_unknown_formats_are_clear_errors(tmp_path):
    torch.save({"epoch": 3, "foo": {"bar": 1}}, tmp_path / "x.pth")
    with pytest.raises(WeightsError, match="x.pth"):
        dinolab.load_model(tmp_path / "x.pth")
    torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.weight": torch.zeros(10, 8)}, tmp_path / "r50.pth")
    with pytest.raises(WeightsError, match="not a ViT backbone"):
        dinolab.load_model(tmp_path / "r50.pth")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(WeightsError, match="'vit'"):
        dinolab.load_model(tmp_path / "hf")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pth"):
        dinolab.load_model(tmp_path / "junk.pth")
    with pytest.raises(WeightsError, match="no such file"):
        dinolab.load_model(tmp_path / "missing.pth")


@pytest.mark.parametrize("name,content,what", [
    ("photo.png", b"\x89PNG\r\n\x1a\n" + bytes(40), "a PNG image"),
    ("photo.jpg", b"\xff\xd8\xff\xe0" + bytes(40), "a JPEG image"),
    ("model.pth", b"<!DOCTYPE html><html><body>Access denied</body></html>", "an HTML/XML page"),
    ("model.safetensors", b"\x89PNG\r\n\x1a\n" + bytes(40), "a PNG image"),
])
def test_a_file_that_is_not_weights_is_named_as_such_not_as_unsafe(tmp_path, name, content, what):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(WeightsError) as info:
        dinolab.load_model(tmp_path / name)
    msg = str(info.value)
    assert f"{name}: not a weights file: its content is {what}" in msg
    assert "run code" not in msg


def test_a_safetensors_file_with_a_pth_name_is_read_as_safetensors(tmp_path):
    model = tiny("dinov2_vits14")
    dinolab.save_model(model, tmp_path / "m")
    (tmp_path / "m.safetensors").rename(tmp_path / "renamed.pth")
    loaded = dinolab.load_model(tmp_path / "renamed.pth")
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
