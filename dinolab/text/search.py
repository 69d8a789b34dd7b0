"""Text-to-image search with an aligned model: rank images by cosine similarity to a text query.

Examples:
    >>> model = load_aligned("aligned/")                                     # doctest: +SKIP
    >>> hits = text_search(model, "a red star", "photos/", top_k=3)          # doctest: +SKIP
    >>> [(h.rank, h.path) for h in hits]                                     # doctest: +SKIP
    [(1, 'photos/0042.png'), (2, 'photos/0007.png'), (3, 'photos/0310.png')]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError
from .aligned import AlignedEmbeddings, AlignedModel, embed_images
from .vocab import check_query, warn_all


@dataclass(frozen=True)
class SearchHit:
    """One result: ``rank`` (1 = best), image ``path``, cosine ``score``, ``index`` in the embeddings."""

    rank: int
    path: str
    score: float
    index: int


def text_search(model: AlignedModel, query: str, images: Any, *, top_k: int = 10, batch_size: int = 64,
                device: str = "auto", precision: str = "auto", num_workers: int = 0,
                progress: bool = True) -> list[SearchHit]:
    """The ``top_k`` images most similar to ``query``, best first (ties keep data-set order).

    Args:
        model: an :class:`AlignedModel`.
        query: the text to search for.
        images: precomputed :class:`AlignedEmbeddings`, or a data set / source that is embedded first.
        top_k: number of results (fewer if there are fewer images).
    """
    if not query.strip():
        raise ConfigError("the search text is empty; pass a description such as --text \"a red star\"")
    if top_k < 1:
        raise ConfigError(f"top_k={top_k} must be at least 1")
    warn_all(check_query(model.tokenizer, query))
    emb = images if isinstance(images, AlignedEmbeddings) else embed_images(
        model, images, batch_size=batch_size, device=device, precision=precision, num_workers=num_workers,
        progress=progress)
    with torch.no_grad():
        q = model.encode_text(query).float().cpu()[0]
    scores = torch.from_numpy(emb.emb).float() @ q
    # A stable sort so that equal scores keep the data-set order.
    order = torch.sort(scores, descending=True, stable=True).indices[:top_k].tolist()
    return [SearchHit(r + 1, emb.paths[i], float(scores[i]), i) for r, i in enumerate(order)]
