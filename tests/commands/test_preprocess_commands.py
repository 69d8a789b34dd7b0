"""Every command that feeds images to a model uses the preprocessing the weights record, unless told otherwise.

A tiny model is saved with a non-default input size (40 px) and normalisation (mean 0, std 1: inputs
stay in [0, 1], where ImageNet normalisation would give negative values); each command is run and
the tensors that actually reach the model's patch embedding are recorded.
"""

import numpy as np
import pytest
import torch
from PIL import Image

import dinolab
from dinolab.cli import main
from dinolab.models import Preprocess, create_model
from dinolab.models.layers.patch_embed import PatchEmbed

SIZE = 40
RECORDED = Preprocess(image_size=SIZE, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pp")
    rng = np.random.default_rng(0)
    for c in ("red", "blue"):
        for i in range(4):
            (root / "data" / c).mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            pixels[..., 0 if c == "red" else 2] = 255
            Image.fromarray(pixels).save(root / "data" / c / f"{i}.png")
    torch.manual_seed(0)
    model = create_model("dinov2_vits14", embed_dim=32, depth=1, num_heads=2, img_size=SIZE, patch_size=8)
    model.preprocess = RECORDED
    weights = dinolab.save_model(model, root / "tiny")
    from dinolab.text import AlignedModel, TextEncoder, VisionHead, WordTokenizer
    from dinolab.text.aligned import save_aligned

    tok = WordTokenizer.build(["a red", "a blue"])
    aligned = AlignedModel(dinolab.load_model(weights), VisionHead(32, 8, hidden_dim=0),
                           TextEncoder(len(tok), 8, width=16, depth=1), tok)
    save_aligned(aligned, root / "aligned", backbone_path=weights)
    return root, str(weights)


def command_line(name, root, weights, out):
    data, common = str(root / "data"), ["--device", "cpu", "--num-workers", "0"]
    visual = ["--device", "cpu"]
    return {
        "embed": ["embed", weights, data, "--out", str(out / "e.npz"), *common],
        "knn": ["knn", weights, "--train", data, "--val", data, "--k", "3", *common],
        "linear": ["linear", weights, "--train", data, "--val", data, "--logreg", *common],
        "fewshot": ["fewshot", weights, data, "--shots", "1", "--episodes", "2", *common],
        "retrieve": ["retrieve", weights, "--query", data, "--database", data, *common],
        "attention": ["attention", weights, str(root / "data" / "red"), "--out", str(out), *visual],
        "objects": ["objects", weights, data, "--out", str(out), *visual],
        "pca": ["pca", weights, str(root / "data" / "red"), "--out", str(out), *visual],
        "dedup": ["dedup", data, "--weights", weights, "--out", str(out), *common],
        "curate": ["curate", "--pool", data, "--seeds", str(root / "data" / "red"), "--weights", weights,
                   "--k", "1", "--out", str(out), *common],
        "zeroshot": ["zeroshot", data, "--aligned", str(root / "aligned"), *common],
        "search": ["search", data, "--aligned", str(root / "aligned"), "--text", "a red", *common],
        "align": ["align", "--weights", weights, "--pairs", "builtin:shapes?n=8&size=64", "--out", str(out),
                  "epochs=1", "batch_size=4", "embed_dim=8", "text_width=16", "text_depth=1", "head_hidden_dim=16",
                  *common],
    }[name]


COMMANDS = ["embed", "knn", "linear", "fewshot", "retrieve", "attention", "objects", "pca", "dedup", "curate",
            "zeroshot", "search", "align"]


@pytest.fixture
def fed(monkeypatch):
    """Records (shape, min, max) of every batch that reaches a patch embedding."""
    seen = []
    original = PatchEmbed.forward

    def recording(self, x):
        seen.append((tuple(x.shape[-2:]), float(x.min()), float(x.max())))
        return original(self, x)

    monkeypatch.setattr(PatchEmbed, "forward", recording)
    return seen


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_feeds_the_recorded_size_and_normalisation(setup, fed, tmp_path, capsys, command):
    root, weights = setup
    assert main(command_line(command, root, weights, tmp_path / "out")) == 0
    assert fed, f"{command} ran no image through the model"
    assert {shape for shape, _, _ in fed} == {(SIZE, SIZE)}  # the 64 px square images at the recorded 40 px
    assert min(lo for _, lo, _ in fed) >= 0.0 and max(hi for _, _, hi in fed) <= 1.0  # mean 0 / std 1, not ImageNet
    err = capsys.readouterr().err
    assert f"{command}: image size {SIZE} px" in err and "mean (0, 0, 0) std (1, 1, 1)" in err


@pytest.mark.parametrize("command", ["embed", "attention", "zeroshot", "align"])
def test_the_command_line_wins_over_the_record(setup, fed, tmp_path, capsys, command):
    root, weights = setup
    argv = command_line(command, root, weights, tmp_path / "out") + ["--image-size", "48", "--mean", "0.5", "0.5",
                                                                    "0.5", "--std", "0.25", "0.25", "0.25"]
    assert main(argv) == 0
    assert {shape for shape, _, _ in fed} == {(48, 48)}
    assert min(lo for _, lo, _ in fed) >= -2.0 - 1e-5 and min(lo for _, lo, _ in fed) < 0  # (x - 0.5) / 0.25
    assert "image size and mean and std given" in capsys.readouterr().err
