import numpy as np
import pytest
import torch
from PIL import Image

import dinolab
from dinolab.cli import main
from dinolab.models import create_model


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    model = create_model("vit_tiny", patch_size=8, img_size=32, depth=1, embed_dim=32, num_heads=2)
    return str(dinolab.save_model(model, tmp_path_factory.mktemp("w") / "tiny"))


def two_images(folder):
    folder.mkdir()
    g = np.random.default_rng(1)
    for name, shape in (("a.png", (40, 56, 3)), ("b.png", (48, 48, 3))):
        img = g.integers(60, 120, shape, dtype=np.uint8)
        img[8:24, 8:24] = (230, 40, 40)
        Image.fromarray(img).save(folder / name)
    return folder


@pytest.mark.parametrize("joint", [False, True])
def test_pca_writes_rgb_pictures_and_a_sheet(weights, tmp_path, joint):
    imgs = two_images(tmp_path / "imgs")
    out = tmp_path / "out"
    args = ["pca", weights, str(imgs / "a.png"), str(imgs / "b.png"), "--out", str(out), "--image-size", "40"]
    assert main(args + (["--joint"] if joint else [])) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_pca.png", "b_pca.png", "pca_sheet.png"]
    a = np.asarray(Image.open(out / "a_pca.png"))
    assert a.shape == (40, 56, 3)  # shorter side 40, 56 = 7 patches of 8
    black = (a == 0).all(axis=2)
    assert black.any() and not black.all()  # background removed, something left
    assert np.asarray(Image.open(out / "b_pca.png")).shape == (40, 40, 3)


def test_pca_refuses_to_overwrite_and_reports_bad_input(weights, tmp_path, capsys):
    imgs = two_images(tmp_path / "imgs")
    out = tmp_path / "out"
    assert main(["pca", weights, str(imgs), "--out", str(out), "--image-size", "32"]) == 0
    assert main(["pca", weights, str(imgs), "--out", str(out), "--image-size", "32"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["pca", weights, str(imgs), "--out", str(out), "--image-size", "32", "--force",
                 "--keep-background"]) == 0
    assert (np.asarray(Image.open(out / "a_pca.png")) != 0).any(axis=2).all()  # nothing blacked out
    (tmp_path / "empty").mkdir()
    assert main(["pca", weights, str(tmp_path / "empty"), "--out", str(tmp_path / "o2")]) == 2
    assert "no images found" in capsys.readouterr().err
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    assert main(["pca", weights, str(bad), "--out", str(tmp_path / "o3")]) == 2
    err = capsys.readouterr().err
    assert "bad.jpg" in err and "empty file" in err and "Traceback" not in err


def test_pca_help_renders(capsys):
    # help strings go through %-formatting: a stray % in the docstring's first line breaks dinolab --help
    for argv in (["--help"], ["pca", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
    assert "pca" in capsys.readouterr().out


def test_pca_says_when_the_foreground_split_failed(weights, tmp_path, capsys, monkeypatch):
    import dinolab.eval.pca as pca

    imgs = two_images(tmp_path / "imgs")
    real = pca.first_component_foreground
    monkeypatch.setattr(pca, "first_component_foreground",  # b's split comes out empty
                        lambda feats, t=0.0: [m if i == 0 else torch.zeros_like(m) for i, m in enumerate(real(feats, t))])
    out = tmp_path / "out"
    assert main(["pca", weights, str(imgs / "a.png"), str(imgs / "b.png"), "--out", str(out), "--image-size", "40",
                 "--joint"]) == 0
    printed = capsys.readouterr().out
    assert "did not split foreground from background in b " in printed and " a," not in printed
    b = np.asarray(Image.open(out / "b_pca.png"))
    assert not (b == 0).all(axis=2).all()  # the full picture, not solid black


def test_pca_takes_a_builtin_set_as_the_readme_says(weights, tmp_path):
    out = tmp_path / "out"
    assert main(["pca", weights, "builtin:shapes?n=3&size=32", "--out", str(out), "--image-size", "32"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["pca_sheet.png", "shapes_0_pca.png", "shapes_1_pca.png",
                                                     "shapes_2_pca.png"]
    pictures = [np.asarray(Image.open(out / f"shapes_{i}_pca.png")) for i in range(3)]
    assert all(p.shape == (32, 32, 3) for p in pictures)
    assert not np.array_equal(pictures[0], pictures[1])  # different images, not one repeated
