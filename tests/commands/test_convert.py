"""``dinolab convert``: round trips between formats through the command line."""

import json

import pytest
import torch

import dinolab
from dinolab.cli import main
from dinolab.models import create_model


def model_for(preset, **kw):
    torch.manual_seed(0)
    m = create_model(preset, **dict(dict(embed_dim=64, depth=2, num_heads=4, img_size=32, patch_size=8), **kw))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


def outputs(model, h, w):
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model.forward_features(x)
    return torch.cat([out["cls"][:, None], out["registers"], out["patches"]], dim=1)


@pytest.mark.parametrize("preset", ["dinov2_vits14", "dinov2_vits14_reg", "dinov3_vits16plus"])
def test_ours_to_hf_to_ours_is_identical(tmp_path, preset, capsys):
    model = model_for(preset)
    dinolab.save_model(model, tmp_path / "ours")
    assert main(["convert", str(tmp_path / "ours.safetensors"), str(tmp_path / "hf"), "--to", "hf"]) == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"]
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "back")]) == 0
    assert "wrote" in capsys.readouterr().out
    back = dinolab.load_model(tmp_path / "back")
    assert back.config["pos_embed_resize"] == model.config["pos_embed_resize"]
    for h, w in [(32, 32), (40, 56)]:  # native grid and a resized non-square one
        assert torch.equal(outputs(back, h, w), outputs(model, h, w))


def test_convert_to_official_pth_and_back(tmp_path):
    model = model_for("dinov3_vits16")
    dinolab.save_model(model, tmp_path / "ours")
    assert main(["convert", str(tmp_path / "ours.json"), str(tmp_path / "hub.pth")]) == 0  # .pth -> official
    sd = torch.load(tmp_path / "hub.pth", weights_only=True)
    assert "storage_tokens" in sd and "register_tokens" not in sd and sd["mask_token"].shape == (1, 64)
    assert main(["convert", str(tmp_path / "hub.pth"), str(tmp_path / "back.safetensors")]) == 0
    assert torch.equal(outputs(dinolab.load_model(tmp_path / "back"), 32, 48), outputs(model, 32, 48))


def test_convert_refuses_to_overwrite_without_force(tmp_path, capsys):
    dinolab.save_model(model_for("dino_vits16"), tmp_path / "ours")
    (tmp_path / "out.pth").write_bytes(b"keep me")
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "out.pth")]) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "out.pth").read_bytes() == b"keep me"
    assert main(["convert", str(tmp_path / "ours"), str(tmp_path / "out.pth"), "--force"]) == 0
    assert "mask_token" not in torch.load(tmp_path / "out.pth", weights_only=True)  # DINO v1 layout


def test_convert_reports_unsafe_files_without_traceback(tmp_path, capsys):
    import os

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'pwned'}",)

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    assert main(["convert", str(tmp_path / "evil.pth"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "Traceback" not in err
    assert not (tmp_path / "pwned").exists()
