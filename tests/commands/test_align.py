import torch

import dinolab
from dinolab.cli import main
from dinolab.runtime.metrics_log import read_metrics
from dinolab.text import load_aligned

DATA = "builtin:shapes?n=12&size=16"
TINY = ["--image-size", "16", "--embed-dim", "16", "--text-width", "32", "--text-depth", "1", "--batch-size", "6",
        "--device", "cpu", "--precision", "fp32", "--num-workers", "0"]


def save_backbone(path, seed=0):
    torch.manual_seed(seed)
    dinolab.save_model(dinolab.create_model("vit_tiny", img_size=16, patch_size=8, depth=1), path)
    return path


def test_align_end_to_end_and_force(tmp_path, capsys):
    weights = save_backbone(tmp_path / "bb.safetensors")
    before = weights.read_bytes()
    out = tmp_path / "aligned"
    args = ["align", "--weights", str(weights), "--pairs", DATA, "--out", str(out), "--epochs", "2"] + TINY
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"aligned {weights} on {DATA}: 2 epoch(s) run" in printed
    assert "zero-shot accuracy on the pairs' own classes:" in printed
    assert "backbone unchanged" in printed
    assert weights.read_bytes() == before
    model = load_aligned(out)
    assert model.image_size == 16 and model.embed_dim == 16
    assert [r["epoch"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]

    heads = (out / "heads.safetensors").read_bytes()
    assert main(args) == 2  # an earlier run is kept
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err and "Traceback" not in err
    assert (out / "heads.safetensors").read_bytes() == heads
    assert main(args + ["--epochs", "1", "--force"]) == 0
    assert [r["epoch"] for r in read_metrics(out / "metrics.jsonl")] == [1]
    assert main(args + ["--epochs", "2", "--resume"]) == 0
    assert [r["epoch"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]


def test_align_user_errors_exit_2(tmp_path, capsys):
    weights = save_backbone(tmp_path / "bb.safetensors")
    base = ["align", "--weights", str(weights), "--out", str(tmp_path / "o")] + TINY
    assert main(base + ["--pairs", "builtin:digits"]) == 2
    assert "has no captions" in capsys.readouterr().err
    assert main(base + ["--pairs", str(tmp_path / "none.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(base + ["--pairs", DATA, "--batch-size", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err
