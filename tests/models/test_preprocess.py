"""A model knows how it sees: ``model.preprocess`` through save / load / convert, and the release defaults."""

import json

import pytest
import torch

import dinolab
from dinolab.cli import main
from dinolab.errors import WeightsError
from dinolab.models import Preprocess, create_model
from dinolab.models.weights import export_hf, export_official

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
SAT = ((0.430, 0.411, 0.296), (0.213, 0.156, 0.143))  # dinov3_and_ecosystem.md: SAT-493M normalisation
CUSTOM = Preprocess(image_size=40, resize="crop", crop_fraction=0.8, interpolation="bilinear",
                    mean=(0.1, 0.2, 0.3), std=(0.5, 0.6, 0.7), grayscale=True)


def tiny(name="dinov2_vits14", **kw):
    torch.manual_seed(0)
    return create_model(name, **dict(dict(embed_dim=64, depth=1, num_heads=4, img_size=32, patch_size=8), **kw))


def values(p):
    return (p.image_size, p.resize, p.crop_fraction, p.interpolation, p.mean, p.std, p.grayscale)


def test_save_load_keeps_every_field_and_a_fresh_model_gets_the_defaults(tmp_path):
    model = tiny()
    assert model.preprocess is None
    path = dinolab.save_model(model, tmp_path / "plain")
    assert values(dinolab.load_model(path).preprocess) == (224, "crop", 0.875, "bicubic", *IMAGENET, False)
    model.preprocess = CUSTOM
    path = dinolab.save_model(model, tmp_path / "custom")
    assert json.loads((tmp_path / "custom.json").read_text())["preprocess"]["image_size"] == 40
    back = dinolab.load_model(path)
    assert back.preprocess == CUSTOM and "custom.json" in back.preprocess.source
    # the safetensors header alone is enough, as for the architecture
    (tmp_path / "custom.json").unlink()
    assert dinolab.load_model(path).preprocess == CUSTOM
    # an explicit argument wins over the model's own
    other = Preprocess(image_size=64)
    assert dinolab.load_model(dinolab.save_model(model, tmp_path / "other", preprocess=other)).preprocess == other


def test_older_files_without_a_record_fall_back_to_the_defaults_with_a_note(tmp_path):
    path = dinolab.save_model(tiny(), tmp_path / "old")
    record = json.loads((tmp_path / "old.json").read_text())
    del record["preprocess"]
    (tmp_path / "old.json").write_text(json.dumps(record))
    p = dinolab.load_model(path).preprocess
    assert values(p) == (224, "crop", 0.875, "bicubic", *IMAGENET, False)
    assert "records no preprocessing" in p.source


def test_a_bad_record_names_the_file_and_the_value(tmp_path):
    dinolab.save_model(tiny(), tmp_path / "bad")
    record = json.loads((tmp_path / "bad.json").read_text())
    record["preprocess"]["std"] = [0.2, 0.0, 0.2]
    (tmp_path / "bad.json").write_text(json.dumps(record))
    with pytest.raises(WeightsError, match=r"bad\.json.*std"):
        dinolab.load_model(tmp_path / "bad.json")
    record["preprocess"] = {"image_size": 32, "colour_space": "lab"}
    (tmp_path / "bad.json").write_text(json.dumps(record))
    with pytest.raises(WeightsError, match="colour_space"):
        dinolab.load_model(tmp_path / "bad.json")


@pytest.mark.parametrize("to", ["dinolab", "hf"])
def test_convert_keeps_it_both_ways(tmp_path, to, capsys):
    model = tiny("dinov3_vits16plus", patch_size=16, img_size=32) if to == "hf" else tiny()
    model.preprocess = CUSTOM
    src = dinolab.save_model(model, tmp_path / "src")
    assert main(["convert", str(src), str(tmp_path / "mid"), "--to", to]) == 0
    assert "image size 40 px" in capsys.readouterr().out
    if to == "hf":
        assert (tmp_path / "mid" / "preprocessor_config.json").is_file()
    assert dinolab.load_model(tmp_path / "mid").preprocess == CUSTOM
    assert main(["convert", str(tmp_path / "mid"), str(tmp_path / "back"), "--to", "dinolab"]) == 0
    assert dinolab.load_model(tmp_path / "back.safetensors").preprocess == CUSTOM


@pytest.mark.parametrize("preprocess", [Preprocess(image_size=40, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
                                        Preprocess(image_size=40, resize="stretch", interpolation="bilinear")])
def test_hf_export_writes_a_processor_config_that_transformers_applies_alike(tmp_path, preprocess):
    transformers = pytest.importorskip("transformers")
    import numpy as np
    from PIL import Image

    model = tiny()
    model.preprocess = preprocess
    export_hf(model, tmp_path / "hf")
    proc = transformers.AutoImageProcessor.from_pretrained(tmp_path / "hf")
    pixels = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    theirs = proc(images=Image.fromarray(pixels), return_tensors="pt")["pixel_values"]
    ours = preprocess.normalize(preprocess.resize_image(torch.from_numpy(pixels).permute(2, 0, 1).contiguous())[None])
    assert theirs.shape == ours.shape == (1, 3, 40, 40)
    # PIL's and torch's antialiased resampling differ by rounding only (0.003 in normalised units measured)
    assert float((theirs - ours).abs().mean()) < 0.02


@pytest.mark.parametrize("name,file,expected", [
    ("dino_vits16", "dino_deitsmall16_pretrain.pth", IMAGENET),
    ("dinov2_vits14_reg", "dinov2_vits14_reg4_pretrain.pth", IMAGENET),
    ("dinov3_vits16", "dinov3_vits16_pretrain_lvd1689m-08c60483.pth", IMAGENET),
    ("dinov3_vitl16", "dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth", SAT),
])
def test_official_weights_get_the_documented_defaults(tmp_path, name, file, expected):
    model = tiny(name, patch_size=16 if "v3" in name else 8)
    model.preprocess = CUSTOM  # an official .pth has no place for it: loading gives the release defaults
    export_official(model, tmp_path / file)
    p = dinolab.load_model(tmp_path / file).preprocess
    assert values(p) == (224, "crop", 0.875, "bicubic", *expected, False)


def test_hf_folders_get_their_processor_or_its_documented_default(tmp_path):
    v2, v3 = tiny("dinov2_vits14"), tiny("dinov3_vits16", patch_size=16)
    export_hf(v2, tmp_path / "v2")
    export_hf(v3, tmp_path / "v3")
    for folder in ("v2", "v3"):
        (tmp_path / folder / "preprocessor_config.json").unlink()
    # BitImageProcessor of the converted DINOv2 checkpoints: shortest edge 256, bicubic, centre crop 224
    assert values(dinolab.load_model(tmp_path / "v2").preprocess) == (224, "crop", 0.875, "bicubic", *IMAGENET, False)
    # DINOv3ViTImageProcessor: 224 x 224, bilinear, no crop
    assert values(dinolab.load_model(tmp_path / "v3").preprocess)[:4] == (224, "stretch", 0.875, "bilinear")
    # a processor config as the Hub ships it (no dinolab record): read field by field
    hub = {"image_processor_type": "BitImageProcessor", "do_resize": True, "size": {"shortest_edge": 320},
           "do_center_crop": True, "crop_size": {"height": 288, "width": 288}, "resample": 3,
           "do_normalize": True, "image_mean": list(SAT[0]), "image_std": list(SAT[1])}
    (tmp_path / "v2" / "preprocessor_config.json").write_text(json.dumps(hub))
    assert values(dinolab.load_model(tmp_path / "v2").preprocess) == (288, "crop", 0.9, "bicubic", *SAT, False)
    (tmp_path / "v2" / "preprocessor_config.json").write_text(json.dumps({**hub, "crop_size": "x"}))
    with pytest.raises(WeightsError, match="preprocessor_config.json"):
        dinolab.load_model(tmp_path / "v2")


def test_normalize_and_resize_follow_the_fields():
    img = torch.zeros(3, 30, 60, dtype=torch.uint8)
    img[0] = 255  # pure red
    p = Preprocess(image_size=20, crop_fraction=0.5, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), grayscale=True)
    out = p.resize_image(img)
    assert out.shape == (3, 20, 20)
    x = p.normalize(out[None])
    assert torch.allclose(x, torch.full_like(x, 0.299), atol=1e-3)  # ITU-R 601 luma of red, in every channel
    stretched = Preprocess(image_size=16, resize="stretch").resize_image(torch.zeros(3, 30, 60, dtype=torch.uint8))
    assert stretched.shape == (3, 16, 16)
