"""dinolab.finetune end to end on a tiny ViT: every mode, every imbalance option, resume, outputs."""

from __future__ import annotations

import json
import math
import os
import signal

import numpy as np
import pytest
import torch

from dinolab.errors import DinolabError
from dinolab.finetune import finetune, load_classifier
from dinolab.models.formats.tensor_files import read_safetensors

from .conftest import FAST, write_digits


def _check_outputs(r, n_classes=3):
    for name in ("classifier.safetensors", "config.yaml", "metrics.jsonl", "confusion.png", "summary.json"):
        assert (r.out / name).is_file(), name
    s = json.loads((r.out / "summary.json").read_text())
    assert s["val_images"] == sum(s["confusion_matrix"][i][j] for i in range(n_classes) for j in range(n_classes))
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        assert 0.0 <= r.val_metrics[key] <= 1.0
        assert s[f"val_{key}"] == r.val_metrics[key]
    assert math.isfinite(r.temperature) and r.temperature > 0
    assert r.val_metrics["nll"] <= r.val_metrics["nll_uncalibrated"] + 1e-9  # T=1 is a candidate
    return s


@pytest.mark.parametrize("mode,extra", [
    ("head", {"crop": False, "flip": False}),  # features computed once
    ("head", {"n_blocks": 2, "feature": "cls"}),  # augmented: the frozen backbone runs each step
    ("last:1", {}),
    ("lora", {"lora_rank": 2, "lora_alpha": 4.0}),
    ("full", {"layer_decay": 0.5, "drop_path": 0.2}),
])
def test_every_mode_trains_and_saves(tmp_path, digits, tiny_weights, mode, extra):
    r = finetune(tiny_weights, digits, tmp_path / "run", mode=mode, epochs=2, batch_size=8, **extra, **FAST)
    s = _check_outputs(r)
    assert s["train_images"] + s["val_images"] == 30 and s["held_out_from_train"] == 6
    clf = load_classifier(r.classifier_path)
    base = read_safetensors(tiny_weights)[0]
    saved = {k[len("backbone."):]: v for k, v in read_safetensors(r.classifier_path)[0].items()
             if k.startswith("backbone.")}
    assert sorted(saved) == sorted(base)  # LoRA merged: the backbone's own keys
    changed = {k for k in base if not torch.equal(base[k], saved[k])}
    if mode == "head":
        assert not changed
    elif mode == "last:1":
        assert changed and all(k.startswith(("blocks.1.", "norm.")) for k in changed)
    elif mode == "lora":
        assert changed and all(k.endswith("weight") and any(t in k for t in ("qkv", "proj", "fc1", "fc2"))
                               for k in changed)
    else:
        assert any(k.startswith("blocks.0.") for k in changed) and "cls_token" in changed
        assert clf.backbone.config["drop_path_rate"] == 0.2  # stochastic depth was on in training
    x = torch.randn(2, 3, 16, 16)
    assert clf(x).shape == (2, 3) and clf.classes == ["d0", "d1", "d2"]


@pytest.mark.parametrize("option", [{"balance": "sampler"}, {"loss_weights": "inverse"},
                                    {"loss_weights": "effective", "beta": 0.99}, {"logit_adjust": "loss", "tau": 1.5},
                                    {"label_smoothing": 0.1}])
def test_every_imbalance_option_runs(tmp_path, tiny_weights, option):
    data = write_digits(tmp_path / "lt", [16, 6, 3])
    r = finetune(tiny_weights, data, tmp_path / "run", epochs=2, batch_size=8, crop=False, flip=False, **option,
                 **FAST)
    s = _check_outputs(r)
    assert s["train_counts"] == {"d0": 13, "d1": 5, "d2": 2}  # round(0.2 n) of each class held out
    assert all(s["imbalance"][k] == v for k, v in option.items())


def test_posthoc_adjustment_is_folded_into_the_bias(tmp_path, tiny_weights):
    data = write_digits(tmp_path / "lt", [16, 6, 3])
    kw = dict(epochs=1, batch_size=8, crop=False, flip=False, **FAST)
    plain = finetune(tiny_weights, data, tmp_path / "a", **kw)
    adjusted = finetune(tiny_weights, data, tmp_path / "b", logit_adjust="posthoc", tau=0.5, **kw)
    counts = np.array([13, 5, 2])
    expected = load_classifier(plain.classifier_path).head.bias - 0.5 * torch.tensor(np.log(counts / 20),
                                                                                       dtype=torch.float32)
    got = load_classifier(adjusted.classifier_path).head.bias
    assert torch.allclose(got, expected, atol=1e-6)


def _stop_after_first_epoch(epoch, record):
    if epoch == 1:
        os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("mode", ["lora", "head"])
def test_resume_after_a_stop_equals_an_uninterrupted_run(tmp_path, digits, tiny_weights, mode):
    kw = dict(mode=mode, epochs=3, batch_size=8, balance="sampler", patience=0, **FAST)
    whole = finetune(tiny_weights, digits, tmp_path / "whole", **kw)
    first = finetune(tiny_weights, digits, tmp_path / "split", on_epoch=_stop_after_first_epoch, **kw)
    assert first.stopped_by == "SIGTERM" and first.classifier_path is None
    assert not (tmp_path / "split" / "classifier.safetensors").exists()
    with pytest.raises(DinolabError, match="already exists and holds files"):
        finetune(tiny_weights, digits, tmp_path / "split", **kw)
    second = finetune(tiny_weights, digits, tmp_path / "split", resume=True, **kw)
    a, b = read_safetensors(whole.classifier_path)[0], read_safetensors(second.classifier_path)[0]
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "whole" / "metrics.jsonl").read_text() == (tmp_path / "split" / "metrics.jsonl").read_text()
    assert second.val_metrics == whole.val_metrics and second.temperature == whole.temperature


def test_resume_with_other_settings_is_refused(tmp_path, digits, tiny_weights):
    kw = dict(epochs=2, batch_size=8, crop=False, flip=False, **FAST)
    finetune(tiny_weights, digits, tmp_path / "run", on_epoch=_stop_after_first_epoch, **kw)
    with pytest.raises(DinolabError, match="other data or settings"):
        finetune(tiny_weights, digits, tmp_path / "run", resume=True, mode="last:1", **kw)


def test_val_folder_and_early_stopping(tmp_path, tiny_weights):
    train = write_digits(tmp_path / "train", [8, 8, 8])
    val = write_digits(tmp_path / "val", [4, 4, 4], seed_offset=20)
    r = finetune(tiny_weights, train, tmp_path / "run", val=val, epochs=30, patience=1, head_lr=1e-6, batch_size=8,
                 crop=False, flip=False, **FAST)
    s = _check_outputs(r)
    assert s["held_out_from_train"] == 0 and s["val_images"] == 12 and s["train_images"] == 24
    assert s["early_stopped"] and s["epochs_run"] < 30  # a learning rate too small to improve anything
    assert s["best_epoch"] == s["epochs_run"] - 1


def test_val_with_unknown_class_is_refused(tmp_path, tiny_weights):
    from dinolab.errors import DataError

    train = write_digits(tmp_path / "train", [5, 5])
    val = write_digits(tmp_path / "val", [2, 2, 2])
    with pytest.raises(DataError, match="d2"):
        finetune(tiny_weights, train, tmp_path / "run", val=val, **FAST)
    assert not (tmp_path / "run").exists()  # a refused start leaves nothing


def test_resume_after_a_stop_in_the_middle_of_an_epoch(tmp_path, tiny_weights):
    data = write_digits(tmp_path / "d", [10, 10, 10])  # 24 training images: 3 steps of 8 per epoch
    kw = dict(mode="last:1", epochs=2, batch_size=8, patience=0, **FAST)
    whole = finetune(tiny_weights, data, tmp_path / "whole", **kw)

    def stop_at_step_2(step, loss):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    first = finetune(tiny_weights, data, tmp_path / "split", on_step=stop_at_step_2, **kw)
    assert first.stopped_by == "SIGTERM" and first.history == []
    second = finetune(tiny_weights, data, tmp_path / "split", resume=True, **kw)
    a, b = read_safetensors(whole.classifier_path)[0], read_safetensors(second.classifier_path)[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "whole" / "metrics.jsonl").read_text() == (tmp_path / "split" / "metrics.jsonl").read_text()


def test_a_class_with_one_image_is_trained_on_not_validated(tmp_path, tiny_weights, caplog):
    data = write_digits(tmp_path / "d", [6, 6, 1])
    r = finetune(tiny_weights, data, tmp_path / "run", epochs=1, crop=False, flip=False, **FAST)
    s = json.loads((r.out / "summary.json").read_text())
    assert s["train_counts"]["d2"] == 1 and s["val_images"] == 2 and s["held_out_from_train"] == 2
    assert s["val_per_class_recall"]["d2"] is None  # no validation image: no recall (valid JSON, not NaN)


def test_epochs_default_to_30_or_enough_for_min_steps():
    from dinolab.finetune.config import FINETUNE_SCHEMA

    cfg = FINETUNE_SCHEMA.load(None, [])
    assert cfg.epochs is None and cfg.min_steps == 500
    assert cfg.epochs_for(10) == 50  # 311 images at batch 32: 10 steps an epoch -> 500 steps
    assert cfg.epochs_for(7) == 72  # ceil(500 / 7)
    assert cfg.epochs_for(100) == 30  # large sets: 30 epochs, above min_steps
    assert FINETUNE_SCHEMA.load(None, ["epochs=3"]).epochs_for(1) == 3  # a given epochs is run exactly


def test_small_set_runs_min_steps(tmp_path, digits, tiny_weights):
    # 24 training images in one batch: one step an epoch, so min_steps=33 means 33 epochs (not 30)
    r = finetune(tiny_weights, digits, tmp_path / "run", batch_size=24, min_steps=33, patience=0, crop=False,
                 flip=False, **FAST)
    s = json.loads((r.out / "summary.json").read_text())
    assert s["train_images"] == 24 and s["epochs_run"] == 33
