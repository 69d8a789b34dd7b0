"""Labelled sources, the stratified split, and the classifier file (round trip and refusals)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dinolab.errors import DataError, WeightsError
from dinolab.finetune.classifier import Classifier, load_classifier, save_classifier
from dinolab.finetune.data import labelled_dataset, stratified_split
from dinolab.models import VisionTransformer


def test_split_holds_out_every_class_and_keeps_singletons():
    labels = np.array([0] * 20 + [1] * 5 + [2] * 2 + [3])
    tr, va, single = stratified_split(labels, 0.2, seed=3)
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(len(labels)))
    assert np.bincount(labels[va], minlength=4).tolist() == [4, 1, 1, 0]  # round(0.2 n), at least 1
    assert single == [3] and 27 in tr
    for c in (0, 1, 2):
        assert (labels[tr] == c).any()  # every class keeps training images
    tr2, va2, _ = stratified_split(labels, 0.2, seed=3)
    assert va2.tolist() == va.tolist()


def test_csv_list_with_header_and_relative_paths(tmp_path, digits):
    files = sorted(digits.glob("*/*.png"))[:6]
    lines = ["path,label"] + [f"{p.relative_to(digits)},{'odd' if i % 2 else 'even'}" for i, p in enumerate(files)]
    (digits / "labels.csv").write_text("\n".join(lines) + "\n")
    ds = labelled_dataset(digits / "labels.csv")
    assert ds.classes == ["even", "odd"] and ds.labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert ds.load(0).shape[0] == 3


def test_bad_sources_are_named(tmp_path, digits):
    bad = tmp_path / "bad.txt"
    bad.write_text("a.png,cat\njust-a-path.png\n")
    with pytest.raises(DataError, match=r"bad.txt line 2"):
        labelled_dataset(bad)
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "x.png").write_bytes((digits / "d0" / next(iter(sorted(p.name for p in (digits / "d0").iterdir())))
                                  ).read_bytes())
    with pytest.raises(DataError, match="no labels"):
        labelled_dataset(flat)


def _classifier():
    torch.manual_seed(0)
    bb = VisionTransformer(img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    head = torch.nn.Linear(32 * 3, 4)
    return Classifier(bb, head, ["a", "b", "c", "d"], temperature=1.7, feature="cls+patch", n_blocks=2,
                      metadata={"note": "x"})


def test_classifier_round_trip(tmp_path):
    clf = _classifier().eval()
    save_classifier(tmp_path / "classifier.safetensors", clf)
    back = load_classifier(tmp_path)  # the folder works too
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(back(x), clf(x), atol=1e-6)
    assert back.classes == clf.classes and back.temperature == 1.7 and back.feature == "cls+patch"
    assert back.n_blocks == 2 and back.metadata == {"note": "x"}
    p = back.predict_proba(x)
    assert torch.allclose(p, torch.softmax(clf(x) / 1.7, dim=-1), atol=1e-6)


def test_classifier_refusals_name_the_file(tmp_path):
    import dinolab

    with pytest.raises(WeightsError, match="no such classifier"):
        load_classifier(tmp_path / "missing.safetensors")
    backbone = dinolab.save_model(VisionTransformer(img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2),
                                  tmp_path / "bb")
    with pytest.raises(WeightsError, match=r"bb.safetensors.*no dinolab classifier record"):
        load_classifier(backbone)
    path = tmp_path / "c.safetensors"
    save_classifier(path, _classifier())
    trunc = tmp_path / "t.safetensors"
    trunc.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(WeightsError, match="t.safetensors"):
        load_classifier(trunc)
    from dinolab.models.formats.tensor_files import read_safetensors, write_safetensors

    tensors, header = read_safetensors(path)
    record = json.loads(header["dinolab_classifier"])
    record["classes"] = ["only-one"]
    write_safetensors(tmp_path / "r.safetensors", tensors, {"dinolab_classifier": json.dumps(record)})
    with pytest.raises(WeightsError, match="r.safetensors.*2 class names"):
        load_classifier(tmp_path / "r.safetensors")
    record["classes"] = ["a", "b", "c"]  # 3 names, a head of 4 rows
    write_safetensors(tmp_path / "h.safetensors", tensors, {"dinolab_classifier": json.dumps(record)})
    with pytest.raises(WeightsError, match="h.safetensors.*head.weight"):
        load_classifier(tmp_path / "h.safetensors")


def test_confusion_matrix_png(tmp_path):
    from PIL import Image

    from dinolab.eval.viz import plot_confusion_matrix

    plot_confusion_matrix(np.array([[3, 1], [0, 0]]), ["cat", "dog"], tmp_path / "c.png")
    im = Image.open(tmp_path / "c.png")
    assert im.format == "PNG" and im.size[0] > 100
    with pytest.raises(ValueError):
        plot_confusion_matrix(np.eye(3), ["a", "b"], tmp_path / "x.png")
