"""Image retrieval and copy detection with frozen features.

:func:`retrieval_metrics` ranks a database for each query by cosine similarity and scores the
ranking:

- AP is the exact (non-interpolated) average precision: the mean, over the query's positives, of the
  precision at the rank of each positive; mAP averages it over queries that have positives. It equals
  scikit-learn's ``average_precision_score`` on the similarities when there are no tied scores
  (ties are ranked in database order here);
- recall@k is the share of queries with at least one positive among the first k results (the
  deep-metric-learning / copy-detection convention);
- precision@k is the mean share of positives among the first k results (revisitop's mP@k).

Copy detection follows DINO v1's Copydays evaluation (``eval_copy_detection.py``): the descriptor
of an image is the final-norm CLS token concatenated with GeM pooling (p = 4) of the final-norm
patch tokens, images are resized to a square, and descriptors are compared by cosine (L2-normalised).
The optional PCA whitening of the paper (learned on 20k extra images) is not applied. Since
Copydays is not redistributable, :func:`copy_detection_eval` builds the benchmark from any images:
each image yields edited copies (strong crops, JPEG, colour changes, blur, overlays and all of them
at once) that are the queries, and the originals (plus optional distractor images) are the database.

Examples:
    >>> q, db = torch.randn(4, 8), torch.randn(20, 8)
    >>> m = retrieval_metrics(q, db, query_labels=[0, 1, 2, 3], db_labels=torch.arange(20) % 5)
    >>> sorted(m["recall@k"])
    [1, 5, 10]
"""

from __future__ import annotations

import io
import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data import augment
from ..device import autocast, resolve_device, resolve_precision
from ..errors import ConfigError, DataError
from .knn import as_feature_tensor, default_chunk_size
from .microbatch import in_micro_batches, micro_batch_size
from .viz import normalize, resize_image

COPY_KINDS = ("crop", "jpeg", "colour", "blur", "overlay", "strong")


def average_precision(relevant_in_rank_order, n_positives: int | None = None) -> float:
    """Exact AP of one ranking: ``(1/P) Σ_{ranks r of positives} precision@r``.

    Args:
        relevant_in_rank_order: bools, the relevance of the results from best to worst.
        n_positives: P, if some positives are missing from the ranking (they then count as never
            retrieved); default the number of True values. NaN when P is 0.
    """
    rel = np.asarray(relevant_in_rank_order, dtype=bool)
    p = int(rel.sum()) if n_positives is None else int(n_positives)
    if p == 0:
        return math.nan
    ranks = np.flatnonzero(rel) + 1
    return float(np.sum(np.arange(1, len(ranks) + 1) / ranks) / p)


def _positives_chunk(s: int, e: int, n_db: int, query_labels, db_labels, positives) -> torch.Tensor:
    if positives is None:
        return query_labels[s:e, None] == db_labels[None, :]
    if isinstance(positives, torch.Tensor):
        return positives[s:e]
    rel = torch.zeros(e - s, n_db, dtype=torch.bool)
    for i, pos in enumerate(positives[s:e]):
        rel[i, torch.as_tensor(list(pos), dtype=torch.long)] = True
    return rel


def retrieval_metrics(query_feats, db_feats, query_labels=None, db_labels=None, *,
                      positives: Sequence[Sequence[int]] | np.ndarray | None = None, ks: Sequence[int] = (1, 5, 10),
                      exclude_self: bool = False, top: int = 0, chunk_size: int | None = None,
                      device: str | torch.device = "cpu") -> dict[str, Any]:
    """Rank the database for every query by cosine similarity; mAP, recall@k, precision@k.

    Positives are either database items with the query's label (``query_labels`` (Q,) and
    ``db_labels`` (N,), any integers; a label that never matches, such as -1, marks a distractor), or
    given per query by ``positives``: a (Q, N) bool array or one list of database indices per query.

    Args:
        query_feats: ``(Q, D)``; db_feats: ``(N, D)``.
        ks: cut-offs for recall@k / precision@k (clamped to N).
        exclude_self: the query set is the database (Q = N); query i skips database item i.
        top: also return the indices of the first ``top`` results of every query.
        chunk_size: queries ranked at once (default: about 16M similarities per chunk).

    Returns:
        dict with ``mAP``, ``recall@k`` and ``precision@k`` (``{k: value}``, over queries with positives),
        ``ap`` ((Q,) float, NaN without positives), ``first_positive`` ((Q,) 1-based rank of the first
        positive, 0 without), ``n_queries``, ``n_without_positives`` and, with ``top``, ``neighbours`` (Q, top).
    """
    q = F.normalize(as_feature_tensor(query_feats, "query features"), dim=1)
    db = F.normalize(as_feature_tensor(db_feats, "database features"), dim=1)
    if q.shape[1] != db.shape[1]:
        raise DataError(f"query and database features differ in width ({q.shape[1]} vs {db.shape[1]}); "
                        "describe both with the same model and options")
    n_q, n_db = q.shape[0], db.shape[0]
    if (positives is None) == (query_labels is None or db_labels is None):
        raise ConfigError("give either query_labels and db_labels, or positives (not both)")
    if positives is None:
        query_labels = torch.as_tensor(np.asarray(query_labels)).long()
        db_labels = torch.as_tensor(np.asarray(db_labels)).long()
        if query_labels.shape != (n_q,) or db_labels.shape != (n_db,):
            raise DataError(f"need one label per query ({n_q}) and per database item ({n_db})")
    elif isinstance(positives, (np.ndarray, torch.Tensor)):
        positives = torch.as_tensor(np.asarray(positives)).bool()
        if positives.shape != (n_q, n_db):
            raise DataError(f"positives must be a ({n_q}, {n_db}) bool array, got {tuple(positives.shape)}")
    elif len(positives) != n_q:
        raise DataError(f"positives must list the positives of each of the {n_q} queries")
    if exclude_self and n_q != n_db:
        raise ConfigError("exclude_self needs the query set to be the database (same number of items)")
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 1:
        raise ConfigError(f"ks must be positive integers, got {ks}")
    dev = resolve_device(device)
    chunk = chunk_size or default_chunk_size(n_db)
    ap = torch.full((n_q,), math.nan, dtype=torch.float64)
    first = torch.zeros(n_q, dtype=torch.long)
    prec_at = {k: torch.zeros(n_q, dtype=torch.float64) for k in ks}
    neighbours = torch.zeros(n_q, min(top, n_db), dtype=torch.long)
    db_d = db.to(dev)
    ranks = torch.arange(1, n_db + 1, dtype=torch.float64)
    for s in range(0, n_q, chunk):
        e = min(s + chunk, n_q)
        sims = (q[s:e].to(dev) @ db_d.T).float().cpu()
        rel = _positives_chunk(s, e, n_db, query_labels, db_labels, positives).clone()
        if exclude_self:
            rows = torch.arange(e - s)
            sims[rows, rows + s] = -math.inf  # ranked last and never relevant: AP and P@k (k < N) unchanged
            rel[rows, rows + s] = False
        order = torch.sort(sims, dim=1, descending=True, stable=True).indices
        rel_sorted = rel.gather(1, order).double()
        n_pos = rel_sorted.sum(1)
        hits = rel_sorted.cumsum(1)
        ap[s:e] = torch.where(n_pos > 0, (hits / ranks * rel_sorted).sum(1) / n_pos.clamp_min(1), math.nan)
        first[s:e] = torch.where(n_pos > 0, rel_sorted.argmax(1) + 1, 0)
        for k in ks:
            kk = min(k, n_db - int(exclude_self))
            prec_at[k][s:e] = hits[:, kk - 1] / kk
        if top:
            neighbours[s:e] = order[:, :neighbours.shape[1]]
    valid = ~torch.isnan(ap)
    n_valid = int(valid.sum())
    mean = (lambda t: float(t[valid].mean())) if n_valid else (lambda t: math.nan)
    out = {
        "mAP": mean(ap),
        "recall@k": {k: mean(((first > 0) & (first <= k)).double()) for k in ks},
        "precision@k": {k: mean(prec_at[k]) for k in ks},
        "ap": ap.numpy(), "first_positive": first.numpy(),
        "n_queries": n_q, "n_without_positives": n_q - n_valid,
    }
    if top:
        out["neighbours"] = neighbours.numpy()
    return out


def gem_pool(tokens: torch.Tensor, p: float = 4.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling ``(mean_n clamp(x, eps)^p)^(1/p)`` over tokens: ``B×N×D -> B×D``.

    p = 1 is the mean (of the clamped, i.e. positive, values) and p -> ∞ tends to the max.
    """
    if tokens.dim() != 3:
        raise ValueError(f"expected B×N×D tokens, got shape {tuple(tokens.shape)}")
    return tokens.clamp(min=eps).pow(p).mean(dim=1).pow(1.0 / p)


def copy_detection_descriptor(model: torch.nn.Module, images: torch.Tensor, p: float = 4.0) -> torch.Tensor:
    """DINO v1's copy-detection descriptor: ``[CLS, GeM_p(patch tokens)]``, ``B×3×H×W -> B×2D``.

    Both parts are the model's final-norm outputs (registers excluded); the concatenation is not
    normalised here (:func:`retrieval_metrics` L2-normalises the whole vector, as the official code).
    """
    out = model.forward_features(images)
    return torch.cat([out["cls"], gem_pool(out["patches"], p)], dim=-1)


def _jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return torch.from_numpy(np.asarray(Image.open(buf).convert("RGB")).copy()).permute(2, 0, 1)


def _overlay(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    from PIL import Image, ImageDraw, ImageFont

    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(pil)
    h, w = image.shape[1:]
    for _ in range(int(rng.integers(1, 4))):  # opaque boxes covering 3-10% of the image each
        bw, bh = int(w * rng.uniform(0.15, 0.35)), int(h * rng.uniform(0.15, 0.35))
        x0, y0 = int(rng.integers(0, max(1, w - bw))), int(rng.integers(0, max(1, h - bh)))
        draw.rectangle([x0, y0, x0 + bw, y0 + bh], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    try:
        font = ImageFont.load_default(size=max(8, h // 8))
    except TypeError:  # Pillow < 10.1 has one small bitmap font
        font = ImageFont.load_default()
    text = "".join(rng.choice(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "), size=int(rng.integers(4, 12))))
    draw.text((int(rng.integers(0, max(1, w // 2))), int(rng.integers(0, max(1, h - h // 6)))), text,
              fill=tuple(int(v) for v in rng.integers(0, 256, 3)), font=font)
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)


def augment_copy(image: torch.Tensor, kind: str, rng: np.random.Generator) -> torch.Tensor:
    """An edited copy of a ``uint8 3×H×W`` image (a copy-detection query); returns ``uint8 3×h×w``.

    Kinds: ``crop`` (keep 20-60% of the area, aspect 3/4-4/3), ``jpeg`` (quality 5-30), ``colour``
    (brightness, contrast, saturation, hue), ``blur`` (Gaussian, sigma 1-3 px at 224 px), ``overlay``
    (opaque boxes and text), ``strong`` (crop + colour + overlay + JPEG).
    """
    if kind not in COPY_KINDS:
        raise ConfigError(f"unknown copy kind {kind!r}; choose from {', '.join(COPY_KINDS)}")
    if kind == "strong":
        for step in ("crop", "colour", "overlay", "jpeg"):
            image = augment_copy(image, step, rng)
        return image
    h, w = image.shape[1:]
    if kind == "crop":
        area, aspect = rng.uniform(0.2, 0.6) * h * w, math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        ch, cw = min(h, max(1, round(math.sqrt(area / aspect)))), min(w, max(1, round(math.sqrt(area * aspect))))
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        return image[:, y0:y0 + ch, x0:x0 + cw].clone()
    if kind == "jpeg":
        return _jpeg(image, int(rng.integers(5, 31)))
    if kind == "overlay":
        return _overlay(image, rng)
    x = image[None].float() / 255
    if kind == "colour":
        x = augment.adjust_brightness(x, rng.uniform(0.6, 1.4))
        x = augment.adjust_contrast(x, rng.uniform(0.6, 1.4))
        x = augment.adjust_saturation(x, rng.uniform(0.2, 1.8))
        x = augment.adjust_hue(x, rng.uniform(-0.1, 0.1))
    else:  # blur, sigma relative to a 224-px image
        sigma = rng.uniform(1.0, 3.0) * min(h, w) / 224
        x = augment.gaussian_blur(x, sigma, 2 * math.ceil(3 * sigma) + 1)
    return (x[0] * 255).round().clamp(0, 255).to(torch.uint8)


class _Describer:
    """Batches square-resized images through the model; collects descriptors on the CPU."""

    def __init__(self, model, size: int, batch_size: int, device, precision: str, p: float, preprocess=None):
        self.model, self.size, self.batch_size, self.p, self.preprocess = model, size, batch_size, p, preprocess
        self.device, self.precision = device, precision
        self.pending: list[torch.Tensor] = []
        self.out: list[torch.Tensor] = []

    def add(self, image: torch.Tensor) -> None:
        self.pending.append(resize_image(image, (self.size, self.size)))
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        x = normalize(torch.stack(self.pending).to(self.device), self.preprocess)
        with torch.inference_mode(), autocast(self.device, self.precision):
            chunk = micro_batch_size(self.model, self.size, self.precision, self.device, len(x))
            self.out.append(in_micro_batches(lambda c: copy_detection_descriptor(self.model, c, self.p), x,
                                             chunk).float().cpu())
        self.pending = []

    def result(self) -> torch.Tensor:
        self.flush()
        return torch.cat(self.out) if self.out else torch.zeros(0, 0)


def _images(dataset) -> Any:
    from ..data import ImageDataset

    return dataset if hasattr(dataset, "load") else ImageDataset(dataset)


def copy_detection_eval(model: torch.nn.Module, dataset, n_augmentations: int = len(COPY_KINDS), *,
                        kinds: Sequence[str] = COPY_KINDS, distractors=None, image_size: int | None = None,
                        preprocess=None, batch_size: int = 32, gem_p: float = 4.0, ks: Sequence[int] = (1, 5, 10),
                        device: str | torch.device = "auto", precision: str = "auto", seed: int = 0,
                        progress: bool = True) -> dict[str, Any]:
    """Copy detection on edited copies of ``dataset``'s images.

    Every readable image is an original in the database; ``n_augmentations`` edited copies of it
    (copy j has kind ``kinds[j % len(kinds)]``, random strength) are queries whose only positive is
    their original. ``distractors`` (another data set) are added to the database with no positive.

    Args:
        model: a backbone with ``forward_features``; run in eval mode, moved to ``device``.
        dataset, distractors: an :class:`~dinolab.data.ImageDataset` or a source for one.
        image_size: images are resized to this square (rounded to the patch size), as the official eval;
            default that of ``preprocess`` (default ``model.preprocess``, else 224), whose normalisation is used.
        gem_p: GeM exponent. ks: recall@k cut-offs. seed: the edits.

    Returns:
        dict with ``mAP``, ``recall@k``, ``precision@k`` over all queries, ``per_kind`` (the same for the
        queries of each kind), ``n_originals``, ``n_queries``, ``n_distractors`` and ``bad`` (unreadable
        files as ``(path, reason)``).
    """
    from ..data import UnreadableImage

    if n_augmentations < 1:
        raise ConfigError(f"n_augmentations must be >= 1, got {n_augmentations}")
    for k in kinds:
        if k not in COPY_KINDS:
            raise ConfigError(f"unknown copy kind {k!r}; choose from {', '.join(COPY_KINDS)}")
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    from ..models.preprocess import resolve_preprocess

    pp = resolve_preprocess(model, image_size=image_size, preprocess=preprocess)
    patch = getattr(model, "patch_size", 1)
    size = max(patch, round(pp.image_size / patch) * patch)
    was_training = model.training
    model.to(dev).eval()
    rng = np.random.default_rng(seed)
    db, queries = (_Describer(model, size, batch_size, dev, prec, gem_p, pp) for _ in range(2))
    query_orig, query_kind, bad = [], [], []
    originals = _images(dataset)
    try:
        for i in tqdm(range(len(originals)), desc="copy detection", disable=None if progress else True):
            try:
                image = originals.load(i)
            except UnreadableImage as e:
                bad.append((e.path, e.reason))
                continue
            orig_id = len(db.pending) + sum(len(o) for o in db.out)
            db.add(image)
            for j in range(n_augmentations):
                kind = kinds[j % len(kinds)]
                queries.add(augment_copy(image, kind, rng))
                query_orig.append(orig_id)
                query_kind.append(kind)
        n_orig = len(query_orig) // n_augmentations
        if n_orig == 0:
            raise DataError(f"none of the {len(originals)} images could be read; check the files "
                            f"(first problem: {bad[0][0]}: {bad[0][1]})" if bad else "the data set has no images")
        n_distractors = 0
        if distractors is not None:
            extra = _images(distractors)
            for i in tqdm(range(len(extra)), desc="distractors", disable=None if progress else True):
                try:
                    db.add(extra.load(i))
                    n_distractors += 1
                except UnreadableImage as e:
                    bad.append((e.path, e.reason))
        db_desc, q_desc = db.result(), queries.result()
    finally:
        model.train(was_training)
    db_labels = np.r_[np.arange(n_orig), np.full(n_distractors, -1)]
    res = retrieval_metrics(q_desc, db_desc, np.asarray(query_orig), db_labels, ks=ks)
    kinds_arr = np.asarray(query_kind)
    per_kind = {}
    for kind in dict.fromkeys(query_kind):
        sel = kinds_arr == kind
        first = res["first_positive"][sel]
        per_kind[kind] = {"mAP": float(np.mean(res["ap"][sel])), "n_queries": int(sel.sum()),
                          "recall@k": {k: float(np.mean((first > 0) & (first <= k))) for k in res["recall@k"]}}
    return {"mAP": res["mAP"], "recall@k": res["recall@k"], "precision@k": res["precision@k"], "per_kind": per_kind,
            "n_originals": n_orig, "n_queries": len(query_orig), "n_distractors": n_distractors, "bad": bad}
