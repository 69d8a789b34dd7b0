"""`dinolab train` through dinolab.cli.main: an end-to-end tiny run on builtin:digits and the errors users see."""

from __future__ import annotations

import pytest

from dinolab.cli import main

TINY = ["model.embed_dim=32", "model.depth=2", "model.num_heads=2", "data.source=builtin:digits?size=16",
        "crops.global_crops_size=16", "crops.local_crops_size=8", "crops.local_crops_number=2", "dino.out_dim=64",
        "dino.head_hidden_dim=32", "dino.head_bottleneck_dim=16", "train.batch_size=16", "train.epoch_length=2",
        "train.epochs=1", "train.progress=false", "train.precision=fp32", "eval.knn_k=[10]"]


def test_end_to_end_tiny_run_on_digits(tmp_path, capsys):
    import dinolab

    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"run directory: {run} (2 steps" in out
    assert "k-NN top-1 @ k=10:" in out and "(random init:" in out
    for name in ("config.yaml", "metrics.jsonl", "checkpoint.pt", "teacher_backbone.safetensors",
                 "teacher_backbone.json"):
        assert (run / name).is_file(), name
    assert "depth: 2" in (run / "config.yaml").read_text()
    assert dinolab.load_model(run / "teacher_backbone.safetensors").depth == 2
    # a finished run resumes to nothing; a non-empty directory is never reused silently
    assert main(["train", "--resume", str(run)]) == 0
    assert main(["train", *TINY, "--out", str(run)]) == 2
    assert f"continue that run with --resume {run}" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["optim.lr_rate=1"], "unknown config key 'optim.lr_rate' (command line); did you mean optim.lr?"),
    (["train.epochs=many"], "train.epochs='many' (command line) has the wrong type: expected an integer"),
    (["crops.global_crops_size=20"], "crops.global_crops_size=20 is not a multiple of model.patch_size=8"),
    (["dino_vits61"], "'dino_vits61' is neither a config file nor a preset; did you mean dino_vits16?"),
    (["dino_vits16"], "data.source is not set"),
    (["a=1", "oops"], "'oops' is neither the config"),
])
def test_user_errors_exit_2_with_the_message(tmp_path, capsys, argv, message):
    assert main(["train", *argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # rejected before any work


def test_print_config_and_presets(capsys):
    assert main(["train", "--list-presets"]) == 0
    assert {"default", "dino_vits16"} <= set(capsys.readouterr().out.split())
    assert main(["train", "--print-config", "dino_vits16", "optim.lr=1e-4"]) == 0
    out = capsys.readouterr().out
    assert "  lr: 0.0001\n" in out and "  out_dim: 65536\n" in out and "monitor:" in out


def test_resume_takes_no_config(tmp_path, capsys):
    assert main(["train", "default", "--resume", str(tmp_path)]) == 2
    assert "--resume continues with the run's own config.yaml" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_help_lists_every_packaged_preset(capsys):
    from pathlib import Path

    import dinolab

    presets = sorted(p.stem for p in (Path(dinolab.__file__).parent / "configs").glob("*.yaml"))
    assert len(presets) >= 8
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    listed = capsys.readouterr().out.split(f"presets ({len(presets)}, in dinolab/configs/")[1]
    for name in presets:
        assert f"\n  {name} " in listed, name
    assert "  dino_vits16     DINO v1 ViT-S/16, the official" in listed  # each with its comment's first sentence


def test_a_run_from_pretrained_weights_prints_the_comparison_with_them(tmp_path, capsys):
    import dinolab

    source = dinolab.create_model("vit_tiny", patch_size=8, img_size=16, embed_dim=32, depth=2, num_heads=2)
    path = dinolab.save_model(source, tmp_path / "released")
    assert main(["train", *TINY, f"model.pretrained={path}", "--out", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    assert f"model.pretrained: starting from {path} (dinolab weights" in captured.err
    assert "k-NN top-1 @ k=10:" in captured.out and f"(at the start ({path}): " in captured.out
    assert ", random init: " in captured.out
