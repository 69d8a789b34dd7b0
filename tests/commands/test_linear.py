import json

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from dinolab.cli import main
from dinolab.eval.features import Embeddings


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(1):
        yield


def write(path, n_per_class, patch_mean=True, seed=0, n_cls=4):
    """Classes separable by the CLS part; the patch-mean part is pure noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_cls), n_per_class)
    cls = (np.eye(6)[labels] * 3 + 0.3 * rng.normal(size=(len(labels), 6))).astype(np.float32)
    pm = rng.normal(size=(len(labels), 3)).astype(np.float32) if patch_mean else None
    Embeddings([str(i) for i in range(len(labels))], cls, pm, labels, [f"c{i}" for i in range(n_cls)]).save(path)
    return path


def test_linear_probe_on_embeddings(tmp_path, capsys):
    train, val = write(tmp_path / "t.npz", 30), write(tmp_path / "v.npz", 10, seed=1)
    out = tmp_path / "probe.json"
    assert main(["linear", "--train-embeddings", str(train), "--val-embeddings", str(val), "--epochs", "30",
                 "--avgpool", "--lrs", "0.01", "0.1", "1.0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "9-d features" in printed  # 6 CLS + 3 patch-mean dimensions
    assert "chosen on the validation set" in printed and "best lr" in printed
    res = json.loads(out.read_text())
    assert res["result"]["top1"] == 1.0 and res["avgpool"] is True
    assert set(res["result"]["grid"]) == {"0.01", "0.1", "1.0"}
    assert res["result"]["per_class"]["c0"]["support"] == 10


def test_logreg_probe_and_holdout_note(tmp_path, capsys):
    train, val = write(tmp_path / "t.npz", 30), write(tmp_path / "v.npz", 10, seed=1)
    out = tmp_path / "probe.json"
    assert main(["linear", "--train-embeddings", str(train), "--val-embeddings", str(val), "--logreg",
                 "--out", str(out)]) == 0
    assert "held-out part of the training set" in capsys.readouterr().out
    res = json.loads(out.read_text())["result"]
    assert res["method"] == "logreg" and res["top1"] == 1.0 and res["selection"] == "holdout"
    # --force needed the second time
    assert main(["linear", "--train-embeddings", str(train), "--val-embeddings", str(val), "--logreg",
                 "--out", str(out)]) == 2


def test_input_errors_exit_2(tmp_path, capsys):
    train = write(tmp_path / "t.npz", 5, patch_mean=False)
    val = write(tmp_path / "v.npz", 2, patch_mean=False)
    assert main(["linear", "--train-embeddings", str(train), "--val-embeddings", str(val), "--avgpool"]) == 2
    assert "--patch-mean" in capsys.readouterr().err
    assert main(["linear", "--train-embeddings", str(train), "--val-embeddings", str(val), "--selection", "cv"]) == 2
    assert main(["linear", "--train-embeddings", str(train)]) == 2
    assert "--val" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    assert main(["linear", "--train-embeddings", str(bad), "--val-embeddings", str(val)]) == 2
