import numpy as np
import pytest
from PIL import Image

import dinolab
from dinolab.cli import main
from dinolab.models import create_model


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    model = create_model("vit_tiny", patch_size=8, img_size=32, depth=1, embed_dim=32, num_heads=2,
                         num_register_tokens=2)
    return str(dinolab.save_model(model, tmp_path_factory.mktemp("w") / "tiny"))


@pytest.fixture()
def images(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    g = np.random.default_rng(0)
    Image.fromarray(g.integers(0, 255, (60, 90, 3), dtype=np.uint8)).save(d / "wide.png")
    Image.fromarray(g.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(d / "square.jpg")
    return d


def test_attention_writes_decodable_pngs_per_head_and_refuses_to_overwrite(weights, images, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["attention", weights, str(images), "--out", str(out), "--image-size", "48", "--device", "cpu"]) == 0
    names = sorted(p.name for p in out.iterdir())
    for stem in ("wide", "square"):
        for suffix in ("_attn_head0", "_attn_head1", "_attn_mean", "_mask", "_sheet"):
            assert f"{stem}{suffix}.png" in names
    assert len(names) == 10
    # 60×90 with the shorter side at 48 and sides multiples of 8: 48 × 72
    with Image.open(out / "wide_attn_head0.png") as im:
        assert im.size == (72, 48) and im.mode == "RGB"
    mask = np.asarray(Image.open(out / "wide_mask.png"))
    assert mask.shape == (48, 72) and set(np.unique(mask)) <= {0, 255} and (mask == 255).any()
    Image.open(out / "square_sheet.png").verify()

    before = (out / "wide_mask.png").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["attention", weights, str(images / "wide.png"), "--out", str(out), "--image-size", "48"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err
    assert (out / "wide_mask.png").stat().st_mtime_ns == before
    assert main(["attention", weights, str(images / "wide.png"), "--out", str(out), "--image-size", "48",
                 "--keep", "0.9", "--force"]) == 0


def test_attention_empty_and_unreadable_inputs(weights, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["attention", weights, str(empty), "--out", str(tmp_path / "o1")]) == 2
    assert "no images found" in capsys.readouterr().err
    assert main(["attention", weights, str(tmp_path / "missing.png"), "--out", str(tmp_path / "o2")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not a png")
    good = tmp_path / "good.png"
    Image.fromarray(np.full((32, 32, 3), 100, np.uint8)).save(good)
    assert main(["attention", weights, str(bad), str(good), "--out", str(tmp_path / "o3"), "--image-size", "32"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "1 of 2 images could not be read" in err and "Traceback" not in err
    assert (tmp_path / "o3" / "good_mask.png").exists()  # the readable image was still processed
    assert main(["attention", weights, str(good), "--out", str(tmp_path / "o4"), "--keep", "1.5"]) == 2


def test_attention_help_renders(capsys):
    # help strings go through %-formatting: a stray % in the docstring's first line breaks dinolab --help
    for argv in (["--help"], ["attention", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
    assert "attention" in capsys.readouterr().out


def test_attention_takes_a_builtin_set(weights, tmp_path):
    out = tmp_path / "out"
    assert main(["attention", weights, "builtin:shapes?n=2&size=32", "--out", str(out), "--image-size", "32",
                 "--device", "cpu"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"shapes_0_attn_mean.png", "shapes_1_mask.png", "shapes_1_sheet.png"} <= names
    with Image.open(out / "shapes_0_attn_head0.png") as im:
        assert im.size == (32, 32)
