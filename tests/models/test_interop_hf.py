"""dinolab against the reference implementations in transformers (tiny random models, float32).

Each HF model is randomly initialised and every tensor perturbed (so that zero-initialised biases and
unit LayerScales cannot hide a wrong mapping), saved with ``save_pretrained`` and loaded with
``dinolab.load_model``. The official-layout checks build the official state dict in this file, from
the reference key tables (dinov2.md §3.7, dinov3_and_ecosystem.md §3.1-3.3), independently of dinolab's
own mapping, and compare the official position-embedding resize against a direct implementation of
the official formula injected into the HF model.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import dinolab
from dinolab.errors import WeightsError
from dinolab.models.weights import export_hf, export_official

transformers = pytest.importorskip("transformers")

D, HEADS, LAYERS = 64, 4, 2
TOL = 1e-4


def _perturb(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def hf_dinov2(registers: bool = False, swiglu: bool = False):
    torch.manual_seed(0)
    kw = dict(hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS, patch_size=14, image_size=224,
              use_swiglu_ffn=swiglu)
    if registers:
        return _perturb(transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(**kw)))
    return _perturb(transformers.Dinov2Model(transformers.Dinov2Config(**kw)))


def hf_dinov3(gated: bool = False):
    torch.manual_seed(0)
    cfg = transformers.DINOv3ViTConfig(hidden_size=D, intermediate_size=96 if gated else 128, num_hidden_layers=LAYERS,
                                       num_attention_heads=HEADS, patch_size=16, image_size=224, num_register_tokens=4,
                                       use_gated_mlp=gated, hidden_act="silu" if gated else "gelu")
    return _perturb(transformers.DINOv3ViTModel(cfg))


def tokens(model, x):
    """dinolab outputs in HF's last_hidden_state layout [CLS, registers, patches]."""
    with torch.no_grad():
        out = model.forward_features(x)
    return torch.cat([out["cls"][:, None], out["registers"], out["patches"]], dim=1)


def hf_tokens(hf_model, x):
    with torch.no_grad():
        return hf_model(pixel_values=x).last_hidden_state


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def images(h, w, seed=0):
    return torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(seed))


# --- official layouts written out from the references, independent of dinolab's mapping ---------

def official_dinov2_from_hf(hf_sd):
    out = {"cls_token": hf_sd["embeddings.cls_token"], "mask_token": hf_sd["embeddings.mask_token"],
           "pos_embed": hf_sd["embeddings.position_embeddings"],
           "patch_embed.proj.weight": hf_sd["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": hf_sd["embeddings.patch_embeddings.projection.bias"],
           "norm.weight": hf_sd["layernorm.weight"], "norm.bias": hf_sd["layernorm.bias"]}
    if "embeddings.register_tokens" in hf_sd:
        out["register_tokens"] = hf_sd["embeddings.register_tokens"]
    for i in range(LAYERS):
        h, o = f"encoder.layer.{i}.", f"blocks.{i}."
        for p in ("weight", "bias"):
            out[o + f"attn.qkv.{p}"] = torch.cat([hf_sd[h + f"attention.attention.{n}.{p}"]
                                                  for n in ("query", "key", "value")])
            out[o + f"attn.proj.{p}"] = hf_sd[h + f"attention.output.dense.{p}"]
            out[o + f"norm1.{p}"], out[o + f"norm2.{p}"] = hf_sd[h + f"norm1.{p}"], hf_sd[h + f"norm2.{p}"]
            if h + "mlp.weights_in.weight" in hf_sd:
                out[o + f"mlp.w12.{p}"] = hf_sd[h + f"mlp.weights_in.{p}"]
                out[o + f"mlp.w3.{p}"] = hf_sd[h + f"mlp.weights_out.{p}"]
            else:
                out[o + f"mlp.fc1.{p}"], out[o + f"mlp.fc2.{p}"] = hf_sd[h + f"mlp.fc1.{p}"], hf_sd[h + f"mlp.fc2.{p}"]
        for j in (1, 2):
            out[o + f"ls{j}.gamma"] = hf_sd[h + f"layer_scale{j}.lambda1"]
    return out


def official_dinov3_from_hf(hf_sd, theta=100.0):
    head_dim = D // HEADS
    out = {"cls_token": hf_sd["embeddings.cls_token"], "storage_tokens": hf_sd["embeddings.register_tokens"],
           "mask_token": hf_sd["embeddings.mask_token"].reshape(1, D),
           "patch_embed.proj.weight": hf_sd["embeddings.patch_embeddings.weight"],
           "patch_embed.proj.bias": hf_sd["embeddings.patch_embeddings.bias"],
           "rope_embed.periods": theta ** (torch.arange(head_dim // 4, dtype=torch.float32) * 4 / head_dim),
           "norm.weight": hf_sd["norm.weight"], "norm.bias": hf_sd["norm.bias"]}
    for i in range(LAYERS):
        h, o = f"layer.{i}.", f"blocks.{i}."
        out[o + "attn.qkv.weight"] = torch.cat([hf_sd[h + f"attention.{n}_proj.weight"] for n in "qkv"])
        out[o + "attn.qkv.bias"] = torch.cat([hf_sd[h + "attention.q_proj.bias"], torch.zeros(D),
                                              hf_sd[h + "attention.v_proj.bias"]])
        out[o + "attn.qkv.bias_mask"] = torch.cat([torch.ones(D), torch.zeros(D), torch.ones(D)])
        for j in (1, 2):
            out[o + f"ls{j}.gamma"] = hf_sd[h + f"layer_scale{j}.lambda1"]
        for p in ("weight", "bias"):
            out[o + f"attn.proj.{p}"] = hf_sd[h + f"attention.o_proj.{p}"]
            out[o + f"norm1.{p}"], out[o + f"norm2.{p}"] = hf_sd[h + f"norm1.{p}"], hf_sd[h + f"norm2.{p}"]
            if h + "mlp.gate_proj.weight" in hf_sd:
                for ours, theirs in (("w1", "gate_proj"), ("w2", "up_proj"), ("w3", "down_proj")):
                    out[o + f"mlp.{ours}.{p}"] = hf_sd[h + f"mlp.{theirs}.{p}"]
            else:
                out[o + f"mlp.fc1.{p}"] = hf_sd[h + f"mlp.up_proj.{p}"]
                out[o + f"mlp.fc2.{p}"] = hf_sd[h + f"mlp.down_proj.{p}"]
    return out


def on_disk(hf_model, tmp_path):
    from safetensors.torch import load_file

    hf_model.save_pretrained(tmp_path / "hf")
    return load_file(tmp_path / "hf" / "model.safetensors")


def official_resize(pos_embed, h, w, offset, antialias):
    """The official DINO/DINOv2 ``interpolate_pos_encoding`` formula (dinov2.md §3.1)."""
    m = int(math.sqrt(pos_embed.shape[1] - 1))
    grid = pos_embed[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
    if offset:
        grid = F.interpolate(grid, scale_factor=((h + offset) / m, (w + offset) / m), mode="bicubic",
                             antialias=antialias)
    else:
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", antialias=antialias)
    return torch.cat([pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)], dim=1)


# --- DINOv2 -------------------------------------------------------------------------------------

@pytest.mark.parametrize("registers,swiglu", [(False, False), (True, False), (False, True)])
def test_dinov2_hf_folder_matches_transformers_in_hf_mode(tmp_path, registers, swiglu):
    hf_model = hf_dinov2(registers, swiglu)
    hf_model.save_pretrained(tmp_path / "hf")
    model = dinolab.load_model(tmp_path / "hf")
    assert model.pos_embed_resize == "hf" and model.num_register_tokens == (4 if registers else 0)
    assert model.num_heads == HEADS and model.training is False
    for h, w in [(224, 224), (168, 252)]:  # native grid, then a resized non-square 12x18 grid
        x = images(h, w)
        assert rel_err(tokens(model, x), hf_tokens(hf_model, x)) <= TOL


@pytest.mark.parametrize("registers,swiglu", [(False, False), (True, False), (False, True)])
def test_dinov2_official_pth_uses_official_resize(tmp_path, registers, swiglu):
    hf_model = hf_dinov2(registers, swiglu)
    official = official_dinov2_from_hf(on_disk(hf_model, tmp_path))
    torch.save(official, tmp_path / "hub.pth")
    model = dinolab.load_model(tmp_path / "hub.pth", num_heads=HEADS)  # width 64: heads cannot be inferred
    offset, antialias = (0.0, True) if registers else (0.1, False)
    assert model.pos_embed_resize == "official"
    assert (model.interpolate_offset, model.interpolate_antialias) == (offset, antialias)
    assert model.config["norm_eps"] == 1e-6

    x = images(224, 224)  # native grid: no resize, identical to HF
    assert rel_err(tokens(model, x), hf_tokens(hf_model, x)) <= TOL

    h, w = 12, 18
    x = images(h * 14, w * 14, seed=1)
    table = official_resize(official["pos_embed"], h, w, offset, antialias)
    plain_hf = hf_tokens(hf_model, x)
    hf_model.embeddings.interpolate_pos_encoding = lambda emb, height, width: table
    assert rel_err(tokens(model, x), hf_tokens(hf_model, x)) <= TOL
    if not registers:  # the offset rule really differs from transformers' size= rule
        assert rel_err(tokens(model, x), plain_hf) > 1e-3

    # and dinolab writes the same official layout back
    back = torch.load(export_official(model, tmp_path / "back.pth"), weights_only=True)
    assert sorted(back) == sorted(official)
    assert all(torch.equal(back[k], official[k]) for k in official)


def test_dinov2_in_memory_names_and_bin_weights_are_read(tmp_path):
    hf_model = hf_dinov2(registers=False, swiglu=True)
    hf_model.save_pretrained(tmp_path / "ref")
    folder = tmp_path / "mem"
    folder.mkdir()
    (folder / "config.json").write_text((tmp_path / "ref" / "config.json").read_text())
    sd = hf_model.state_dict()
    assert any(".attention.q_proj." in k for k in sd) and any(".mlp.gate_proj." in k for k in sd)
    torch.save(sd, folder / "pytorch_model.bin")
    model = dinolab.load_model(folder)
    x = images(224, 224)
    assert rel_err(tokens(model, x), hf_tokens(hf_model, x)) <= TOL


def test_lone_hf_safetensors_without_config_is_inferred(tmp_path):
    hf_model = hf_dinov2(registers=True)
    hf_model.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").rename(tmp_path / "weights.safetensors")
    model = dinolab.load_model(tmp_path / "weights.safetensors", num_heads=HEADS)
    assert (model.pos_embed_resize, model.interpolate_antialias, model.img_size) == ("hf", True, 224)
    x = images(168, 252)
    assert rel_err(tokens(model, x), hf_tokens(hf_model, x)) <= TOL


# --- DINOv3 -------------------------------------------------------------------------------------

@pytest.mark.parametrize("gated", [False, True])
def test_dinov3_hf_folder_and_official_pth_match_transformers(tmp_path, gated):
    hf_model = hf_dinov3(gated)
    hf_sd = on_disk(hf_model, tmp_path)
    from_hf = dinolab.load_model(tmp_path / "hf")
    official = official_dinov3_from_hf(hf_sd)
    torch.save(official, tmp_path / "hub.pth")
    from_pth = dinolab.load_model(tmp_path / "hub.pth")  # heads from len(periods): no override
    for m in (from_hf, from_pth):
        assert (m.num_heads, m.num_register_tokens, m.pos_embed_type) == (HEADS, 4, "rope")
        assert m.config["norm_eps"] == 1e-5 and m.config["mask_k_bias"] is True
        assert m.config["ffn_layer"] == ("swiglu" if gated else "mlp")
    for h, w in [(224, 224), (160, 256)]:
        x = images(h, w)
        ref = hf_tokens(hf_model, x)
        assert rel_err(tokens(from_hf, x), ref) <= TOL
        assert rel_err(tokens(from_pth, x), ref) <= TOL

    back = torch.load(export_official(from_hf, tmp_path / "back.pth"), weights_only=True)
    assert sorted(back) == sorted(official)
    for k in official:
        assert torch.allclose(back[k], official[k], rtol=1e-6, atol=0), k


def test_dinov3_in_memory_names_are_read(tmp_path):
    hf_model = hf_dinov3()
    hf_model.save_pretrained(tmp_path / "ref")
    folder = tmp_path / "mem"
    folder.mkdir()
    (folder / "config.json").write_text((tmp_path / "ref" / "config.json").read_text())
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in hf_model.state_dict().items()}
    assert any(k.startswith("model.layer.") for k in sd)
    save_file(sd, folder / "model.safetensors")
    x = images(160, 256)
    assert rel_err(tokens(dinolab.load_model(folder), x), hf_tokens(hf_model, x)) <= TOL


def test_sharded_hf_folder_is_read(tmp_path):
    hf_model = hf_dinov3(gated=True)
    hf_model.save_pretrained(tmp_path / "hf", max_shard_size="40KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()
    x = images(224, 224)
    assert rel_err(tokens(dinolab.load_model(tmp_path / "hf"), x), hf_tokens(hf_model, x)) <= TOL


# --- export to HF ---------------------------------------------------------------------------------

@pytest.mark.parametrize("preset,kw", [
    ("dinov2_vits14_reg", dict(ffn_layer="swiglu")),
    ("dino_vits16", dict(patch_size=8, img_size=32)),  # no LayerScale: written as ones
    ("dinov3_vits16", dict(img_size=32, patch_size=8, num_register_tokens=0, qkv_bias=True)),
])
def test_export_hf_loads_in_transformers_with_the_same_outputs(tmp_path, preset, kw):
    torch.manual_seed(0)
    base = dict(embed_dim=D, depth=LAYERS, num_heads=HEADS)
    model = _perturb(dinolab.create_model(preset, **dict(base, **kw)))
    export_hf(model, tmp_path / "hf")
    hf_model = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    expected = {"dinov2": "Dinov2WithRegistersModel", "dino_v": "Dinov2Model", "dinov3": "DINOv3ViTModel"}[preset[:6]]
    assert type(hf_model).__name__ == expected
    side = model.img_size
    x = images(side, side)
    assert rel_err(tokens(model, x), hf_tokens(hf_model, x)) <= TOL
    x = images(side - model.patch_size, side + 2 * model.patch_size)
    if model.pos_embed_type == "rope" or model.num_register_tokens:  # same resize rule: any size agrees
        assert rel_err(tokens(model, x), hf_tokens(hf_model, x)) <= TOL
    assert torch.equal(tokens(dinolab.load_model(tmp_path / "hf"), x), tokens(model, x))  # and comes back as it was


def test_export_hf_refuses_what_transformers_cannot_express(tmp_path):
    model = dinolab.create_model("vit_small", embed_dim=D, depth=1, num_heads=HEADS, mlp_ratio=2.5)
    with pytest.raises(WeightsError, match="mlp_ratio"):
        export_hf(model, tmp_path / "hf")
    assert not (tmp_path / "hf" / "config.json").exists()
