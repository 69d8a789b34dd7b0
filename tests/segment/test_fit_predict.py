"""Segmentation heads on a tiny random backbone: sliding windows, the logreg head against sklearn, exact resume,
and the three commands."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import dinolab
from dinolab.cli import main
from dinolab.eval.viz import prepare_image
from dinolab.models.preprocess import Preprocess
from dinolab.segment import SegmentationHead, Segmenter, fit, load_segmenter, predict_logits, read_mask, write_mask
from dinolab.segment.logreg import patch_samples

SHAPES = "builtin:shapes?n=6&size=32"
CPU = dict(device="cpu", precision="fp32", progress=False)


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return dinolab.create_model("vit_tiny", img_size=16, patch_size=8, depth=2, embed_dim=32, num_heads=2).eval()


def test_logreg_on_a_full_disk_says_to_run_again_not_to_resume(backbone, tmp_path, full_metrics_disk):
    from dinolab.errors import DinolabError

    with pytest.raises(DinolabError, match=r"no space left.*nothing to resume.*run the same command again") as e:
        fit(backbone, SHAPES, head="logreg", image_size=32, out=tmp_path / "seg", **CPU)
    assert "--resume" not in str(e.value)


def test_sliding_windows_average_the_windows_logits(backbone):
    torch.manual_seed(1)
    head = SegmentationHead(32, 3).eval()
    seg = Segmenter(backbone, head, ["a", "b", "c"], 1, 16, Preprocess(image_size=16))
    image = torch.randint(0, 256, (3, 20, 50), dtype=torch.uint8)
    got = predict_logits(seg, image, batch_size=2)
    _, x = prepare_image(image, 8, 16)  # 16 x 40 pixels: windows at columns 0, 8, 16, 24 (stride 8, last flush)
    assert tuple(x.shape[-2:]) == (16, 40)
    acc, count = torch.zeros(3, 16, 40), torch.zeros(16, 40)
    for s in (0, 8, 16, 24):
        with torch.no_grad():
            win = head(dinolab.eval.dense.patch_tokens(backbone, x[None, :, :, s:s + 16]))
        acc[:, :, s:s + 16] += F.interpolate(win, size=(16, 16), mode="bilinear", align_corners=False)[0]
        count[:, s:s + 16] += 1
    want = F.interpolate((acc / count)[None], size=(20, 50), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(got, want, atol=1e-5)


def test_logreg_head_gives_sklearn_probabilities(backbone):
    from sklearn.linear_model import LogisticRegression

    seg = fit(backbone, SHAPES, head="logreg", image_size=32, purity=0.9, **CPU)
    data = dinolab.segment.load_segmentation_data(SHAPES)
    pairs = [(im, m) for _, im, m in data.readable()]
    X, y = patch_samples(seg, pairs, 0.9, "cpu", "fp32")
    clf = LogisticRegression(C=0.1, max_iter=1000, random_state=0).fit(X, y)
    with torch.no_grad():
        logits = seg.head.conv(torch.from_numpy(X).float()[:, :, None, None])[:, :, 0, 0]
    probs = torch.softmax(logits.double(), dim=1)[:, clf.classes_]
    assert torch.allclose(probs, torch.from_numpy(clf.predict_proba(X)), atol=1e-4)
    unseen = sorted(set(range(6)) - set(clf.classes_.tolist()))
    assert all(seg.head.conv.bias[c] < -1e3 for c in unseen)


def test_resume_continues_the_same_trajectory(tmp_path, backbone, monkeypatch):
    w = dinolab.save_model(backbone, tmp_path / "bb.safetensors")
    opts = dict(steps=6, checkpoint_every=3, batch_size=2, image_size=16, **CPU)
    straight = fit(w, SHAPES, out=tmp_path / "a", **opts)
    import sys

    fit_module = sys.modules["dinolab.segment.fit"]  # the package exports the function under the same name

    real_step, calls = fit_module._step, []

    def interrupted(job):
        if len(calls) == 4:  # after the checkpoint at step 3 and one more step
            raise KeyboardInterrupt
        calls.append(1)
        return real_step(job)

    monkeypatch.setattr(fit_module, "_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(w, SHAPES, out=tmp_path / "b", **opts)
    monkeypatch.setattr(fit_module, "_step", real_step)
    resumed = fit(w, SHAPES, out=tmp_path / "b", resume=True, **opts)
    for k, v in straight.head.state_dict().items():
        assert torch.equal(v, resumed.head.state_dict()[k]), k
    loaded = load_segmenter(tmp_path / "b")
    assert torch.equal(loaded.head.conv.weight, resumed.head.conv.weight) and loaded.classes[0] == "background"
    other = dinolab.create_model("vit_tiny", img_size=16, patch_size=8, depth=2, embed_dim=32, num_heads=2)
    dinolab.save_model(other, tmp_path / "other.safetensors")
    with pytest.raises(dinolab.errors.WeightsError, match="not the backbone"):
        load_segmenter(tmp_path / "b", weights=tmp_path / "other.safetensors")


def test_commands_on_folders(tmp_path, backbone, capsys):
    w = dinolab.save_model(backbone, tmp_path / "bb.safetensors")
    images, masks = tmp_path / "img", tmp_path / "msk"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        pic = rng.integers(0, 60, (24, 40, 3), dtype=np.uint8)
        m = np.zeros((24, 40), int)
        m[4:20, 8 + 8 * k:24 + 8 * k] = 1 + k % 2
        pic[m > 0] = 220
        m[0, :] = 255
        Image.fromarray(pic).save(images / f"p{k}.jpg")
        write_mask(masks / f"p{k}.png", m)
    run = ["--device", "cpu", "--precision", "fp32", "--no-progress", "--image-size", "16"]
    head = tmp_path / "head"
    assert main(["segment", "fit", str(w), "--images", str(images), "--masks", str(masks), "--out", str(head),
                 "--steps", "4", "--layers", "2", "--batch-size", "2", *run]) == 0
    assert "3 classes: 0, 1, 2; 2 layer(s)" in capsys.readouterr().out
    out = tmp_path / "pred"
    assert main(["segment", "predict", str(head), str(images), "--out", str(out), *run]) == 0
    assert read_mask(out / "p1.png").shape == (24, 40) and (out / "p1_overlay.png").exists()
    assert main(["segment", "eval", str(head), "--images", str(images), "--masks", str(masks), "--json",
                 str(tmp_path / "r.json"), *run]) == 0
    assert "mIoU" in capsys.readouterr().out
    (masks / "p2.png").rename(masks / "q2.png")
    assert main(["segment", "eval", str(head), "--images", str(images), "--masks", str(masks), *run]) == 2
    assert "without a mask" in capsys.readouterr().err
    assert main(["segment", "fit", str(w), "--images", str(images), "--masks", str(masks), "--out", str(head),
                 *run]) == 2  # an earlier run is kept
    assert "already exists" in capsys.readouterr().err
