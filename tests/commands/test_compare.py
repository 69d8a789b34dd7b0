"""`dinolab compare` and `dinolab.compare` (issue 18 item 3): split, methods registry, scores, outputs."""

import json

import numpy as np
import pytest
import torch

import dinolab
from dinolab.cli import main
from dinolab.compare import METHODS, Method, compare, register_method, score, stratified_split
from dinolab.eval.knn import knn_classify
from dinolab.eval.metrics import classification_report
from dinolab.eval.options import InferenceOptions
from dinolab.predict.heads import knn_proba, linear_proba

DATA = "builtin:shapes?n=60&size=16&imbalance=4"
TEST = "builtin:shapes?n=60&size=16&imbalance=4&split=test"
E = ["--image-size", "16", "--device", "cpu", "--precision", "fp32", "--no-progress", "--num-workers", "0"]
OPTS = InferenceOptions(image_size=16, device="cpu", precision="fp32", progress=False, num_workers=0)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = dinolab.create_model("vit_tiny", patch_size=8, img_size=16, depth=1, embed_dim=32, num_heads=2)
    return str(dinolab.save_model(model, tmp_path_factory.mktemp("cmp") / "bb"))


def test_compare_command_writes_the_table_json_and_page(weights, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", weights, DATA, "--test", TEST, "--out", str(out), "--methods", "knn", "prototype 5-shot",
            "logreg", "--resamples", "100", "--episodes", "3", *E]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    d = json.loads((out / "results.json").read_text())
    names = [r["name"] for r in d["results"]]
    assert names == ["knn", "knn +balanced", "prototype 5-shot", "logreg", "logreg +balanced", "logreg +logit-adj"]
    assert all(n in printed for n in names) and "worst class %" in printed
    # 12 per class, floor(2.4) = 2 held out, n_max = 10: 10, 10 * 4**-0.25 = 7.07, 5, 3.54, 2.5
    assert d["train_counts"] == [10, 7, 5, 3, 2] and d["test_counts"] == [2] * 5
    # the k-NN row against the evaluator on the same features
    model = dinolab.load_model(weights)
    kw = dict(image_size=16, device="cpu", precision="fp32", progress=False)
    tr, te = dinolab.embed(model, DATA, **kw), dinolab.embed(model, TEST, **kw)
    pred = knn_classify(tr.cls, tr.labels, te.cls, k=20, use_faiss=False)[20]["predictions"]
    rep = classification_report(te.labels, pred, tr.classes)
    knn = d["results"][0]
    assert knn["metrics"]["accuracy"]["value"] == pytest.approx(rep["accuracy"])
    assert knn["metrics"]["worst_class_recall"]["value"] == pytest.approx(rep["worst_class_recall"])
    for r in d["results"]:
        assert [sum(row) for row in r["confusion"]] == [c * (r["episodes"] or 1) for c in d["test_counts"]]
        for m in r["metrics"].values():
            assert 0 <= m["low"] <= m["high"] <= 1
    page = (out / "compare.html").read_text()
    assert "per-class recall" in page and page.count("class=confusion") == 6 and "<script" not in page
    assert main(argv) == 2 and "already exists" in capsys.readouterr().err  # nothing overwritten without --force


def test_stratified_split_by_class():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 2)
    tr, te = stratified_split(labels, 0.2, seed=3)
    assert np.bincount(labels[te]).tolist() == [2, 1, 1]  # round(0.2 n), at least one, never the whole class
    assert not set(tr) & set(te) and sorted([*tr, *te]) == list(range(17))
    assert np.array_equal(stratified_split(labels, 0.2, seed=3)[1], te)


def test_a_registered_method_gets_the_images_and_is_scored(weights):
    seen = {}

    def uniform(ctx, variant):
        seen["n"], seen["variant"] = len(ctx.test_images), variant
        seen["first"] = ctx.test_images.load(0).shape
        p = np.full((len(ctx.test_labels), ctx.num_classes), 1.0 / ctx.num_classes)
        p[:, 0] += 1e-3  # always class 0
        return p / p.sum(1, keepdims=True)

    register_method(Method("always-first", uniform, ("plain", "other"), needs="images"))
    try:
        res = compare(weights, DATA, methods=["always-first"], options=OPTS, n_resamples=50)
    finally:
        del METHODS["always-first"]
    assert seen["n"] == res.n_test and seen["variant"] == "other" and seen["first"][0] == 3
    r = res.results[0]
    assert r.metrics["balanced_accuracy"]["value"] == pytest.approx(1 / 5)
    assert r.metrics["worst_class_recall"]["value"] == 0.0
    assert r.metrics["accuracy"]["value"] == pytest.approx(res.test_counts[0] / res.n_test)


def test_episode_scores_are_the_mean_over_episodes():
    y = np.array([0, 0, 1, 1])
    right = np.eye(2)[y] * 0.8 + 0.1
    wrong = np.eye(2)[1 - y] * 0.8 + 0.1
    r = score("x", "x", "plain", [right, wrong], y, ["a", "b"], 0.0, n_resamples=100)
    assert r.metrics["accuracy"]["value"] == pytest.approx(0.5) and r.episodes == 2
    assert r.metrics["accuracy"]["low"] == 0.0 and r.metrics["accuracy"]["high"] == 1.0
    assert r.confusion == [[2, 2], [2, 2]]


def test_class_frequency_normalised_votes_by_hand():
    ref = torch.tensor([[1.0, 0.0]] * 3 + [[0.9, 0.1]])
    labels = torch.tensor([0, 0, 0, 1])
    q = torch.tensor([[0.95, 0.05]])
    cos = torch.nn.functional.normalize(ref, dim=1) @ torch.nn.functional.normalize(q, dim=1).T
    w = torch.exp((cos[:, 0] - cos.max()) / 0.07)
    plain = torch.tensor([w[:3].sum(), w[3]])
    balanced = plain / torch.tensor([3.0, 1.0])
    got = knn_proba(q, ref, labels, k=4, num_classes=2)
    got_b = knn_proba(q, ref, labels, k=4, num_classes=2, class_counts=torch.tensor([3, 1]))
    assert torch.allclose(got[0], plain / plain.sum(), atol=1e-6)
    assert torch.allclose(got_b[0], balanced / balanced.sum(), atol=1e-6)


def test_logit_adjustment_subtracts_the_log_prior():
    x, w, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.zeros(2)
    prior = torch.tensor([0.9, 0.1])
    got = linear_proba(x, w, b, prior.log())
    logits = torch.tensor([1.0 - float(np.log(0.9)), 2.0 - float(np.log(0.1))])
    assert torch.allclose(got[0], torch.softmax(logits, 0), atol=1e-6)


def test_report_renders_compare_results(weights, tmp_path):
    from dinolab.eval.report import build_report

    out = tmp_path / "cmp"
    assert main(["compare", weights, DATA, "--out", str(out), "--methods", "knn", "--resamples", "20", *E]) == 0
    page = build_report(out)
    assert "class=confusion" in page and "knn +balanced" in page


def test_unknown_methods_and_missing_aligned_are_named(weights, tmp_path, capsys):
    assert main(["compare", weights, DATA, "--out", str(tmp_path / "c"), "--methods", "nope", *E]) == 2
    assert "unknown method(s) 'nope'" in capsys.readouterr().err
    assert main(["compare", weights, DATA, "--out", str(tmp_path / "c"), "--methods", "zeroshot", *E]) == 2
    assert "needs an aligned model" in capsys.readouterr().err


def test_zeroshot_row_matches_zeroshot_classify_on_the_test_split(tmp_path, capsys):
    from dinolab.data.builtin import load_builtin
    from dinolab.text import align, zeroshot_classify

    torch.manual_seed(0)
    bb = tmp_path / "bb.safetensors"
    dinolab.save_model(dinolab.create_model("vit_tiny", img_size=16, patch_size=8, depth=1), bb)
    data = "builtin:shapes?n=30&size=16"
    model = align(bb, data, out=tmp_path / "aligned", epochs=1, batch_size=6, image_size=16, embed_dim=16,
                  text_width=32, text_depth=1, device="cpu", precision="fp32", progress=False)
    res = compare(bb, data, aligned=tmp_path / "aligned", methods=["zeroshot"], options=OPTS, n_resamples=20)
    _, te = stratified_split(load_builtin(data).labels, 0.2, seed=0)
    ref = zeroshot_classify(model, data, ["circle", "square", "triangle", "star", "cross"], device="cpu",
                            precision="fp32", num_workers=0)
    expected = classification_report(ref.labels[te], ref.predictions[te], 5)
    assert res.results[0].name == "zeroshot"
    assert res.results[0].metrics["balanced_accuracy"]["value"] == pytest.approx(expected["balanced_accuracy"])
    out = tmp_path / "c"
    assert main(["compare", str(bb), data, "--aligned", str(tmp_path / "aligned"), "--classes", "a,b", "--out",
                 str(out), "--methods", "zeroshot", *E]) == 2
    assert "one name per class folder" in capsys.readouterr().err


def test_finetune_rows_train_on_the_training_split_and_score_the_test_split(weights, tmp_path):
    """The fine-tuning rows against an independent run: the training images written as class folders by hand,
    `dinolab.finetune` on them with the same settings, its classifier read by `load_predictor` on the test set."""
    from PIL import Image

    from dinolab.data.builtin import load_builtin
    from dinolab.predict import load_predictor, predict_images

    settings = {"epochs": 2, "crop": False, "flip": False}
    res = compare(weights, DATA, test=TEST, methods=["finetune head"], options=OPTS, n_resamples=20, finetune=settings)
    rows = {r.name: r for r in res.results}
    assert list(rows) == ["finetune head", "finetune head +logit-adj"]

    train = load_builtin(DATA)
    for i, (img, y) in enumerate(zip(train.images, train.labels)):
        (tmp_path / "train" / train.classes[y]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.transpose(1, 2, 0)).save(tmp_path / "train" / train.classes[y] / f"{i:06d}.png")
    run = dinolab.finetune(weights, str(tmp_path / "train"), tmp_path / "ft", mode="head", device="cpu", precision="fp32",
                           progress=False, seed=0, batch_size=32, image_size=16, **settings)
    preds = predict_images(load_predictor(run.out), TEST, device="cpu", precision="fp32", progress=False)
    test = load_builtin(TEST)
    truth = [test.classes[y] for y in test.labels]
    predicted = [preds.classes[k] for k in preds.predictions]
    rep = classification_report(np.array([res.classes.index(c) for c in truth]),
                                np.array([res.classes.index(c) for c in predicted]), res.classes)
    plain = rows["finetune head"].metrics
    assert plain["accuracy"]["value"] == pytest.approx(rep["accuracy"])
    assert plain["balanced_accuracy"]["value"] == pytest.approx(rep["balanced_accuracy"])


def test_full_fine_tuning_runs_only_when_named():
    from dinolab.compare.runner import select_methods

    default = [m.name for m in select_methods(None, aligned=False)]
    assert {"finetune head", "finetune last:2", "finetune lora"} <= set(default)
    assert "finetune full" not in default
    assert [m.name for m in select_methods(["finetune full"], aligned=False)] == ["finetune full"]


def test_unknown_finetune_setting_is_one_clear_error(weights, tmp_path, capsys):
    argv = ["compare", weights, DATA, "--out", str(tmp_path / "c"), "--methods", "knn", "--finetune", "epochz=3", *E]
    assert main(argv) == 2
    assert "epochz" in capsys.readouterr().err
