"""The k-NN evaluation of a run: top-1 accuracy per k of a backbone on the run's labelled split.

The train split is the memory, the held-out split the queries (see :mod:`dinolab.train.data`);
unreadable files are collected in the run's ``bad_files.log`` rather than warned about one by one.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.badfiles import warnings_held_back
from .build import num_workers
from .config import Config
from .data import RunData


def eval_image_size(config: Config) -> int:
    """The side at which a run embeds images for its k-NN figures: ``eval.image_size``, else the global crop size."""
    return config.eval.image_size or config.crops.global_crops_size


def knn_accuracy(backbone: nn.Module, data: RunData, config: Config, device: torch.device, precision: str,
                 bad_files: dict[str, str] | None = None, preprocess=None,
                 patch_mean_out: dict[int, float] | None = None) -> dict[int, float]:
    """``{k: top-1}`` of the CLS for every ``eval.knn_k``; unreadable files are added to ``bad_files`` (path ->
    reason). ``preprocess``: the normalisation (and resize rule) of the run's exports, so that ``dinolab knn`` on
    an export gives the same figure; its size yields to ``eval.image_size`` / the global crop size.
    ``patch_mean_out``: filled with the same figures on the CLS and mean patch token side by side (``dinolab knn
    --patch-mean``), from the same forward passes."""
    from ..eval.features import embed
    from ..eval.knn import knn_classify

    e = config.eval
    kw = dict(batch_size=e.batch_size, image_size=eval_image_size(config),
              preprocess=preprocess, device=device, precision=precision, num_workers=num_workers(config), progress=False,
              patch_mean=patch_mean_out is not None)
    with warnings_held_back():  # named in the run's bad_files.log and its final summary
        memory, queries = embed(backbone, data.train, **kw), embed(backbone, data.val, **kw)
    if bad_files is not None:
        bad_files.update(memory.bad + queries.bad)
    res = knn_classify(memory.cls, memory.labels, queries.cls, queries.labels, k=e.knn_k,
                       temperature=e.knn_temperature, classes=memory.classes)
    if patch_mean_out is not None:
        joined = knn_classify(memory.cls_with_patch_mean(), memory.labels, queries.cls_with_patch_mean(),
                              queries.labels, k=e.knn_k, temperature=e.knn_temperature, classes=memory.classes)
        patch_mean_out.update({k: float(r["top1"]) for k, r in joined.items()})
    return {k: float(r["top1"]) for k, r in res.items()}
