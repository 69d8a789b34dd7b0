"""`dinolab bench` at tiny sizes: it runs, prints tables, writes JSON, refuses bad input."""

import json

import pytest

from dinolab.bench import scaling, train_step
from dinolab.cli import main

FAST = ["--quick", "--repeats", "1", "--warmup", "0", "--batch", "1"]


def test_train_writes_figures_and_json(tmp_path, capsys):
    out = tmp_path / "train.json"
    assert main(["bench", "train", *FAST, "--recipes", "dino", "--precisions", "fp32", "--device", "cpu",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "training step" in text and "augmentation" in text and "matmul peak" in text
    report = json.loads(out.read_text())
    assert report["machine"]["cpus"] >= 1
    case, = report["train"]["cases"]
    assert case["recipe"] == "dino" and case["precision"] == "fp32" and case["objectives"] == ["dino"]
    assert case["batch"] == 1 and len(case["seconds"]) == 1
    # MFU is the achieved rate over the same-run peak: recompute it from the stored figures
    peak = report["train"]["peaks"]["fp32"]
    assert case["mfu"] == pytest.approx(case["flops"] / case["best_s"] / peak["flops_per_s"])
    assert report["train"]["augment"]["vs_step"]["dino/fp32"] == pytest.approx(
        report["train"]["augment"]["images_per_s"] / case["images_per_s"])
    # refuses to overwrite without --force (exit 2, message naming the file)
    assert main(["bench", "train", *FAST, "--out", str(out)]) == 2
    assert str(out) in capsys.readouterr().err


def test_embed_against_transformers(tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "embed.json"
    assert main(["bench", "embed", *FAST, "--precisions", "fp32", "--device", "cpu", "--out", str(out)]) == 0
    entry, = json.loads(out.read_text())["embed"]["models"]
    assert entry["model"] == "dinov2_vits14"
    # both sides load the same HF folder and use the same resize rule: the same function
    assert entry["fp32"]["max_abs_diff_vs_hf"]["cls"] < 1e-4
    assert entry["fp32"]["ratio"] == pytest.approx(entry["fp32"]["ours"]["images_per_s"] /
                                                   entry["fp32"]["hf"]["images_per_s"])


def test_bad_arguments_exit_2(capsys):
    assert main(["bench", "train", "--repeats", "0"]) == 2
    assert "--repeats" in capsys.readouterr().err
    assert main(["bench", "train", "--precisions", ","]) == 2
    assert main(["bench", "train", *FAST, "--recipes", "nope", "--precisions", "fp32"]) == 2
    assert "nope" in capsys.readouterr().err


def test_scaling_points_and_run():
    base = train_step.QUICK
    pts = scaling.points(base, (1, 3), (32, 128))
    assert [(a, s.batch, s.global_size, s.local_size) for a, s in pts] == [
        ("batch", 1, 64, 32), ("batch", 3, 64, 32),
        # local crops keep base's 32/64 share, rounded to whole 16-pixel patches
        ("image_size", 2, 32, 16), ("image_size", 2, 128, 64)]
    # one resolution only: both points share one trainer (the quick base size is 64 px)
    result = scaling.run(quick=True, device="cpu", precision="fp32", repeats=1, warmup=0, batches=(1,), sizes=(64,))
    assert [(r["axis"], r["batch"], r["global_size"]) for r in result["rows"]] == [("batch", 1, 64),
                                                                                  ("image_size", 2, 64)]
    assert all(r["flops"] > 0 and r["best_s"] > 0 for r in result["rows"])
    assert "scaling" in scaling.summary(result)
