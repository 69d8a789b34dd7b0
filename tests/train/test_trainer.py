"""The training loop: non-finite steps skipped and bounded, the frozen last layer, the teacher export,
starting from pretrained weights, unreadable images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from dinolab.errors import ConfigError
from dinolab.runtime.checkpoint import load_checkpoint
from dinolab.runtime.metrics_log import read_metrics
from dinolab.train.trainer import Trainer, TrainingDiverged


def _nan_at(steps):
    return lambda it, loss: loss * float("nan") if it in steps else loss


def test_a_non_finite_step_is_skipped_and_changes_nothing(tiny, tmp_path):
    trainer = Trainer(tiny("train.epochs=1", "train.epoch_length=4"), tmp_path)
    snapshots = {}

    def hook(it, loss):
        snapshots[it] = ({k: v.clone() for k, v in trainer.student.state_dict().items()},
                         trainer.objectives[0].loss.center.clone())
        return loss * float("nan") if it == 2 else loss

    trainer.on_loss = hook
    result = trainer.fit()
    assert result.iterations == 4 and result.stopped_by is None
    records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "step" in r]
    assert [r.get("skipped") for r in records] == [None, None, "non-finite loss", None]
    # the state seen at iteration 3 is the state after iteration 1: step 2 (the third) left no trace
    (before, center_before), (after, center_after) = snapshots[2], snapshots[3]
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(center_before, center_after)
    assert not torch.equal(snapshots[1][1], center_before)  # a good step does move the center


def test_too_many_non_finite_steps_stop_with_advice(tiny, tmp_path):
    trainer = Trainer(tiny("train.epochs=1", "train.epoch_length=8", "train.max_nonfinite_steps=3",
                           "train.checkpoint_every=1"), tmp_path)
    trainer.on_loss = _nan_at(range(2, 100))
    with pytest.raises(TrainingDiverged, match=r"3 steps in a row.*fp16 overflow.*optim.lr.*teacher.teacher_temp"):
        trainer.fit()
    state = load_checkpoint(tmp_path)
    assert state["iteration"] == 4 and state["nonfinite_streak"] == 2
    assert all(torch.isfinite(v).all() for v in state["student"].values() if v.is_floating_point())


def test_last_layer_is_frozen_during_the_first_epoch(tiny, tmp_path):
    trainer = Trainer(tiny("train.epoch_length=2", "optim.warmup_epochs=0", "optim.freeze_last_layer_epochs=1"),
                      tmp_path)
    trainer.setup()
    head = trainer.student["dino_head"]
    v0, mlp0 = head.last_layer.weight_v.detach().clone(), head.mlp[0].weight.detach().clone()
    batches = trainer.batches(0)
    for _ in range(2):  # epoch 0
        it, micro_batches = next(batches)
        assert "skipped" not in trainer.train_step(it, micro_batches)
        assert head.last_layer.weight_v.grad is None
    assert torch.equal(head.last_layer.weight_v, v0)
    assert not torch.equal(head.mlp[0].weight, mlp0)
    it, micro_batches = next(batches)  # epoch 1
    trainer.train_step(it, micro_batches)
    assert head.last_layer.weight_v.grad is not None and head.last_layer.weight_v.grad.abs().sum() > 0
    assert not torch.equal(head.last_layer.weight_v, v0)


def test_teacher_export_and_knn(tiny, tmp_path):
    import dinolab

    result = Trainer(tiny("train.epochs=1", "eval.knn_every=1", "eval.knn_k=[3]"), tmp_path).fit()
    model = dinolab.load_model(tmp_path / "teacher_backbone.safetensors")
    teacher = load_checkpoint(tmp_path)["teacher"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, teacher[f"backbone.{name}"]), name
    assert model.forward_features(torch.zeros(1, 3, 16, 16))["patches"].shape == (1, 4, 32)
    assert set(result.knn) == {3} and 0 <= result.knn[3] <= 1 and set(result.knn_random_init) == {3}
    knn_records = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "knn_top1@3" in r]
    assert knn_records == [{"step": 3, "epoch": 0, "knn_top1@3": result.knn[3],
                            "knn_top1_patch_mean@3": result.knn_patch_mean[3]}]


def test_the_run_reports_raw_pixel_knn_next_to_random_init(tiny, tmp_path, capsys):
    from dinolab.eval.baselines import raw_pixel_knn

    trainer = Trainer(tiny("train.epochs=1", "eval.knn_every=1", "eval.knn_k=[3]"), tmp_path)
    result = trainer.fit()
    expected = raw_pixel_knn(trainer.data.train, trainer.data.val, 16, k=(3,))  # the run's 16 px crops
    assert result.knn_raw_pixels == expected
    final = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "knn_top1_raw_pixels@3" in r]
    assert final == [{"step": 3, "knn_top1_random_init@3": result.knn_random_init[3],
                      "knn_top1_raw_pixels@3": expected[3]}]
    assert f"and {expected[3]:.1%} on raw pixels" in capsys.readouterr().err


def test_pretrained_initialises_both_backbones_and_checks_the_architecture(tiny, tmp_path):
    import dinolab

    torch.manual_seed(7)
    source = dinolab.create_model("vit_tiny", patch_size=8, img_size=16, embed_dim=32, depth=2, num_heads=2)
    path = dinolab.save_model(source, tmp_path / "released")
    trainer = Trainer(tiny(f"model.pretrained={path}"), tmp_path / "run")
    trainer.setup()
    for name, tensor in source.state_dict().items():
        assert torch.equal(trainer.student["backbone"].state_dict()[name], tensor), name
        assert torch.equal(trainer.teacher["backbone"].state_dict()[name], tensor), name
    assert trainer.student["backbone"].blocks[1].drop_path_rate > 0  # the student keeps its stochastic depth
    assert trainer.teacher["backbone"].blocks[1].drop_path_rate == 0

    wide = dinolab.create_model("vit_tiny", patch_size=8, img_size=16, embed_dim=48, depth=2, num_heads=2)
    other = dinolab.save_model(wide, tmp_path / "wide")
    with pytest.raises(ConfigError, match=r"does not fit model.arch=vit_tiny: embed_dim: config 32, file 48"):
        Trainer(tiny(f"model.pretrained={other}"), tmp_path / "run2").setup()


def test_unreadable_images_are_skipped_and_named(tiny, tmp_path):
    from dinolab.data import load_builtin

    images = load_builtin("builtin:shapes?n=24&size=16").images
    folder = tmp_path / "images"
    folder.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(np.ascontiguousarray(im.transpose(1, 2, 0))).save(folder / f"{i:02d}.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image")
    result = Trainer(tiny(f"data.source={folder}", "train.epochs=1", "train.epoch_length=3",
                          "data.max_bad_fraction=0.5"), tmp_path / "run").fit()
    assert result.iterations == 3 and math.isfinite(result.loss)
    log = (tmp_path / "run" / "bad_files.log").read_text()
    assert "empty.png" in log and "notes.jpg" in log


def test_a_run_from_pretrained_weights_names_them_and_compares_against_them(tiny, tmp_path, capsys):
    import dinolab

    torch.manual_seed(7)
    source = dinolab.create_model("vit_tiny", patch_size=8, img_size=16, embed_dim=32, depth=2, num_heads=2)
    path = dinolab.save_model(source, tmp_path / "released")
    trainer = Trainer(tiny(f"model.pretrained={path}", "train.epochs=1", "eval.knn_every=1", "eval.knn_k=[3]"),
                      tmp_path / "run")
    result = trainer.fit()
    err = capsys.readouterr().err
    assert (f"model.pretrained: starting from {path} (dinolab weights; model.arch=vit_tiny: width 32, 2 blocks, "
            f"2 heads, patch 8)") in err
    expected = trainer.knn(source.eval())  # the file's own weights, as saved
    assert result.knn_start == expected and set(result.knn_random_init) == {3}
    assert f"at the start ({path})" in err and f"{expected[3]:.1%} at the start" in err
    final = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "knn_top1_start@3" in r]
    assert final and final[-1]["knn_top1_start@3"] == expected[3]
    # resuming from the run's checkpoint: its weights are the checkpoint's, so no "starting from" line
    Trainer.from_run(tmp_path / "run", ["train.epochs=2"]).fit()
    assert "starting from" not in capsys.readouterr().err


def test_a_random_start_has_no_start_comparison(tiny, tmp_path):
    result = Trainer(tiny("train.epochs=1", "eval.knn_every=1", "eval.knn_k=[3]"), tmp_path).fit()
    assert result.knn_start is None and result.knn_random_init is not None


def test_the_progress_bar_counts_epochs_from_one(tiny, tmp_path, monkeypatch):
    import tqdm.auto

    postfixes = []

    class Bar:
        def __init__(self, *args, **kwargs):
            pass

        def set_postfix(self, **kwargs):
            postfixes.append(kwargs["epoch"])

        def update(self, n):
            pass

        def close(self):
            pass

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    Trainer(tiny(), tmp_path).fit()  # 2 epochs of 3 steps
    assert postfixes == ["1/2"] * 3 + ["2/2"] * 3
