"""Every command in ``dinolab --help`` meets the adversarial corpus (issue 21 item 2).

Commands that read images run on class folders mixing good images with every unreadable kind of the
``bad_image_corpus`` fixture, plus a directory named like an image and a symlink loop ``sub/up -> ..``.
Commands that read no images get a weights-side attack (a PNG given as weights, a truncated
safetensors file). Each either exits 0 and names the bad files, or exits 2 with one
``dinolab CMD: error:`` line; no exception escapes :func:`dinolab.cli.main`, and a file already in
the output folder survives. A command added to dinolab fails :func:`test_every_command_has_an_attack`
until it gets an entry in :data:`ATTACKS`.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from dinolab.cli import _command_modules, main

EMBED = ["--image-size", "16", "--batch-size", "8", "--device", "cpu", "--precision", "fp32", "--no-progress"]
WORKERS = [*EMBED, "--num-workers", "0"]  # the image loaders without a bad-file limit
LOADER = [*WORKERS, "--max-bad-fraction", "0.9"]
VISUAL = ["--image-size", "16", "--device", "cpu", "--precision", "fp32", "--no-progress"]
TRAIN = ["model.arch=vit_tiny", "model.patch_size=8", "model.embed_dim=32", "model.depth=1", "model.num_heads=2",
         "crops.global_crops_size=16", "crops.local_crops_size=8", "crops.local_crops_number=2", "dino.out_dim=64",
         "dino.head_hidden_dim=32", "dino.head_bottleneck_dim=16", "train.batch_size=8", "train.epoch_length=2",
         "train.epochs=1", "train.progress=false", "train.device=cpu", "train.precision=fp32",
         "optim.warmup_epochs=0", "teacher.warmup_teacher_temp_epochs=0", "data.num_workers=0",
         "eval.knn_every=0", "eval.knn_k=[3]", "eval.batch_size=16", "data.max_bad_fraction=0.9"]
SENTINEL = "keep.txt"


@dataclass
class Attack:
    """What a command is run on: ``data`` class folders (good and bad files mixed), ``images`` every
    file of it including the bad ones, ``bad`` the unreadable ones, ``weights`` a tiny saved model,
    ``png`` / ``truncated`` weights-side attacks, ``out`` an output folder holding :data:`SENTINEL`."""

    data: Path
    images: list[str]
    bad: list[str]
    weights: str
    png: str
    truncated: str
    out: Path


def _pairs(a: Attack) -> str:
    csv = a.out.parent / "pairs.csv"
    csv.write_text("image,caption\n" + "".join(f"{p},a photo number {i}\n" for i, p in enumerate(a.images)),
                   errors="surrogateescape")
    return str(csv)


def _good(a: Attack) -> str:
    """A readable image of the corpus (similarity's IMAGE; the bad files go in as references)."""
    return next(p for p in a.images if p not in a.bad and Path(p).is_file())


def _first_mask(a: Attack) -> str:
    """A two-object palette mask of the size of the first frame propagate reads (any size if that one is bad)."""
    import numpy as np
    from PIL import Image

    from dinolab.data.video import mask_png, open_frames

    first = open_frames(a.data / "a").paths[0]
    try:
        with Image.open(first) as im:
            w, h = im.size
    except Exception:
        w, h = 16, 16
    mask = np.zeros((h, w), np.uint8)
    mask[: h // 2, : w // 2], mask[h // 2:, w // 2:] = 1, 2
    path = a.out.parent / "first_mask.png"
    path.write_bytes(mask_png(mask))
    return str(path)


def _run_dir(a: Attack) -> str:
    """A run directory with one metrics line, so that report gets as far as the truncated --results."""
    run = a.out.parent / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "epoch": 0, "loss": 1.5}\n')
    return str(run)


def _classifier(a: Attack) -> str:
    """A k-NN classifier saved on a built-in set, so that predict reads the corpus as its DATA."""
    path = a.out.parent / "knn.safetensors"
    assert main(["knn", a.weights, "--train", "builtin:shapes?n=10&size=16", "--val", "builtin:shapes?n=10&size=16",
                 "--k", "3", "--save", str(path), *WORKERS]) == 0
    return str(path)


# command -> argv builder; image commands first, then weights-side attacks
ATTACKS: dict[str, Callable[[Attack], list[str]]] = {
    "train": lambda a: ["train", *TRAIN, f"data.source={a.data}", "--out", str(a.out / "run")],
    "embed": lambda a: ["embed", a.weights, str(a.data), "--out", str(a.out / "e.npz"), *LOADER],
    "knn": lambda a: ["knn", a.weights, "--train", str(a.data), "--val", str(a.data), "--k", "3", *LOADER],
    "linear": lambda a: ["linear", a.weights, "--train", str(a.data), "--val", str(a.data), "--epochs", "1",
                         *LOADER],
    "fewshot": lambda a: ["fewshot", a.weights, str(a.data), "--shots", "1", "--episodes", "2", *LOADER],
    "predict": lambda a: ["predict", _classifier(a), str(a.data), "--out", str(a.out / "p.csv"), *LOADER],
    "compare": lambda a: ["compare", a.weights, str(a.data), "--out", str(a.out / "cmp"), "--methods", "knn",
                          "prototype 1-shot", "logreg", "--episodes", "2", "--resamples", "20", *LOADER],
    "attention": lambda a: ["attention", a.weights, *a.images, "--out", str(a.out), *VISUAL],
    "objects": lambda a: ["objects", a.weights, str(a.data), "--out", str(a.out), *VISUAL],
    "pca": lambda a: ["pca", a.weights, *a.images, "--out", str(a.out), *VISUAL],
    "similarity": lambda a: ["similarity", a.weights, _good(a), "--point", "0,0", "--ref", str(a.data), "--out",
                             str(a.out), *VISUAL],
    "segment": lambda a: ["segment", "fit", a.weights, "--images", str(a.data), "--masks", str(a.data), "--out",
                          str(a.out / "head"), *VISUAL],
    "propagate": lambda a: ["propagate", a.weights, str(a.data / "a"), "--mask", _first_mask(a), "--out", str(a.out),
                            *VISUAL],
    "retrieve": lambda a: ["retrieve", a.weights, "--query", str(a.data), "--database", str(a.data), "--ks", "1",
                           *LOADER],
    "finetune": lambda a: ["finetune", a.weights, str(a.data), "epochs=1", "--out", str(a.out / "ft"), *LOADER],
    "dedup": lambda a: ["dedup", str(a.data), "--weights", a.weights, "--out", str(a.out), *WORKERS],
    "curate": lambda a: ["curate", "--pool", str(a.data), "--seeds", str(a.data), "--weights", a.weights,
                         "--k", "2", "--out", str(a.out), *WORKERS],
    "align": lambda a: ["align", "--weights", a.weights, "--pairs", _pairs(a), "--epochs", "1",
                        "--out", str(a.out / "aligned")],
    "zeroshot": lambda a: ["zeroshot", str(a.data), "--aligned", a.png, "--weights", a.weights,
                           "--out", str(a.out / "preds.csv"), *WORKERS],
    "search": lambda a: ["search", str(a.data), "--aligned", a.truncated, "--text", "a cat", "--weights",
                         a.weights, *WORKERS],
    "convert": lambda a: ["convert", a.png, str(a.out / "w.safetensors")],
    "export": lambda a: ["export", a.truncated, "--out", str(a.out / "m.onnx"), "--image-size", "16"],
    "report": lambda a: ["report", _run_dir(a), "--out", str(a.out / "report.html"), "--results", a.truncated],
    "bench": lambda a: ["bench", "runtime", "--quick", "--models", a.png, "--out", str(a.out / "b.json")],
}


# commands given a weights-side attack: the bad input they must name when they exit 0
WEIGHTS_SIDE = {"zeroshot": "png", "search": "truncated", "convert": "png", "export": "truncated",
                "report": "truncated", "bench": "png"}
PARAMS = list(ATTACKS)


def test_every_command_has_an_attack():
    assert sorted(ATTACKS) == sorted(_command_modules())


NON_UTF8_GOOD = os.fsdecode(b"caf\xe9_good.png")  # latin-1 bytes: not UTF-8
NON_UTF8_BAD = os.fsdecode(b"\xff_truncated.jpg")
LONG_GOOD = "l" * 240 + ".png"  # near the 255-byte NAME_MAX of ext4
LONG_BAD = "L" * 240 + ".jpg"
NO_PERMISSION = "no_permission.png"


def _hostile_names(data: Path, make_image, monkeypatch) -> list[str]:
    """More files in the class folders: a 10000x10 strip, names that are not UTF-8 or are 240 characters
    long (one readable, one not, of each), and a file its owner may not read. Returns the unreadable ones."""
    make_image(data / "a" / "strip_10000x10.png", (10000, 10), seed=60)
    make_image(data / "a" / NON_UTF8_GOOD, (20, 20), seed=61)
    make_image(data / "b" / LONG_GOOD, (20, 20), seed=62)
    (data / "b" / NON_UTF8_BAD).write_bytes(b"\xff\xd8\xff\xe0 cut short")
    (data / "a" / LONG_BAD).write_bytes(b"")
    denied = make_image(data / "b" / NO_PERMISSION, (20, 20), seed=63)
    denied.chmod(0)
    if os.geteuid() == 0:  # root reads any file: the decoder is made to meet the error a user would
        from PIL import Image

        real_open = Image.open

        def open_as_user(fp, *args, **kwargs):
            if isinstance(fp, (str, os.PathLike)) and Path(fp).name == NO_PERMISSION:
                raise PermissionError(13, "Permission denied", str(fp))
            return real_open(fp, *args, **kwargs)

        monkeypatch.setattr(Image, "open", open_as_user)
    return [str(data / "b" / NON_UTF8_BAD), str(data / "a" / LONG_BAD), str(denied)]


@pytest.fixture
def attack(bad_image_corpus, make_image, tmp_path, monkeypatch) -> Attack:
    import dinolab

    corpus = bad_image_corpus(n_plain=6)
    data = tmp_path / "data"
    for i, path in enumerate(sorted(corpus.good + corpus.bad)):
        target = data / "ab"[i % 2] / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)
    shutil.rmtree(corpus.root)
    (data / "a" / "folder.jpg").mkdir()  # a directory named like an image
    (data / "b" / "sub").mkdir()
    (data / "b" / "sub" / "up").symlink_to("..")  # a symlink loop
    bad = sorted(str(data / "ab"[i % 2] / Path(p).name) for i, p in enumerate(sorted(corpus.good + corpus.bad))
                 if p in corpus.bad)
    bad += _hostile_names(data, make_image, monkeypatch)
    images = sorted(str(p) for p in data.glob("*/*.*"))
    weights = dinolab.save_model(dinolab.create_model("vit_tiny", patch_size=8, img_size=16, depth=1),
                                 tmp_path / "tiny")
    png = make_image(tmp_path / "weights.png", (16, 16))
    full = Path(weights) if Path(weights).is_file() else next(Path(weights).glob("*.safetensors"))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    out = tmp_path / "out"
    out.mkdir()
    (out / SENTINEL).write_text("the user's file\n")
    return Attack(data, images, bad, str(weights), str(png), str(truncated), out)


@pytest.fixture(scope="module")
def aligned_model(tmp_path_factory) -> tuple[str, str]:
    """A real (tiny) aligned model and its backbone, for the image side of zeroshot and search."""
    import dinolab

    root = tmp_path_factory.mktemp("aligned")
    weights = dinolab.save_model(dinolab.create_model("vit_tiny", patch_size=8, img_size=16, depth=1), root / "w")
    argv = ["align", "--weights", str(weights), "--pairs", "builtin:shapes?n=8&size=16", "--epochs", "1",
            "--out", str(root / "aligned"), "--image-size", "16", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    return str(root / "aligned"), str(weights)


# second attacks on commands whose first one stops early: the image side of zeroshot / search (a real
# aligned model) and align with a bad-file limit that lets it skip the corpus' bad images and train
IMAGE_SIDE: dict[str, Callable[[Attack, tuple[str, str]], list[str]]] = {
    "zeroshot": lambda a, m: ["zeroshot", str(a.data), "--aligned", m[0], "--weights", m[1],
                              "--out", str(a.out / "preds.csv"), *WORKERS],
    "search": lambda a, m: ["search", str(a.data), "--aligned", m[0], "--text", "a cat", "--weights", m[1],
                            *WORKERS],
    "align": lambda a, m: ["align", "--weights", a.weights, "--pairs", _pairs(a), "--epochs", "1",
                           "--max-bad-fraction", "0.9", "--out", str(a.out / "aligned"), *VISUAL],
}


@pytest.mark.parametrize("command", list(IMAGE_SIDE))
def test_image_side_of_commands_that_stopped_at_the_weights(command, attack, aligned_model):
    _check_survives(command, IMAGE_SIDE[command](attack, aligned_model), attack, attack.bad)


@pytest.mark.parametrize("command", PARAMS)
def test_command_survives_the_corpus(command, attack):
    named = [getattr(attack, WEIGHTS_SIDE[command])] if command in WEIGHTS_SIDE else attack.bad
    _check_survives(command, ATTACKS[command](attack), attack, named)


def _check_survives(command: str, argv: list[str], attack: Attack, named: list[str]) -> None:
    """``argv`` exits 0 naming every file of ``named``, or 2 with one error line; no traceback, the
    user's file in the output folder kept."""
    out, err = io.BytesIO(), io.BytesIO()
    # the console script prints names that are not UTF-8 as their own bytes (dinolab.cli.entry)
    stdout = io.TextIOWrapper(out, encoding="utf-8", errors="surrogateescape", write_through=True)
    stderr = io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace", write_through=True)
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)  # an exception here is a traceback the user would see
    said = out.getvalue() + err.getvalue()
    err_text = err.getvalue().decode("utf-8", "replace")
    assert b"Traceback" not in said
    assert (attack.out / SENTINEL).read_text() == "the user's file\n"
    if code == 2:
        errors = [line for line in err_text.splitlines() if line.startswith(f"dinolab {command}: error:")]
        assert len(errors) == 1, err_text
    else:
        assert code == 0, said.decode("utf-8", "replace")
        logs = b"".join(p.read_bytes() for p in attack.out.rglob("*.log"))
        for path in named:
            name = os.fsencode(Path(path).name)
            assert name in said + logs or repr(Path(path).name).encode() in said + logs, f"{path} not named"
