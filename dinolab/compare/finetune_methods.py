"""The fine-tuning rows of ``dinolab compare``: :func:`dinolab.finetune` on the training split, its classifier
on the test split, through the same :class:`~dinolab.predict.Predictor` that ``dinolab predict`` uses.

Modes: ``finetune head`` (linear head on frozen CLS + mean patch features), ``finetune last:2`` (the last two
blocks too), ``finetune lora`` (rank-8 adapters, merged) and, only when named in ``methods``, ``finetune full``.
Each runs ``plain`` and ``logit-adj`` (the loss-side logit adjustment of Menon et al. 2021, tau = 1, which
corrects for the training class frequencies). Every other setting is :class:`~dinolab.finetune.config.FinetuneConfig`'s
default (AdamW, warm-up then cosine, crops and flips, early stopping on the balanced accuracy of a stratified
20% of the training split, temperature scaling), overridable through ``Context.extra["finetune"]``
(``dinolab compare --finetune epochs=10 flip=false``). The test split is never seen before scoring.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .methods import Context, Method, register_method

MODES = {"finetune head": "head", "finetune last:2": "last:2", "finetune lora": "lora", "finetune full": "full"}
VARIANTS = {"plain": {}, "logit-adj": {"logit_adjust": "loss"}}


def training_source(images: Any, classes: list[str], folder: Path) -> str:
    """Something :func:`dinolab.finetune` reads for the image subset ``images``: a ``path,label`` CSV when every
    image is a file, else (``builtin:`` images) PNGs written into ``folder/<class>/``."""
    from ..io import atomic_save_text

    labels = [classes[int(y)] for y in images.labels]
    if all(os.path.isfile(p) for p in images.paths):
        import csv
        import io

        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["path", "label"])
        writer.writerows(zip(images.paths, labels))
        atomic_save_text(folder / "train.csv", buf.getvalue())
        return str(folder / "train.csv")
    from PIL import Image

    for i, label in enumerate(labels):
        pixels = images.load(i).permute(1, 2, 0).numpy()  # (H, W, 3) uint8
        (folder / "images" / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / "images" / label / f"{i:06d}.png")
    return str(folder / "images")


def _predict(run_dir: Path, ctx: Context) -> np.ndarray:
    """``(N_test, C)`` probabilities of the fine-tuned classifier, columns in ``ctx.classes`` order."""
    from ..predict import load_predictor, predict_images

    o = ctx.options
    preds = predict_images(load_predictor(run_dir), ctx.test_images, batch_size=o.batch_size, device=o.device,
                           precision=o.precision, num_workers=o.num_workers, progress=False)
    probs = np.full((len(ctx.test_images), ctx.num_classes), 1.0 / ctx.num_classes, np.float32)
    row = {p: i for i, p in enumerate(preds.paths)}
    column = [preds.classes.index(c) for c in ctx.classes if c in preds.classes]
    known = [k for k, c in enumerate(ctx.classes) if c in preds.classes]
    for i, path in enumerate(ctx.test_images.paths):  # an image the classifier could not read stays uniform
        if path in row:
            probs[i, known] = preds.probs[row[path]][column]
    return probs


def _finetune(mode: str) -> Callable[[Context, str], np.ndarray]:
    def run(ctx: Context, variant: str) -> np.ndarray:
        from .. import finetune

        o = ctx.options
        settings = {"device": o.device, "precision": o.precision, "progress": False, "seed": ctx.seed,
                    **VARIANTS[variant], **ctx.extra.get("finetune", {})}
        if o.image_size is not None:
            settings["image_size"] = o.image_size
        with tempfile.TemporaryDirectory(prefix="dinolab-compare-") as tmp:
            source = training_source(ctx.train_images, ctx.classes, Path(tmp))
            result = finetune(ctx.weights, source, Path(tmp) / "run", mode=mode, **settings)
            return _predict(result.out, ctx)

    return run


for _name, _mode in MODES.items():
    register_method(Method(_name, _finetune(_mode), tuple(VARIANTS), needs="images", default=_mode != "full",
                           description=f"dinolab finetune --mode {_mode} on the training split"))
