import csv

import pytest
import torch

import dinolab
from dinolab.cli import main
from dinolab.text import align

DATA = "builtin:shapes?n=12&size=16"
CLASSES = "circle,square,triangle,star,cross"


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    root = tmp_path_factory.mktemp("zs")
    torch.manual_seed(0)
    dinolab.save_model(dinolab.create_model("vit_tiny", img_size=16, patch_size=8, depth=1), root / "bb.safetensors")
    align(root / "bb.safetensors", DATA, out=root / "aligned", epochs=1, batch_size=6, image_size=16, embed_dim=16,
          text_width=32, text_depth=1, device="cpu", precision="fp32", progress=False)
    return root


def test_zeroshot_prints_accuracy_and_writes_predictions(aligned, tmp_path, capsys):
    out = tmp_path / "preds.csv"
    args = ["zeroshot", DATA, "--aligned", str(aligned / "aligned"), "--classes", CLASSES, "--out", str(out),
            "--device", "cpu", "--num-workers", "0"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 12 and set(rows[0]) == {"path", "predicted", "score", "true"}
    assert [r["true"] for r in rows[:5]] == CLASSES.split(",")  # builtin:shapes labels cycle through the classes
    accuracy = sum(r["predicted"] == r["true"] for r in rows) / 12
    assert f"zero-shot accuracy: {accuracy:.4f} on 12 labelled images (chance 0.2000)" in printed

    before = out.read_bytes()
    assert main(args) == 2 and "already exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(args + ["--force", "--template", "a {} on a background."]) == 0


def test_zeroshot_defaults_to_data_classes_and_checks_weights(aligned, tmp_path, capsys):
    base = ["zeroshot", DATA, "--aligned", str(aligned / "aligned"), "--device", "cpu", "--num-workers", "0"]
    assert main(base + ["--weights", str(aligned / "bb.safetensors")]) == 0
    assert "among 5 classes (circle, square, triangle, star, cross)" in capsys.readouterr().out
    torch.manual_seed(1)
    dinolab.save_model(dinolab.create_model("vit_tiny", img_size=16, patch_size=8, depth=1), tmp_path / "x.safetensors")
    assert main(base + ["--weights", str(tmp_path / "x.safetensors")]) == 2
    assert "not the backbone" in capsys.readouterr().err
    assert main(["zeroshot", "builtin:shapes?n=3&size=16", "--aligned", str(tmp_path / "nothing")]) == 2
    assert "is not an aligned model" in capsys.readouterr().err


def test_zeroshot_names_class_words_the_captions_never_used(aligned, capsys):
    base = ["zeroshot", DATA, "--aligned", str(aligned / "aligned"), "--device", "cpu", "--num-workers", "0"]
    assert main(base + ["--classes", "cat,rocket,circle"]) == 2
    err = capsys.readouterr().err
    assert "'cat', 'rocket'" in err and "same text embedding" in err
    assert main(base + ["--classes", "circle,square,shiny star", "--template", "a {}"]) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "shiny (in \"shiny star\")" in captured.err
    assert "classified 12 images" in captured.out
