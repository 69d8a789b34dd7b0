import json

import numpy as np
import pytest
import torch

import dinolab
from dinolab.cli import main
from dinolab.eval.features import Embeddings
from dinolab.eval.knn import knn_classify


def clusters(path, n_per_class, classes=("a", "b", "c", "d", "e", "f"), flip=None, seed=0):
    """Tight clusters on orthogonal axes: k-NN is exact unless a label is flipped."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(classes)), n_per_class)
    x = (np.eye(8)[labels] * 5 + 0.1 * rng.normal(size=(len(labels), 8))).astype(np.float32)
    if flip is not None:
        labels = labels.copy()
        labels[flip] = (labels[flip] + 1) % len(classes)
    Embeddings([f"{path.stem}/{i}.png" for i in range(len(labels))], x, labels=labels, classes=list(classes)).save(path)
    return path


def test_knn_on_embeddings_prints_table_and_writes_json(tmp_path, capsys):
    train = clusters(tmp_path / "train.npz", 20)
    val = clusters(tmp_path / "val.npz", 5, flip=0, seed=1)  # one of 30 validation labels is wrong
    out = tmp_path / "knn.json"
    code = main(["knn", "--train-embeddings", str(train), "--val-embeddings", str(val), "--k", "10", "200",
                 "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "top-1 %" in printed and "96.67" in printed and "used k=120" in printed
    res = json.loads(out.read_text())
    assert res["results"]["10"]["top1"] == pytest.approx(29 / 30)
    assert res["results"]["200"]["k_used"] == 120
    # all 10 neighbours of the flipped image vote "a": its label "b" got no vote, so not in the top 5 either
    assert res["results"]["10"]["top5"] == pytest.approx(29 / 30)
    # the flipped image is labelled b (support 6) and predicted a (support 4)
    assert res["per_class"]["b"] == {"recall": pytest.approx(5 / 6), "precision": 1.0, "f1": pytest.approx(10 / 11),
                                     "support": 6}
    assert res["per_class"]["a"]["support"] == 4 and res["per_class"]["a"]["recall"] == 1.0


def test_never_overwrites_without_force(tmp_path, capsys):
    train, val = clusters(tmp_path / "train.npz", 5), clusters(tmp_path / "val.npz", 2)
    out = tmp_path / "knn.json"
    out.write_text("keep me")
    args = ["knn", "--train-embeddings", str(train), "--val-embeddings", str(val), "--out", str(out)]
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err and out.read_text() == "keep me"
    assert main(args + ["--force"]) == 0
    assert json.loads(out.read_text())["command"] == "knn"


def test_empty_and_unlabelled_embeddings_exit_2(tmp_path, capsys):
    train = clusters(tmp_path / "train.npz", 5)
    empty = tmp_path / "empty.npz"
    Embeddings([], np.zeros((0, 8), np.float32), labels=np.zeros(0, np.int64), classes=["a"]).save(empty)
    assert main(["knn", "--train-embeddings", str(train), "--val-embeddings", str(empty)]) == 2
    assert "0 images" in capsys.readouterr().err
    unlabelled = tmp_path / "unlabelled.npz"
    Embeddings(["x.png"], np.ones((1, 8), np.float32)).save(unlabelled)
    assert main(["knn", "--train-embeddings", str(unlabelled), "--val-embeddings", str(train)]) == 2
    assert "no labels" in capsys.readouterr().err
    assert main(["knn", "--train-embeddings", str(tmp_path / "missing.npz"), "--val-embeddings", str(train)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_class_mismatch_and_missing_weights_exit_2(tmp_path, capsys):
    train = clusters(tmp_path / "train.npz", 5, classes=("a", "b", "c"))
    val = clusters(tmp_path / "val.npz", 2, classes=("a", "z"))
    assert main(["knn", "--train-embeddings", str(train), "--val-embeddings", str(val)]) == 2
    assert "z" in capsys.readouterr().err
    assert main(["knn", "--train", str(tmp_path), "--val-embeddings", str(val)]) == 2
    assert "WEIGHTS" in capsys.readouterr().err


def test_val_classes_are_matched_by_name(tmp_path):
    train = clusters(tmp_path / "train.npz", 5, classes=("a", "b", "c"))
    # val has only classes c and a, in that order: label 0 means "c" there
    rng = np.random.default_rng(0)
    x = (np.eye(8)[[2, 2, 0]] * 5 + 0.1 * rng.normal(size=(3, 8))).astype(np.float32)
    Embeddings(["1", "2", "3"], x, labels=np.array([0, 0, 1]), classes=["c", "a"]).save(tmp_path / "val.npz")
    out = tmp_path / "r.json"
    assert main(["knn", "--train-embeddings", str(train), "--val-embeddings", str(tmp_path / "val.npz"),
                 "--k", "3", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["results"]["3"]["top1"] == 1.0


def test_knn_from_image_folders_with_weights(tmp_path, image_folder, capsys):
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    dinolab.save_model(dinolab.create_model("vit_tiny", img_size=32, patch_size=16, depth=1), weights)
    folder = image_folder(classes=("cat", "dog"), per_class=3, size=(32, 32))
    common = ["--image-size", "32", "--device", "cpu", "--precision", "fp32", "--num-workers", "0"]
    assert main(["knn", str(weights), "--train", str(folder), "--val", str(folder), "--k", "1", *common]) == 0
    printed = capsys.readouterr().out
    assert "k-NN on 6 training and 6 validation images, 192-d" in printed
    assert "100.00" in printed  # every image is its own nearest neighbour
    flat = image_folder(classes=None, per_class=3, name="flat")
    assert main(["knn", str(weights), "--train", str(flat), "--val", str(folder), *common]) == 2
    assert "--train" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["knn", str(weights), "--train", str(tmp_path / "empty"), "--val", str(folder), *common]) == 2


@pytest.mark.parametrize("argv", [["--help"], ["knn", "--help"], ["linear", "--help"], ["fewshot", "--help"],
                                  ["retrieve", "--help"]])
def test_help_renders(argv, capsys):
    # argparse %-formats help strings: a stray "%" in a summary breaks `dinolab --help`
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0 and "usage" in capsys.readouterr().out


def _cls_and_patch(path, labels, seed):
    """A CLS of large-norm noise and a patch mean that holds the class: only the patch mean separates them."""
    rng = np.random.default_rng(seed)
    cls = (40 * rng.normal(size=(len(labels), 64))).astype(np.float32)
    patch = (np.eye(8)[labels] + 0.05 * rng.normal(size=(len(labels), 8))).astype(np.float32)
    Embeddings([f"{i}.png" for i in range(len(labels))], cls, patch_mean=patch, labels=labels,
               classes=list("abcdef")).save(path)
    return cls, patch


def test_patch_mean_joins_unit_cls_and_unit_patch_mean(tmp_path, capsys):
    ytr, yva = np.repeat(np.arange(6), 20), np.repeat(np.arange(6), 5)
    ctr, ptr = _cls_and_patch(tmp_path / "train.npz", ytr, 0)
    cva, pva = _cls_and_patch(tmp_path / "val.npz", yva, 1)
    base = ["knn", "--train-embeddings", str(tmp_path / "train.npz"), "--val-embeddings", str(tmp_path / "val.npz"),
            "--k", "10", "--faiss", "no"]
    assert main([*base, "--out", str(tmp_path / "cls.json")]) == 0
    assert main([*base, "--patch-mean", "--out", str(tmp_path / "pm.json")]) == 0
    assert "72-d features (CLS + mean patch token)" in capsys.readouterr().out
    cls_only = json.loads((tmp_path / "cls.json").read_text())["results"]["10"]["top1"]
    joined = json.loads((tmp_path / "pm.json").read_text())
    assert cls_only < 0.5 and joined["patch_mean"] is True
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    expected = knn_classify(np.concatenate([unit(ctr), unit(ptr)], 1), ytr, np.concatenate([unit(cva), unit(pva)], 1),
                            yva, k=10, use_faiss=False)[10]["top1"]
    raw = knn_classify(np.concatenate([ctr, ptr], 1), ytr, np.concatenate([cva, pva], 1), yva, k=10,
                       use_faiss=False)[10]["top1"]
    assert joined["results"]["10"]["top1"] == pytest.approx(expected) and expected > 0.95 and raw < 0.5


def test_patch_mean_needs_embeddings_made_with_it(tmp_path, capsys):
    train, val = clusters(tmp_path / "train.npz", 5), clusters(tmp_path / "val.npz", 2)
    assert main(["knn", "--train-embeddings", str(train), "--val-embeddings", str(val), "--patch-mean"]) == 2
    assert "has no patch_mean" in capsys.readouterr().err
