"""`--save` on knn / fewshot / linear, `load_predictor` and `dinolab predict` (issue 18 item 2).

The saved classifiers must reproduce the predictions their command evaluated, computed here
independently from `dinolab.embed` and the evaluators of `dinolab.eval`.
"""

import csv

import numpy as np
import pytest
import torch

import dinolab
from dinolab.cli import main
from dinolab.errors import ConfigError, WeightsError
from dinolab.eval.fewshot import nearest_centroid_classify
from dinolab.eval.knn import knn_classify
from dinolab.eval.linear import logistic_regression_probe
from dinolab.predict import load_predictor, predict_images, read_classifier

TRAIN, TEST = "builtin:shapes?n=60&size=16&split=train", "builtin:shapes?n=60&size=16&split=test"
E = ["--image-size", "16", "--device", "cpu", "--precision", "fp32", "--no-progress", "--num-workers", "0"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("pred")
    torch.manual_seed(0)
    model = dinolab.create_model("vit_tiny", patch_size=8, img_size=16, depth=1, embed_dim=32, num_heads=2)
    weights = dinolab.save_model(model, root / "bb")
    load = dinolab.load_model(weights)
    kw = dict(image_size=16, device="cpu", precision="fp32", progress=False)
    return root, str(weights), dinolab.embed(load, TRAIN, **kw), dinolab.embed(load, TEST, **kw)


def _csv(path):
    return list(csv.DictReader(open(path, encoding="utf-8")))


def _labels(rows, classes):
    return np.array([classes.index(r["label"]) for r in rows])


def test_knn_save_then_predict_reproduces_knn(tiny, tmp_path):
    root, weights, tr, te = tiny
    c = tmp_path / "knn.safetensors"
    assert main(["knn", weights, "--train", TRAIN, "--val", TEST, "--k", "5", "--save", str(c), *E]) == 0
    out = tmp_path / "p.csv"
    assert main(["predict", str(c), TEST, "--out", str(out), "--top-k", "3", *E]) == 0
    rows = _csv(out)
    expected = knn_classify(tr.cls, tr.labels, te.cls, k=5, use_faiss=False)[5]["predictions"]
    assert [r["path"] for r in rows] == te.paths
    assert np.array_equal(_labels(rows, tr.classes), expected)
    for r in rows:  # top-k sorted, probabilities of the classes sum to at most 1
        probs = [float(r["prob"]), float(r["prob_2"]), float(r["prob_3"])]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-5 and len({r["label"], r["label_2"],
                                                                                         r["label_3"]}) == 3
    assert [r["true"] for r in rows] == [tr.classes[y] for y in te.labels]
    saved = read_classifier(c)
    assert saved.kind == "knn" and saved.params["k"] == 5 and saved.classes == tr.classes
    assert saved.preprocess["image_size"] == 16 and saved.backbone["fingerprint"]


def test_knn_patch_mean_save_then_predict_reproduces_knn(tiny, tmp_path):
    root, weights, _, _ = tiny
    kw = dict(image_size=16, device="cpu", precision="fp32", progress=False, patch_mean=True)
    model = dinolab.load_model(weights)
    tr, te = dinolab.embed(model, TRAIN, **kw), dinolab.embed(model, TEST, **kw)
    c = tmp_path / "knn.safetensors"
    assert main(["knn", weights, "--train", TRAIN, "--val", TEST, "--k", "5", "--patch-mean", "--save", str(c), *E]) == 0
    out = tmp_path / "p.csv"
    assert main(["predict", str(c), TEST, "--out", str(out), *E]) == 0
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    joined = lambda e: np.concatenate([unit(e.cls), unit(e.patch_mean)], 1)  # noqa: E731
    expected = knn_classify(joined(tr), tr.labels, joined(te), k=5, use_faiss=False)[5]["predictions"]
    assert np.array_equal(_labels(_csv(out), tr.classes), expected)
    saved = read_classifier(c)
    assert saved.feature["patch_mean"] and saved.feature["unit_parts"] and saved.feature["dim"] == 64


def test_prototype_save_then_predict_reproduces_nearest_centroid(tiny, tmp_path):
    root, weights, tr, te = tiny
    c = tmp_path / "proto.safetensors"
    assert main(["fewshot", weights, TRAIN, "--shots", "1", "--episodes", "2", "--save", str(c), *E]) == 0
    p = load_predictor(c)
    pred = predict_images(p, TEST, progress=False, device="cpu", precision="fp32")
    assert np.array_equal(pred.predictions, nearest_centroid_classify(tr.cls, tr.labels, te.cls, 5))
    assert np.allclose(pred.probs.sum(1), 1, atol=1e-5)
    assert main(["fewshot", weights, TRAIN, "--classifier", "knn", "--save", str(tmp_path / "x.safetensors"), *E]) == 2


def test_logreg_save_then_predict_reproduces_the_probe(tiny, tmp_path):
    root, weights, tr, te = tiny
    c = tmp_path / "lin.safetensors"
    assert main(["linear", weights, "--train", TRAIN, "--val", TEST, "--logreg", "--save", str(c), *E]) == 0
    res = logistic_regression_probe(tr.cls, tr.labels, te.cls, te.labels, classes=tr.classes)
    pred = predict_images(load_predictor(c), TEST, progress=False, device="cpu", precision="fp32")
    assert np.array_equal(pred.predictions, res.predictions)


def test_the_backbone_is_checked_and_can_be_given(tiny, tmp_path, capsys):
    root, weights, tr, te = tiny
    npz = tmp_path / "tr.npz"
    tr.save(npz)
    c = tmp_path / "knn.safetensors"
    assert main(["knn", "--train-embeddings", str(npz), "--val-embeddings", str(npz), "--k", "3", "--save", str(c)]) == 0
    assert "will need --weights" in capsys.readouterr().out
    with pytest.raises(WeightsError, match="records no backbone"):
        load_predictor(c)
    assert load_predictor(c, weights=weights).classes == tr.classes
    c2 = tmp_path / "knn2.safetensors"
    assert main(["knn", weights, "--train", TRAIN, "--val", TEST, "--k", "3", "--save", str(c2), *E]) == 0
    torch.manual_seed(5)
    other = dinolab.save_model(dinolab.create_model("vit_tiny", patch_size=8, img_size=16, depth=1, embed_dim=32,
                                                    num_heads=2), tmp_path / "other")
    capsys.readouterr()
    assert main(["predict", str(c2), TEST, "--out", str(tmp_path / "p.csv"), "--weights", str(other), *E]) == 2
    assert "is not the backbone" in capsys.readouterr().err and not (tmp_path / "p.csv").exists()
    with pytest.raises(ConfigError, match="--classes is for an aligned model"):
        load_predictor(c2, classes=["a", "b"])


class _Asymmetric(torch.nn.Module):
    """Probabilities from the left and right halves of the image: a mirror swaps them."""

    classes = ["left", "right"]

    def __init__(self):
        super().__init__()
        from dinolab.models import Preprocess

        self.preprocess = Preprocess(image_size=16, resize="stretch")

    def predict_proba(self, x):
        left, right = x[..., :8].mean((1, 2, 3)), x[..., 8:].mean((1, 2, 3))
        return torch.softmax(torch.stack([left, right], 1) * 3, 1)


def test_flip_tta_averages_the_image_and_its_mirror():
    m = _Asymmetric()
    plain = predict_images(m, TEST, progress=False, device="cpu", precision="fp32")
    flipped = predict_images(m, TEST, tta="flip", progress=False, device="cpu", precision="fp32")
    swapped = plain.probs[:, ::-1]  # the mirror's probabilities: the halves exchanged
    assert np.allclose(flipped.probs, (plain.probs + swapped) / 2, atol=1e-6)
    assert np.allclose(flipped.probs, 0.5, atol=1e-6) and not np.allclose(plain.probs, 0.5, atol=1e-3)


def test_unreadable_images_are_listed_not_fatal(tiny, tmp_path, image_folder, capsys):
    root, weights, tr, te = tiny
    c = tmp_path / "knn.safetensors"
    assert main(["knn", weights, "--train", TRAIN, "--val", TEST, "--k", "3", "--save", str(c), *E]) == 0
    folder = image_folder(classes=None, per_class=4, size=(20, 20))
    (folder / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "p.csv"
    assert main(["predict", str(c), str(folder), "--out", str(out), "--max-bad-fraction", "0.5", *E]) == 0
    assert "broken.jpg" in capsys.readouterr().out
    assert len(_csv(out)) == 4 and "broken.jpg" in (tmp_path / "p.bad_files.log").read_text()


def test_zeroshot_predictor_matches_zeroshot_classify(tmp_path):
    from dinolab.text import align, zeroshot_classify

    torch.manual_seed(0)
    data = "builtin:shapes?n=12&size=16"
    dinolab.save_model(dinolab.create_model("vit_tiny", img_size=16, patch_size=8, depth=1), tmp_path / "bb.safetensors")
    model = align(tmp_path / "bb.safetensors", data, out=tmp_path / "aligned", epochs=1, batch_size=6, image_size=16,
                  embed_dim=16, text_width=32, text_depth=1, device="cpu", precision="fp32", progress=False)
    classes = ["circle", "square", "triangle", "star", "cross"]
    with pytest.raises(ConfigError, match="needs the class names"):
        load_predictor(tmp_path / "aligned")
    p = load_predictor(tmp_path / "aligned", classes=classes)
    pred = predict_images(p, data, progress=False, device="cpu", precision="fp32")
    ref = zeroshot_classify(model, data, classes, device="cpu", precision="fp32", num_workers=0)
    assert np.array_equal(pred.predictions, ref.predictions) and p.classes == classes


def test_a_finetune_folder_without_the_finetune_module_is_named(tmp_path):
    try:
        import dinolab.finetune.classifier  # noqa: F401
        pytest.skip("dinolab.finetune exists; its own tests cover loading")
    except ImportError:
        pass
    (tmp_path / "ft").mkdir()
    (tmp_path / "ft" / "classifier.safetensors").write_bytes(b"")
    with pytest.raises(WeightsError, match="no dinolab.finetune module"):
        load_predictor(tmp_path / "ft")
    with pytest.raises(WeightsError, match="none of"):
        load_predictor(tmp_path)


def test_a_finetune_classifier_is_predicted_through_its_own_predict_proba(tmp_path):
    ft = pytest.importorskip("dinolab.finetune.classifier")
    from dinolab.data import ImageDataset
    from dinolab.models import Preprocess

    torch.manual_seed(0)
    backbone = dinolab.create_model("vit_tiny", patch_size=8, img_size=16, depth=1, embed_dim=32, num_heads=2)
    pp = Preprocess(image_size=16, resize="stretch")
    clf = ft.Classifier(backbone, torch.nn.Linear(32, 5), ["a", "b", "c", "d", "e"], preprocess=pp, temperature=2.0)
    (tmp_path / "ft").mkdir()
    ft.save_classifier(tmp_path / "ft" / "classifier.safetensors", clf)
    out = tmp_path / "p.csv"
    assert main(["predict", str(tmp_path / "ft"), TEST, "--out", str(out), *E[2:]]) == 0
    ds = ImageDataset(TEST)
    x = torch.stack([pp.normalize(pp.resize_image(ds.load(i))[None])[0] for i in range(len(ds))])
    with torch.no_grad():
        expected = clf.eval().predict_proba(x)
    rows = _csv(out)
    assert [r["label"] for r in rows] == [clf.classes[i] for i in expected.argmax(1)]
    assert np.allclose([float(r["prob"]) for r in rows], expected.max(1).values.numpy(), atol=1e-5)
