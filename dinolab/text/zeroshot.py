"""Zero-shot classification by class names with an aligned model.

Each class is described by prompts made from ``templates`` (``"a photo of a {}."`` ...); the
class embedding is the mean of the L2-normalised prompt embeddings, normalised again (CLIP's
prompt ensembling). An image is assigned the class whose embedding has the highest cosine
similarity with the image's embedding.

Examples:
    >>> model = load_aligned("aligned/")                                       # doctest: +SKIP
    >>> res = zeroshot_classify(model, "builtin:shapes?n=100", ["circle", "square", "star"])  # doctest: +SKIP
    >>> res.predicted_classes[:2], res.accuracy                                # doctest: +SKIP
    (['circle', 'square'], 0.93)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .aligned import AlignedEmbeddings, AlignedModel, embed_images
from .vocab import check_class_names, warn_all

DEFAULT_TEMPLATES = ("a {}.", "a photo of a {}.", "a picture of a {}.", "an image of a {}.")


def class_embeddings(model: AlignedModel, classes: Sequence[str],
                     templates: Sequence[str] = DEFAULT_TEMPLATES) -> torch.Tensor:
    """``(C, E)`` L2-normalised class embeddings: normalised mean of the normalised prompt embeddings.

    Raises ConfigError for a class name with no word in the model's caption vocabulary (see
    :mod:`dinolab.text.vocab`); warns :class:`~dinolab.text.vocab.UnknownWordsWarning` when some words are unknown.
    """
    if not classes:
        raise ConfigError("no class names given; pass at least two, e.g. --classes \"cat,dog\"")
    for t in templates:
        if "{}" not in t:
            raise ConfigError(f"prompt template {t!r} has no '{{}}' where the class name goes, e.g. 'a photo of a {{}}.'")
    warn_all(check_class_names(model.tokenizer, classes, templates))
    prompts = [t.format(c) for c in classes for t in templates]
    with torch.no_grad():
        emb = model.encode_text(prompts).float().reshape(len(classes), len(templates), -1)
    return F.normalize(emb.mean(dim=1), dim=-1)


@dataclass
class ZeroShotResult:
    """Predictions for one data set.

    Attributes:
        paths: image paths (N).
        classes: the class names predicted among.
        scores: ``(N, C)`` float32 cosine similarities image-class.
        predictions: ``(N,)`` int64 index into ``classes``.
        labels: ``(N,)`` int64 true class index into ``classes`` (-1 for an image whose true class is not
            among ``classes``), or None when the data has no labels.
        bad: ``(path, reason)`` of unreadable files.
    """

    paths: list[str]
    classes: list[str]
    scores: np.ndarray
    predictions: np.ndarray
    labels: np.ndarray | None = None
    bad: list[tuple[str, str]] = field(default_factory=list)

    @property
    def predicted_classes(self) -> list[str]:
        return [self.classes[i] for i in self.predictions]

    @property
    def accuracy(self) -> float | None:
        """Share of correct predictions among the images whose true class is one of ``classes`` (None if none)."""
        if self.labels is None or not (self.labels >= 0).any():
            return None
        known = self.labels >= 0
        return float((self.predictions[known] == self.labels[known]).mean())

    @property
    def chance(self) -> float:
        return 1.0 / len(self.classes)


def match_labels(data_classes: Sequence[str] | None, data_labels: np.ndarray | None,
                 classes: Sequence[str]) -> np.ndarray | None:
    """Map the data's labels onto ``classes`` by name (case, ``_`` and ``-`` ignored); -1 where absent."""
    if data_classes is None or data_labels is None:
        return None
    key = {_name_key(c): i for i, c in enumerate(classes)}
    to_new = np.array([key.get(_name_key(c), -1) for c in data_classes], dtype=np.int64)
    return to_new[np.asarray(data_labels, np.int64)]


def class_name_from_folder(name: str) -> str:
    """A class folder name as words for a prompt: ``"golden_retriever"`` -> ``"golden retriever"``."""
    return " ".join(name.replace("_", " ").replace("-", " ").split())


def _name_key(name: str) -> str:
    return class_name_from_folder(name).lower()


def zeroshot_classify(model: AlignedModel, images: Any, classes: Sequence[str], *,
                      templates: Sequence[str] = DEFAULT_TEMPLATES, batch_size: int = 64, device: str = "auto",
                      precision: str = "auto", num_workers: int = 0, progress: bool = True) -> ZeroShotResult:
    """Classify ``images`` among ``classes`` by name.

    Args:
        model: an :class:`AlignedModel` (see :func:`dinolab.text.load_aligned`).
        images: a data set or source (folder, class folders, ``.txt`` list, ``builtin:...``), or
            precomputed :class:`AlignedEmbeddings`.
        classes: class names (at least two), used verbatim in the prompts.
        templates: prompt templates with ``{}`` for the class name; their embeddings are averaged.

    Returns:
        :class:`ZeroShotResult`; its ``labels`` (and so ``accuracy``) come from the data's own class
        names when it has them, matched to ``classes`` by name.
    """
    if len(classes) < 2:
        raise ConfigError(f"zero-shot classification needs at least two classes, got {list(classes)}")
    text = class_embeddings(model, classes, templates)  # first: refuses unknown class names before any image work
    emb = images if isinstance(images, AlignedEmbeddings) else embed_images(
        model, images, batch_size=batch_size, device=device, precision=precision, num_workers=num_workers,
        progress=progress)
    scores = torch.from_numpy(emb.emb).to(text.device).float() @ text.T
    return ZeroShotResult(emb.paths, list(classes), scores.cpu().numpy(), scores.argmax(1).cpu().numpy(),
                          match_labels(emb.classes, emb.labels, classes), emb.bad)
