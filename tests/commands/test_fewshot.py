import json

import numpy as np
import pytest

from dinolab.cli import main
from dinolab.eval.features import Embeddings


def write(path, counts, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(counts)), counts)
    x = (np.eye(8)[labels] * 4 + 0.2 * rng.normal(size=(len(labels), 8))).astype(np.float32)
    Embeddings([str(i) for i in range(len(labels))], x, labels=labels,
               classes=[f"class{i}" for i in range(len(counts))]).save(path)
    return path


def test_fewshot_on_embeddings(tmp_path, capsys):
    data = write(tmp_path / "d.npz", [12, 12, 12, 4])
    out = tmp_path / "fs.json"
    assert main(["fewshot", "--embeddings", str(data), "--shots", "1", "5", "--episodes", "10",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "100.00" in printed and "class3 (4)" in printed and "Student-t" in printed
    res = json.loads(out.read_text())["results"]
    assert res["1"]["n_classes"] == 4 and res["5"]["n_classes"] == 3
    assert res["5"]["skipped_classes"] == {"class3": 4}
    assert res["5"]["accuracy"]["mean"] == 1.0 and res["5"]["accuracy"]["n"] == 10
    assert set(res["1"]["per_class_recall"]) == {"class0", "class1", "class2", "class3"}
    assert set(res["5"]["per_class_recall"]) == {"class0", "class1", "class2"}
    assert res["5"]["per_class_recall"]["class0"]["mean"] == 1.0
    lines = printed.splitlines()
    assert any(line.split()[:2] == ["5", "3"] and "of 4" in line for line in lines)  # the k=5 row: 3 of 4 classes
    class3 = next(line for line in lines if line.startswith("class3 "))
    assert class3.split()[1:] == ["100.00", "left", "out"]  # recall at k=1, left out at k=5
    assert "over those N classes only" in printed


@pytest.mark.parametrize("classifier", ["knn", "logreg"])
def test_other_classifiers_and_query_set(tmp_path, classifier):
    data, query = write(tmp_path / "d.npz", [6, 6, 6]), write(tmp_path / "q.npz", [3, 3, 3], seed=1)
    out = tmp_path / "fs.json"
    assert main(["fewshot", "--embeddings", str(data), "--query-embeddings", str(query), "--shots", "2",
                 "--episodes", "3", "--classifier", classifier, "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n_query_images"] == 9 and res["results"]["2"]["accuracy"]["mean"] == 1.0


def test_errors_exit_2(tmp_path, capsys):
    assert main(["fewshot", "--embeddings", str(tmp_path / "none.npz")]) == 2
    assert main(["fewshot"]) == 2
    assert "DATA" in capsys.readouterr().err
    empty = tmp_path / "empty.npz"
    Embeddings([], np.zeros((0, 8), np.float32), labels=np.zeros(0, np.int64), classes=["a"]).save(empty)
    assert main(["fewshot", "--embeddings", str(empty)]) == 2
    data = write(tmp_path / "d.npz", [3, 3])
    out = tmp_path / "o.json"
    out.write_text("{}")
    assert main(["fewshot", "--embeddings", str(data), "--out", str(out)]) == 2
    assert out.read_text() == "{}"
