"""``dinolab finetune`` on the command line: summary, settings, refusals, a `dinolab train` run as WEIGHTS."""

from __future__ import annotations

import json

import pytest

from dinolab.cli import main

CLI = ["--device", "cpu", "--precision", "fp32", "--no-progress", "--num-workers", "0"]


def test_command_prints_the_summary(tmp_path, digits, tiny_weights, capsys):
    out = tmp_path / "clf"
    code = main(["finetune", tiny_weights, str(digits), "epochs=2", "--out", str(out), "--mode", "last:1",
                 "--loss-weights", "effective", "--no-flip", *CLI])
    text = capsys.readouterr().out
    assert code == 0
    assert "6 of them held out" in text and "balanced accuracy" in text and "temperature" in text
    assert all(f"d{c}" in text for c in range(3))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "last:1" and summary["imbalance"]["loss_weights"] == "effective"
    assert "flip: false" in (out / "config.yaml").read_text()
    # an existing run is kept: refused without --force / --resume
    assert main(["finetune", tiny_weights, str(digits), "--out", str(out), *CLI]) == 2
    assert "--resume" in capsys.readouterr().err


def test_print_config_and_bad_settings(capsys):
    assert main(["finetune", "--print-config", "mode=lora", "lora_rank=4"]) == 0
    text = capsys.readouterr().out
    assert "mode: lora" in text and "lora_rank: 4" in text and "weights: null" in text
    assert main(["finetune", "w", "d", "mode=last:0", "--print-config"]) == 2
    assert "mode=last:0" in capsys.readouterr().err
    assert main(["finetune", "--print-config", "balance=oversample"]) == 2
    capsys.readouterr()
    assert main(["finetune", "--out", "x"]) == 2
    assert "WEIGHTS" in capsys.readouterr().err


def test_a_train_run_directory_is_a_backbone(tmp_path, digits, capsys):
    from tests.commands.test_every_command_corpus import TRAIN

    run = tmp_path / "pretrain"
    assert main(["train", *TRAIN, "data.source=builtin:digits?size=16", "--out", str(run)]) == 0
    capsys.readouterr()
    code = main(["finetune", str(run), str(digits), "epochs=1", "--out", str(tmp_path / "clf"), *CLI])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "clf" / "classifier.safetensors").is_file()


@pytest.mark.parametrize("flag", ["--resume"])
def test_resume_without_a_run_is_refused(tmp_path, capsys, flag):
    assert main(["finetune", flag, "--out", str(tmp_path / "nothing"), *CLI]) == 2
    assert "finetune: error:" in capsys.readouterr().err
