import json

import numpy as np
import pytest
from PIL import Image

import dinolab
from dinolab.cli import main
from dinolab.models import create_model


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    model = create_model("vit_tiny", patch_size=8, img_size=32, depth=1, embed_dim=32, num_heads=2,
                         num_register_tokens=1)
    return str(dinolab.save_model(model, tmp_path_factory.mktemp("w") / "tiny"))


def test_objects_on_shapes_scores_every_method_against_boxes(weights, tmp_path, capsys):
    out = tmp_path / "out"
    data = "builtin:shapes?n=4&size=32"
    assert main(["objects", weights, data, "--out", str(out), "--method", "all", "--image-size", "32"]) == 0
    printed = capsys.readouterr().out
    for name in ("attention", "pca", "similarity", "centred box 50% area", "best centred box"):
        assert name in printed
    results = json.loads((out / "objects.json").read_text())
    assert results["images"] == 4
    assert set(results["jaccard"]) == {"attention", "pca", "similarity"}
    assert all(0.0 <= v <= 1.0 for v in results["jaccard"].values())
    masks = sorted(p.name for p in out.glob("*_pca.png"))
    assert len(masks) == 4
    m = np.asarray(Image.open(out / masks[0]))
    assert m.shape == (32, 32) and set(np.unique(m)) <= {0, 255}  # at the image's own size
    Image.open(out / "objects_sheet.png").verify()

    assert main(["objects", weights, data, "--out", str(out), "--image-size", "32"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["objects", weights, data, "--out", str(out), "--image-size", "32", "--force", "--limit", "2",
                 "--heads", "vote"]) == 0
    results = json.loads((out / "objects.json").read_text())
    assert results["images"] == 2 and results["heads"] == "vote" and list(results["jaccard"]) == ["attention"]


def test_objects_on_a_folder_without_masks_and_bad_inputs(weights, tmp_path, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(imgs / "x.png")
    assert main(["objects", weights, str(imgs), "--out", str(tmp_path / "o1"), "--method", "similarity",
                 "--image-size", "32"]) == 0
    assert "no ground-truth masks" in capsys.readouterr().out
    assert np.asarray(Image.open(tmp_path / "o1" / "x_similarity.png")).shape == (30, 40)
    assert not (tmp_path / "o1" / "objects.json").exists()

    (imgs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert main(["objects", weights, str(imgs), "--out", str(tmp_path / "o2"), "--image-size", "32"]) == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and "1 of 2 images could not be read" in err
    (tmp_path / "empty").mkdir()
    assert main(["objects", weights, str(tmp_path / "empty"), "--out", str(tmp_path / "o3")]) == 2
    assert "no images found" in capsys.readouterr().err


def test_objects_help_renders(capsys):
    # help strings go through %-formatting: a stray % in the docstring's first line breaks dinolab --help
    for argv in (["--help"], ["objects", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
    assert "objects" in capsys.readouterr().out
