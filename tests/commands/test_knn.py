import json

import numpy as np
import pytest
import torch

import dinolab
from dinolab.cli import main
from dinolab.eval.features import Embeddings


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
