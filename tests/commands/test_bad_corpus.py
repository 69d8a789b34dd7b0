"""Every kind of bad image, in class folders: `dinolab train`, `embed` and `knn` finish on the good
files and name exactly the bad ones; `train` stops with a clear message only past data.max_bad_fraction.

Readable odd kinds (kept): CMYK, 16-bit, palette with a transparent colour, RGBA, LA, grayscale,
animated GIF (first frame), EXIF-rotated, 1x1, 500x1 and 1200x12 strips (centre-cropped to the
aspect limit, then resized). Unreadable (skipped and named): zero bytes, truncated JPEG and PNG,
text named .jpg, a PNG declaring 100000 x 100000 pixels.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dinolab.cli import main
from dinolab.data.badfiles import LOG_NAME
from dinolab.eval.features import Embeddings

TINY = ["model.arch=vit_tiny", "model.patch_size=8", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
        "crops.global_crops_size=16", "crops.local_crops_size=8", "crops.local_crops_number=2", "dino.out_dim=64",
        "dino.head_hidden_dim=32", "dino.head_bottleneck_dim=16", "train.batch_size=8", "train.epoch_length=3",
        "train.epochs=2", "train.progress=false", "train.device=cpu", "train.precision=fp32",
        "optim.warmup_epochs=1", "teacher.warmup_teacher_temp_epochs=1", "data.num_workers=0",
        "eval.knn_every=0", "eval.knn_k=[3]", "eval.batch_size=16"]
EMBED = ["--image-size", "16", "--batch-size", "16", "--num-workers", "0", "--device", "cpu", "--precision", "fp32"]


def _class_folders(corpus, dest: Path, make_image) -> tuple[list[str], list[str]]:
    """Move the corpus into ``dest/<a|b>/`` (alternating, bad files in both); returns (good, bad) paths."""
    make_image(corpus.root / "strip_1200x12.jpg", (1200, 12), seed=7)
    good = sorted(corpus.good + [str(corpus.root / "strip_1200x12.jpg")])
    moved: dict[str, str] = {}
    for i, path in enumerate(sorted(good + corpus.bad)):
        target = dest / "ab"[i % 2] / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)
        moved[path] = str(target)
    shutil.rmtree(corpus.root)
    return sorted(moved[p] for p in good), sorted(moved[p] for p in corpus.bad)


@pytest.fixture
def splits(bad_image_corpus, make_image, tmp_path):
    """Two class-folder sets (train, val), each 27 readable files and 5 unreadable ones."""
    return {name: _class_folders(bad_image_corpus(n_plain=16), tmp_path / name, make_image)
            for name in ("train", "val")}


def _logged(path: Path) -> list[str]:
    return sorted(line.split("\t")[0] for line in path.read_text().splitlines())


@pytest.mark.slow
def test_train_embed_knn_finish_on_the_good_files_and_name_the_bad_ones(splits, tmp_path, capsys):
    (train_good, train_bad), (val_good, val_bad) = splits["train"], splits["val"]
    train_dir, val_dir, run = tmp_path / "train", tmp_path / "val", tmp_path / "run"

    # train: 6 steps; its k-NN evaluation at the end reads every file of both splits
    assert main(["train", *TINY, f"data.source={train_dir}", "data.max_bad_fraction=0.3", "--out", str(run)]) == 0
    out, err = capsys.readouterr()
    assert f"run directory: {run} (6 steps" in out and "k-NN top-1 @ k=3:" in out
    assert _logged(run / LOG_NAME) == train_bad
    assert f"skipped {len(train_bad)} unreadable files: " in err and f"(full list in {run / LOG_NAME})" in err
    teacher = str(run / "teacher_backbone.safetensors")

    # embed with the trained teacher
    out_npz = tmp_path / "train.npz"
    assert main(["embed", teacher, str(train_dir), "--out", str(out_npz), *EMBED, "--max-bad-fraction", "0.3"]) == 0
    emb = Embeddings.load(out_npz)
    assert sorted(emb.paths) == train_good and sorted(p for p, _ in emb.bad) == train_bad
    assert emb.classes == ["a", "b"] and len(emb.labels) == len(train_good)
    assert _logged(tmp_path / "train.bad_files.log") == train_bad
    assert f"embedded {len(train_good)} of {len(train_good) + len(train_bad)} images" in capsys.readouterr().out

    # knn from both folders: every bad file of each split is named with its reason
    assert main(["knn", teacher, "--train", str(train_dir), "--val", str(val_dir), "--k", "3", *EMBED,
                 "--max-bad-fraction", "0.3"]) == 0
    out = capsys.readouterr().out
    assert f"k-NN on {len(train_good)} training and {len(val_good)} validation images" in out
    assert f"--train {train_dir}: skipped {len(train_bad)} unreadable files" in out
    assert f"--val {val_dir}: skipped {len(val_bad)} unreadable files" in out
    named = sorted(line.split(" (")[0].strip() for line in out.splitlines() if line.startswith("  ") and " (" in line)
    assert named == sorted(train_bad + val_bad)
    assert "decompression bomb" in out and "empty file (0 bytes)" in out


def test_train_stops_clearly_when_bad_files_pass_the_limit(splits, tmp_path, capsys):
    train_bad = splits["train"][1]
    run = tmp_path / "run"
    code = main(["train", *TINY, f"data.source={tmp_path / 'train'}", "data.val_fraction=0",
                 "data.max_bad_fraction=0.1", "--out", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"{len(train_bad)} of 32 files (15.6%) could not be read, above the limit data.max_bad_fraction=0.1" in err
    assert f"the full list is in {run / LOG_NAME}" in err
    assert _logged(run / LOG_NAME) == train_bad  # the log the message points at exists


def test_knn_stops_clearly_when_bad_files_pass_the_limit(splits, tmp_path, capsys):
    import dinolab

    weights = dinolab.save_model(dinolab.create_model("vit_tiny", patch_size=8, img_size=16, depth=2),
                                 tmp_path / "w")
    code = main(["knn", str(weights), "--train", str(tmp_path / "train"), "--val", str(tmp_path / "val"),
                 "--k", "3", *EMBED])  # default --max-bad-fraction 0.1; 5 of 32 are bad
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "5 of 32 files (15.6%) could not be read" in err and "--max-bad-fraction" in err
