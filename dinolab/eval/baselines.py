"""Baselines a learned feature has to beat: k-NN on the raw pixels themselves.

:func:`raw_pixel_knn` runs the weighted k-NN of :mod:`.knn` on images as pixels: each image goes
through the same evaluation pipeline as a model's input (:func:`~dinolab.eval.features.embed`:
shorter side to ``image_size * 256/224``, bicubic, centre crop ``image_size``), is scaled to [0, 1],
flattened to ``3 * image_size**2`` values and L2-normalised (cosine similarity). Without ImageNet
normalisation: on images mostly of one colour (ink on paper) the per-channel shift only adds a
near-constant vector to every image, which blurs the cosine; [0, 1] pixels are the plain baseline.

Examples:
    >>> res = raw_pixel_knn("builtin:shapes?n=40&size=32", "builtin:shapes?n=40&size=32&seed=1",
    ...                     image_size=16, k=(5,))
    >>> 0.0 <= res[5] <= 1.0
    True
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..data.augment import IMAGENET_MEAN, IMAGENET_STD
from .features import Embeddings, embed
from .knn import knn_classify


class RawPixels(nn.Module):
    """A stand-in "backbone" whose CLS feature is the input image's pixels, for :func:`embed`.

    ``get_intermediate_layers(x)`` with ``x`` ``(B, 3, H, W)`` ImageNet-normalised (what :func:`embed`
    feeds a model) returns ``[(patches (B, 0, 3HW), cls (B, 3HW))]``, ``cls`` the [0, 1] pixels flattened.
    """

    depth = 1

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def get_intermediate_layers(self, x: torch.Tensor, n: int = 1, return_class_token: bool = True
                                ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        pixels = (x.float() * self.std + self.mean).flatten(1)
        return [(pixels.new_zeros(len(x), 0, pixels.shape[1]), pixels)] * n


def raw_pixel_embeddings(data: Any, image_size: int, **kw: Any) -> Embeddings:
    """``Embeddings`` whose ``cls`` is ``(N, 3 * image_size**2)`` [0, 1] pixels (``kw``: :func:`embed`'s)."""
    kw = {"progress": False, "precision": "fp32", "batch_size": 64, **kw}
    return embed(RawPixels(), data, image_size=image_size, micro_batch=kw["batch_size"], **kw)


def raw_pixel_knn(memory: Any, queries: Any, image_size: int, k: int | Sequence[int] = (20,),
                  temperature: float = 0.07, **kw: Any) -> dict[int, float]:
    """Top-1 accuracy per ``k`` of the weighted k-NN on raw pixels, ``memory`` images as references.

    Args:
        memory, queries: labelled data sets (or sources for one, e.g. ``builtin:digits``).
        image_size: side the images are resized to, the model's input size for a fair comparison.
        k, temperature: as in :func:`~dinolab.eval.knn.knn_classify`.
        kw: passed to :func:`embed` (``device``, ``num_workers``, ...).
    """
    m, q = raw_pixel_embeddings(memory, image_size, **kw), raw_pixel_embeddings(queries, image_size, **kw)
    res = knn_classify(torch.from_numpy(m.cls), m.labels, torch.from_numpy(q.cls), q.labels,
                       k=k, temperature=temperature, classes=m.classes)
    return {kk: float(r["top1"]) for kk, r in res.items()}
