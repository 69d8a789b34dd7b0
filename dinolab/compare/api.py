"""``dinolab.compare.compare(weights, data, ...)``: load, embed once, split, run the methods, score."""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from .methods import Context
from .runner import CompareResult, Subset, check_split, run_methods, select_methods, stratified_split


def _rows(dataset: Any, emb: Any) -> np.ndarray:
    """Data-set index of each embedded (readable) image."""
    index = {p: i for i, p in enumerate(dataset.paths)}
    return np.array([index[p] for p in emb.paths], dtype=np.int64)


def _test_labels(classes: list[str], test_emb: Any, where: str) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    missing = [c for c in test_emb.classes if c not in index]
    if missing:
        raise DataError(f"{where} has classes the training data lacks: {', '.join(missing[:5])}")
    return np.array([index[c] for c in test_emb.classes], np.int64)[test_emb.labels]


def _zeroshot_names(classes: list[str], given: Sequence[str] | None) -> list[str]:
    from ..text.zeroshot import class_name_from_folder

    if not given:
        return [class_name_from_folder(c) for c in classes]
    if len(given) != len(classes):
        raise ConfigError(f"--classes names {len(given)} classes but the data has {len(classes)} "
                          f"({', '.join(classes[:10])}); give one name per class folder, in that order")
    return list(given)


def compare(weights: str | os.PathLike, data: Any, *, test: Any = None, aligned: str | os.PathLike | None = None,
            classes: Sequence[str] | None = None, methods: Sequence[str] | None = None, test_fraction: float = 0.2,
            seed: int = 0, episodes: int = 20, n_resamples: int = 1000, options: Any = None,
            max_bad_fraction: float | None = 0.1, finetune: dict[str, Any] | None = None) -> CompareResult:
    """Every method on one labelled data set (see :mod:`dinolab.compare.runner`).

    Args:
        weights: the backbone (any format :func:`dinolab.load_model` reads).
        data: labelled images (class folders, ``builtin:...``); split into train / test unless ``test`` is given.
        test: a labelled test set (its classes matched to ``data``'s by name).
        aligned, classes: an aligned model folder for zero-shot, and the prompt names of ``data``'s classes
            (default: the class folder names).
        methods: registered method names (default all that apply).
        test_fraction, seed: the stratified split; seed also drives episodes, hold-outs and bootstrap.
        episodes: few-shot episodes per k. n_resamples: bootstrap resamples.
        options: :class:`~dinolab.eval.options.InferenceOptions` (device, batch size, preprocessing overrides).
        finetune: settings of the fine-tuning rows (:class:`~dinolab.finetune.config.FinetuneConfig` fields, e.g.
            ``{"epochs": 10, "flip": False}``).
    """
    from ..data import ImageDataset
    from ..data.badfiles import warnings_held_back
    from ..eval.features import embed
    from ..eval.options import InferenceOptions

    options = options or InferenceOptions()
    chosen = select_methods(methods, aligned=aligned is not None)
    if episodes < 1:
        raise ConfigError(f"episodes must be at least 1, got {episodes}")
    model = options.load_model(weights)
    preprocess = options.preprocess_for(model, announce="compare")
    dataset = ImageDataset(data, labels=True)
    test_set = ImageDataset(test, labels=True) if test is not None else None
    kw = dict(preprocess=preprocess, max_bad_fraction=max_bad_fraction, limit_name="--max-bad-fraction",
              **options.embed_kwargs())
    start = time.perf_counter()
    with warnings_held_back():
        emb = embed(model, dataset, **kw)
        test_emb = embed(model, test_set, **kw) if test_set is not None else None
    embed_s = time.perf_counter() - start
    names = list(dataset.classes)
    rows = _rows(dataset, emb)
    if test_emb is None:
        tr, te = stratified_split(emb.labels, test_fraction, seed)
        xtr, ytr, xte, yte = emb.cls[tr], emb.labels[tr], emb.cls[te], emb.labels[te]
        train_images, test_images = Subset(dataset, rows[tr]), Subset(dataset, rows[te])
    else:
        xtr, ytr, xte = emb.cls, emb.labels, test_emb.cls
        yte = _test_labels(names, test_emb, str(test))
        train_images, test_images = Subset(dataset, rows), Subset(test_set, _rows(test_set, test_emb))
    check_split(ytr, yte, names)
    ctx = Context(names, ytr, yte, xtr, xte, train_images, test_images, weights=weights, seed=seed, episodes=episodes,
                  options=options)
    ctx.extra["finetune"] = dict(finetune or {})
    if aligned is not None:
        from ..text import load_aligned

        ctx.aligned = load_aligned(aligned, weights=weights, device="cpu")
        ctx.extra["zeroshot_classes"] = _zeroshot_names(names, classes)
    results = run_methods(ctx, chosen, n_resamples=n_resamples, progress=options.progress)
    c = len(names)
    info = {"weights": str(weights), "data": str(data), "test": None if test is None else str(test),
            "test_fraction": None if test is not None else test_fraction, "seed": seed, "episodes": episodes,
            "n_resamples": n_resamples, "embed_s": embed_s, "feature_dim": int(xtr.shape[1]), "preprocess": preprocess.to_dict(),
            "bad": list(emb.bad) + (list(test_emb.bad) if test_emb is not None else [])}
    return CompareResult(names, len(ytr), len(yte), np.bincount(ytr, minlength=c).tolist(),
                         np.bincount(yte, minlength=c).tolist(), results, info)
