"""A training run's own k-NN figure is what `dinolab knn` gives on its exported teacher, with default options.

The run trains at 16 px; before exports recorded their input size, `dinolab knn` fed them 224 px images.
"""

import json

import numpy as np
from PIL import Image

import dinolab
from dinolab.cli import main
from dinolab.data import ImageDataset
from dinolab.train.data import stratified_split

SOURCE = "builtin:digits?size=16"
TINY = ["model.embed_dim=32", "model.depth=2", "model.num_heads=2", f"data.source={SOURCE}",
        "crops.global_crops_size=16", "crops.local_crops_size=8", "crops.local_crops_number=2", "dino.out_dim=64",
        "dino.head_hidden_dim=32", "dino.head_bottleneck_dim=16", "train.batch_size=16", "train.epoch_length=2",
        "train.epochs=1", "train.progress=false", "data.val_fraction=0.2", "data.split_seed=3"]


def write_split(dataset, indices, folder):
    """The images ``indices`` as lossless PNGs in class folders (the pixels the run decoded)."""
    for i in indices:
        path = folder / dataset.classes[dataset.labels[i]] / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(dataset.load(int(i)).permute(1, 2, 0).numpy()).save(path)


def test_in_run_knn_equals_dinolab_knn_on_the_export(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run)]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    in_run = [r for r in records if "knn_top1@10" in r][-1]
    export = run / "teacher_backbone.safetensors"
    assert dinolab.load_model(export).preprocess.image_size == 16

    # the run's split: stratified by class, data.val_fraction of each class held out, seeded by data.split_seed
    dataset = ImageDataset(SOURCE)
    train_idx, val_idx = stratified_split(np.asarray(dataset.labels), 0.2, 3)
    write_split(dataset, train_idx, tmp_path / "train")
    write_split(dataset, val_idx, tmp_path / "val")
    out = tmp_path / "knn.json"
    assert main(["knn", str(export), "--train", str(tmp_path / "train"), "--val", str(tmp_path / "val"),
                 "--k", "10", "20", "--out", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    for k in (10, 20):
        assert results[str(k)]["top1"] == in_run[f"knn_top1@{k}"], k
    # the CLS and mean patch token side by side: the same figure as `dinolab knn --patch-mean`
    joined = tmp_path / "knn_pm.json"
    assert main(["knn", str(export), "--train", str(tmp_path / "train"), "--val", str(tmp_path / "val"),
                 "--k", "10", "20", "--patch-mean", "--out", str(joined)]) == 0
    results = json.loads(joined.read_text())["results"]
    for k in (10, 20):
        assert results[str(k)]["top1"] == in_run[f"knn_top1_patch_mean@{k}"], k
