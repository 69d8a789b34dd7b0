"""Images in, embeddings out: :func:`embed` and the :class:`Embeddings` it returns.

Each image is prepared as the model sees (``model.preprocess``, see :mod:`dinolab.models.preprocess`;
without one the standard evaluation protocol: shorter side to ``image_size * 256/224``, bicubic, centre
crop ``image_size`` = 224, ImageNet-normalised) and passed through the frozen backbone. The feature is
the final-norm CLS token, or with
``n_last_blocks = n`` the concatenation of the normed CLS tokens of the last ``n`` blocks (DINO's
linear-probe feature); ``patch_mean`` adds the mean of the last block's normed patch tokens.
Unreadable files are skipped and listed in ``Embeddings.bad``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.badfiles import BadFileLog
from ..data.datasets import ImageDataset
from ..data.loader import make_loader
from ..device import autocast, resolve_device, resolve_precision
from ..errors import ConfigError, DataError
from ..io import atomic_write
from ..models.preprocess import Preprocess, resolve_preprocess
from .microbatch import in_micro_batches, micro_batch_size


@dataclass
class Embeddings:
    """One row per readable image, in data-set order.

    Attributes:
        paths: image paths (N).
        cls: ``(N, D * n_last_blocks)`` float32, the normed CLS token(s).
        patch_mean: ``(N, D)`` float32 mean of the last block's normed patch tokens, or None.
        labels: ``(N,)`` int64 class indices when the data has classes, else None.
        classes: class names (``labels`` index into them), or None.
        bad: ``(path, reason)`` of each file that could not be read.

    Examples:
        >>> emb = Embeddings(["a.jpg"], np.zeros((1, 4), np.float32))
        >>> emb.save("emb.npz"); Embeddings.load("emb.npz").cls.shape   # doctest: +SKIP
        (1, 4)
    """

    paths: list[str]
    cls: np.ndarray
    patch_mean: np.ndarray | None = None
    labels: np.ndarray | None = None
    classes: list[str] | None = None
    bad: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def dim(self) -> int:
        return int(self.cls.shape[1])

    def cls_with_patch_mean(self) -> np.ndarray:
        """``(N, 2D)`` float32: the L2-normalised CLS and L2-normalised mean patch token side by side, the feature
        of ``dinolab knn --patch-mean`` (each part weighs the same in a cosine; the final-norm CLS is typically
        2-3x the patch mean's norm and would otherwise dominate). Needs embeddings made with ``patch_mean``."""
        if self.patch_mean is None:
            raise DataError("these embeddings have no patch_mean; embed with patch_mean=True "
                            "(`dinolab embed ... --patch-mean`)")
        parts = [p / np.linalg.norm(p, axis=1, keepdims=True).clip(1e-12) for p in (self.cls, self.patch_mean)]
        return np.concatenate(parts, axis=1).astype(np.float32, copy=False)

    def save(self, path: str | os.PathLike) -> Path:
        """Write an ``.npz`` (plain arrays, no pickles) atomically; returns the path."""
        arrays: dict[str, np.ndarray] = {
            "paths": np.array(self.paths, dtype=str), "cls": np.asarray(self.cls, np.float32),
            "bad_paths": np.array([p for p, _ in self.bad], dtype=str),
            "bad_reasons": np.array([r for _, r in self.bad], dtype=str),
        }
        if self.patch_mean is not None:
            arrays["patch_mean"] = np.asarray(self.patch_mean, np.float32)
        if self.labels is not None:
            arrays["labels"] = np.asarray(self.labels, np.int64)
        if self.classes is not None:
            arrays["classes"] = np.array(self.classes, dtype=str)
        with atomic_write(path, "wb") as f:
            np.savez(f, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Embeddings:
        """Read a file written by :meth:`save` (``dinolab embed``)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                if "cls" not in z or "paths" not in z:
                    raise DataError(f"{path} is an .npz without 'cls' and 'paths' arrays; make embeddings with "
                                    f"`dinolab embed WEIGHTS DATA --out FILE.npz`")
                get = lambda k: z[k] if k in z else None  # noqa: E731
                bad = list(zip((str(p) for p in z["bad_paths"]), (str(r) for r in z["bad_reasons"]))) \
                    if "bad_paths" in z else []
                classes = get("classes")
                paths = [str(p) for p in z["paths"]]
                vectors = {k: _check_vectors(path, k, get(k), len(paths)) for k in ("cls", "patch_mean")}
                labels = get("labels")
                if labels is not None and (labels.dtype.kind not in "iu" or labels.shape != (len(paths),)):
                    raise DataError(f"{path}: 'labels' must hold one whole number per path ({len(paths)}), got "
                                    f"{labels.dtype} of shape {labels.shape}; re-create the file with `dinolab embed`")
                return cls(paths, vectors["cls"], vectors["patch_mean"], labels,
                           None if classes is None else [str(c) for c in classes], bad)
        except FileNotFoundError:
            raise DataError(f"embeddings file {path} does not exist; create it with `dinolab embed`") from None
        except (ValueError, OSError) as e:
            raise DataError(f"{path} is not a readable .npz embeddings file ({e}); create it with "
                            f"`dinolab embed`") from None


def _check_vectors(path: Any, key: str, a: np.ndarray | None, n: int) -> np.ndarray | None:
    """``a`` if it is an ``(n, D)`` array of finite floats, else a :class:`DataError` naming ``key``."""
    if a is None:
        return None
    if a.dtype.kind != "f" or a.ndim != 2 or a.shape[0] != n:
        raise DataError(f"{path}: {key!r} must be a float array with one row per path ({n}), got {a.dtype} of "
                        f"shape {a.shape}; re-create the file with `dinolab embed`")
    if not np.isfinite(a).all():
        raise DataError(f"{path}: {key!r} holds NaN or infinite values ({int((~np.isfinite(a)).any(1).sum())} "
                        f"rows); the model that made them is broken, re-create the file with good weights")
    return a


def embed(model: torch.nn.Module, data: Any, *, batch_size: int = 64, image_size: int | None = None,
          preprocess: Preprocess | None = None, device: str = "auto", precision: str = "auto",
          patch_mean: bool = False, n_last_blocks: int = 1,
          num_workers: int = 0, progress: bool = True, max_bad_fraction: float | None = None,
          bad_file_log: str | os.PathLike | None = None, limit_name: str = "max_bad_fraction",
          micro_batch: int | None = None) -> Embeddings:
    """Embed every readable image of ``data`` with a frozen ``model``.

    Args:
        model: a dinolab ``VisionTransformer`` (anything with ``get_intermediate_layers``). It is
            moved to ``device`` and run in eval mode; its training mode is restored afterwards.
        data: an :class:`~dinolab.data.ImageDataset`, or a source for one (folder, class folder,
            ``.txt`` list, ``builtin:...``).
        image_size: side of the square fed to the model (input ``(B, 3, image_size, image_size)``);
            None: that of ``preprocess``.
        preprocess: resize rule and normalisation (default ``model.preprocess``, else 224 px with
            ImageNet mean / std); ``image_size`` overrides its size.
        device, precision: see :mod:`dinolab.device` (``"auto"``: fastest safe choice).
        patch_mean: also return the mean patch token of the last block.
        n_last_blocks: concatenate the CLS tokens of this many last blocks (``cls`` is ``N x n*D``).
        num_workers: decoding processes.
        progress: show a progress bar (on a terminal).
        max_bad_fraction: stop with a :class:`DataError` once more than this share of the files is
            unreadable (None: no limit; unreadable files are always skipped and listed).
        bad_file_log: write the unreadable files there (``path<TAB>reason`` lines) when there are
            any, also when stopping for too many.
        limit_name: how the stop message names the limit (e.g. the command-line option).
        micro_batch: images per forward call within a batch (None: cache-sized on CPU, the whole
            batch on GPU; see :mod:`dinolab.eval.microbatch`). Changes speed, not the result.

    Returns:
        :class:`Embeddings`. Raises :class:`DataError` when no image at all could be read.

    Examples:
        >>> import dinolab
        >>> model = dinolab.create_model("vit_tiny", img_size=32, depth=2)
        >>> emb = embed(model, "builtin:shapes?n=8&size=32", image_size=32, progress=False)
        >>> emb.cls.shape, emb.labels[:3].tolist()
        ((8, 192), [0, 1, 2])
    """
    from tqdm.auto import tqdm

    dataset = data if hasattr(data, "load") and hasattr(data, "paths") else ImageDataset(data)
    depth = getattr(model, "depth", n_last_blocks)
    if not 1 <= n_last_blocks <= depth:
        raise ConfigError(f"n_last_blocks={n_last_blocks} must be between 1 and the model depth ({depth})")
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    pp = resolve_preprocess(model, image_size=image_size, preprocess=preprocess)
    image_size = pp.image_size
    loader = make_loader(dataset, batch_size, shuffle=False, num_workers=num_workers, resize_mode="eval",
                         load_size=image_size, pin_memory=dev.type == "cuda", preprocess=pp)
    bad_log = BadFileLog(1.0 if max_bad_fraction is None else max_bad_fraction, bad_file_log,
                         config_key=limit_name)
    if micro_batch is not None and micro_batch < 1:
        raise ConfigError(f"micro_batch={micro_batch} must be at least 1 (or None for the automatic size)")
    chunk = micro_batch or micro_batch_size(model, image_size, prec, dev, batch_size)
    forward = lambda x: model.get_intermediate_layers(x, n_last_blocks, return_class_token=True)  # noqa: E731
    was_training = model.training
    model.to(dev).eval()
    indices, cls_rows, patch_rows, seen = [], [], [], 0
    try:
        with torch.inference_mode():
            for batch in tqdm(loader, total=len(loader), desc="embed", unit="batch",
                              disable=None if progress else True):
                bad_log.add(batch["bad"])
                seen += len(batch["indices"]) + len(batch["bad"])
                bad_log.check(seen, total=len(dataset))
                if len(batch["indices"]) == 0:
                    continue
                x = pp.normalize(batch["images"].to(dev, non_blocking=True))
                with autocast(dev, prec):
                    outputs = in_micro_batches(forward, x, chunk)
                cls_rows.append(torch.cat([c for _, c in outputs], dim=-1).float().cpu())
                if patch_mean:
                    patch_rows.append(outputs[-1][0].float().mean(dim=1).cpu())
                indices.append(batch["indices"])
    finally:
        model.train(was_training)
        if bad_log.count and bad_file_log is not None:
            bad_log.write()
    bad_log.warn()
    if not indices:
        raise DataError(f"none of the {len(dataset)} images in {getattr(dataset, 'source', 'the data')} could be "
                        f"read ({bad_log.summary()}); check that the files are images")
    order = torch.cat(indices).numpy()
    labels = getattr(dataset, "labels", None)
    classes = getattr(dataset, "classes", None)
    return Embeddings(
        paths=[dataset.paths[i] for i in order],
        cls=torch.cat(cls_rows).numpy(),
        patch_mean=torch.cat(patch_rows).numpy() if patch_mean else None,
        labels=None if labels is None else np.asarray(labels, np.int64)[order],
        classes=None if classes is None else list(classes),
        bad=bad_log.items,
    )
