import json

import numpy as np
import pytest
import torch

import dinolab
from dinolab.cli import main
from dinolab.eval.features import Embeddings


def test_retrieval_on_embeddings(tmp_path, capsys):
    # database: 2 "x" images and 2 "y" images at fixed angles; one query of each class + one of an unknown class
    ang = np.array([0.0, 0.3, 0.1, 1.5])
    db = np.c_[np.cos(ang), np.sin(ang)].astype(np.float32)
    Embeddings(["db0", "db1", "db2", "db3"], db, labels=np.array([0, 0, 1, 1]), classes=["x", "y"]).save(
        tmp_path / "db.npz")
    q = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    Embeddings(["qx", "qy", "qz"], q, labels=np.array([1, 2, 0]), classes=["unknown", "x", "y"]).save(
        tmp_path / "q.npz")
    out = tmp_path / "r.json"
    assert main(["retrieve", "--query-embeddings", str(tmp_path / "q.npz"), "--database-embeddings",
                 str(tmp_path / "db.npz"), "--ks", "1", "2", "--top", "2", "--out", str(out)]) == 0
    assert "1 queries have no image of their class" in capsys.readouterr().out
    res = json.loads(out.read_text())
    # qx ranks db0, db2, db1, db3: x at ranks 1 and 3 -> AP (1 + 2/3) / 2
    # qy ranks db3, db1, db2, db0: y at ranks 1 and 3 -> AP (1 + 2/3) / 2
    assert res["mAP"] == pytest.approx((1 + 2 / 3) / 2)
    assert res["recall@k"] == {"1": 1.0, "2": 1.0} and res["precision@k"]["2"] == pytest.approx(0.5)
    assert res["queries"][0]["top"] == ["db0", "db2"] and res["queries"][2]["ap"] is None


def test_copy_detection_mode(tmp_path, capsys):
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    dinolab.save_model(dinolab.create_model("vit_tiny", img_size=32, patch_size=16, depth=1), weights)
    out = tmp_path / "cd.json"
    assert main(["retrieve", str(weights), "--copy-detection", "builtin:shapes?n=5&size=32", "--augmentations", "2",
                 "--kinds", "jpeg", "blur", "--distractors", "builtin:shapes?n=3&size=32&seed=9",
                 "--image-size", "32", "--device", "cpu", "--precision", "fp32", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "10 edited copies of 5 images, database of 8 (3 distractors)" in printed
    res = json.loads(out.read_text())
    assert set(res["per_kind"]) == {"jpeg", "blur"} and 0 < res["mAP"] <= 1


def test_errors_exit_2(tmp_path, capsys):
    assert main(["retrieve", "--query-embeddings", str(tmp_path / "q.npz")]) == 2
    assert "--database" in capsys.readouterr().err
    assert main(["retrieve", "--copy-detection", str(tmp_path)]) == 2  # no WEIGHTS
    assert "WEIGHTS" in capsys.readouterr().err
    unlabelled = tmp_path / "u.npz"
    Embeddings(["a"], np.ones((1, 4), np.float32)).save(unlabelled)
    assert main(["retrieve", "--query-embeddings", str(unlabelled), "--database-embeddings", str(unlabelled)]) == 2
    assert "no labels" in capsys.readouterr().err
