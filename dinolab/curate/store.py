"""Embeddings that may not fit in memory: read in chunks, L2-normalised per chunk.

Curation works on one vector per image. An :class:`EmbeddingStore` holds an
N×D array (in memory, or a read-only memory map of a ``.npy`` file) and the N
image paths, and hands out L2-normalised float32 chunks, so a pool of a
hundred million images is searched and clustered a few thousand rows at a time.

Inputs accepted by :func:`open_embeddings`:

- ``.npz`` written by :meth:`dinolab.eval.features.Embeddings.save` (``dinolab embed``):
  vectors from the ``cls`` (or ``patch_mean``) field, paths from ``paths``. An ``.npz`` is
  read into memory (NumPy cannot memory-map inside a zip).
- ``.npy``: a raw N×D float32/float16/float64 array, memory-mapped. Paths come from a
  text file (one path a line): the ``paths`` argument, else ``<stem>.txt`` or
  ``<stem>.paths.txt`` next to the array; without one, rows are named by their index.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..data.badfiles import print_skipped
from ..errors import DataError
from ..io import read_text_lines

EMBEDDING_SUFFIXES = (".npz", ".npy")


class EmbeddingStore:
    """N×D embeddings plus N paths, read as L2-normalised float32 chunks.

    Args:
        array: N×D float array; a ``np.memmap`` stays on disk.
        paths: N names (usually image paths); ``None`` names rows ``"0"``, ``"1"``, ...
        normalize: L2-normalise each row when read (zero rows stay zero).
        source: where the vectors came from, for messages.

    Examples:
        >>> store = EmbeddingStore(np.random.rand(1000, 64).astype("float32"))
        >>> for start, chunk in store.iter_chunks(256):   # chunk: ≤256×64 float32, unit rows
        ...     pass
        >>> store.rows([3, 1]).shape
        (2, 64)
    """

    def __init__(self, array: np.ndarray, paths: Sequence[str] | None = None, *, normalize: bool = True,
                 source: str = "<array>") -> None:
        if array.ndim != 2:
            raise DataError(f"{source}: embeddings must be a 2-D N×D array, got shape {array.shape}; "
                            f"save one vector per image")
        if not np.issubdtype(array.dtype, np.floating):
            raise DataError(f"{source}: embeddings must be float32/float16/float64, got {array.dtype}; "
                            f"convert them with array.astype('float32')")
        if paths is not None and len(paths) != len(array):
            raise DataError(f"{source}: {len(array)} vectors but {len(paths)} paths; "
                            f"give exactly one path per row")
        self.array = array
        self._paths = list(paths) if paths is not None else None
        self.normalize = normalize
        self.source = source

    def __len__(self) -> int:
        return int(self.array.shape[0])

    @property
    def dim(self) -> int:
        return int(self.array.shape[1])

    @property
    def paths(self) -> list[str]:
        """N names; rows without a path are named by their index."""
        if self._paths is None:
            return [str(i) for i in range(len(self))]
        return self._paths

    @property
    def has_paths(self) -> bool:
        return self._paths is not None

    def chunk(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as (stop-start)×D float32, L2-normalised if ``normalize``."""
        return self._prepare(self.array[start:stop])

    def rows(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Rows at ``indices`` (any order) as len×D float32, L2-normalised if ``normalize``."""
        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(idx, kind="stable")  # sorted reads are sequential on a memory map
        out = np.empty((len(idx), self.dim), dtype=np.float32)
        out[order] = self._prepare(self.array[idx[order]])
        return out

    def iter_chunks(self, chunk_size: int = 65536, *, progress: bool = False,
                    desc: str = "reading embeddings") -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, chunk)`` with chunk ≤chunk_size×D float32, covering all rows in order."""
        n = len(self)
        bar = _progress(n, desc, progress)
        for start in range(0, n, chunk_size):
            stop = min(n, start + chunk_size)
            yield start, self.chunk(start, stop)
            bar.update(stop - start)
        bar.close()

    def to_array(self) -> np.ndarray:
        """All rows as one N×D float32 array (only for pools that fit in memory)."""
        return self.chunk(0, len(self))

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        import torch

        x = np.array(x, dtype=np.float32, copy=True)
        t = torch.from_numpy(x)
        norms = torch.linalg.vector_norm(t, dim=1, keepdim=True)  # NaN or inf if any entry of the row is
        if not bool(torch.isfinite(norms).all()):
            raise DataError(f"{self.source}: embeddings contain NaN or infinite values; "
                            f"recompute them (a model in fp16 can overflow: try --precision fp32)")
        if self.normalize:  # in place; a zero row stays zero
            t.div_(norms.clamp_min_(1e-30))
        return x


def open_embeddings(path: str | os.PathLike, *, paths: str | os.PathLike | Sequence[str] | None = None,
                    key: str = "cls", normalize: bool = True) -> EmbeddingStore:
    """Open an ``.npz`` (dinolab embeddings) or ``.npy`` (raw N×D, memory-mapped) file.

    Args:
        path: the embeddings file.
        paths: the row names: a list, or a text file with one path a line (``.npy`` only;
            an ``.npz`` carries its own).
        key: which vectors of an ``.npz`` to use: ``"cls"`` or ``"patch_mean"``.
        normalize: L2-normalise rows when read.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such embeddings file; compute one with `dinolab embed WEIGHTS DATA --out {p.name}` "
                        f"or pass an image folder and --weights")
    suffix = p.suffix.lower()
    if suffix == ".npz":
        array, names = _read_npz(p, key)
        if paths is not None:
            names = _read_paths(paths, p)
        return EmbeddingStore(array, names, normalize=normalize, source=str(p))
    if suffix == ".npy":
        try:
            array = np.load(p, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            raise DataError(f"{p}: not a plain numeric .npy array ({e}); save it with np.save(path, array)") from e
        names = _read_paths(paths, p) if paths is not None else _sibling_paths(p)
        return EmbeddingStore(array, names, normalize=normalize, source=str(p))
    raise DataError(f"{p}: unknown embeddings format {suffix!r}; use an .npz from `dinolab embed` or an N×D .npy")


def is_embeddings_file(source: str | os.PathLike) -> bool:
    return Path(source).suffix.lower() in EMBEDDING_SUFFIXES


def load_or_embed(source: str | os.PathLike, *, weights: str | None = None, cache: str | os.PathLike | None = None,
                  paths: str | None = None, key: str = "cls", options: Any = None,
                  announce: str | None = None, **inference: Any) -> EmbeddingStore:
    """Embeddings for ``source``: read an ``.npz``/``.npy``, or embed images with a model.

    Images (a folder, a class folder, a ``.txt`` list, ``builtin:...``) are embedded with
    ``dinolab.load_model(weights)`` and ``dinolab.embed`` as the model's preprocess says, with
    ``options`` (an :class:`~dinolab.eval.options.InferenceOptions`; or its fields as keyword arguments,
    e.g. ``image_size=224, device="cpu"``, decoding in this process unless ``num_workers`` is given) applied;
    with ``announce`` (a command name) the preprocessing used is named on stderr. The result is saved
    to ``cache`` (an ``.npz``) so that a rerun with other thresholds can start from it.
    """
    if is_embeddings_file(source):
        return open_embeddings(source, paths=paths, key=key)
    if not weights:
        raise DataError(f"{source}: images need a model to embed them; pass --weights MODEL (a dinolab, DINO, "
                        f"DINOv2 or DINOv3 checkpoint), or give embeddings from `dinolab embed` (.npz)")
    import dinolab
    from dinolab.eval.options import InferenceOptions

    if options is not None and inference:
        raise TypeError(f"give options= or the keyword arguments {sorted(inference)}, not both")
    options = options or InferenceOptions(**{"num_workers": 0, **inference})
    model = dinolab.load_model(weights)
    preprocess = options.preprocess_for(model, announce=announce)
    emb = dinolab.embed(model, str(source), preprocess=preprocess, patch_mean=(key == "patch_mean"),
                        **options.embed_kwargs())
    print_skipped(emb.bad, source)  # every one named (was only the first), as embed / knn do
    if cache is not None:
        emb.save(cache)
    vectors = emb.cls if key == "cls" else emb.patch_mean
    return EmbeddingStore(np.asarray(vectors), list(emb.paths), normalize=True, source=str(source))


def _read_npz(p: Path, key: str) -> tuple[np.ndarray, list[str] | None]:
    if key not in ("cls", "patch_mean"):
        raise DataError(f"unknown embedding key {key!r}; use 'cls' or 'patch_mean'")
    try:
        from dinolab.eval.features import Embeddings
    except ImportError:  # features module absent: read the documented fields directly
        Embeddings = None
    if Embeddings is not None:
        emb = Embeddings.load(p)
        vectors, names = getattr(emb, key), list(emb.paths)
    else:
        try:
            with np.load(p, allow_pickle=False) as z:
                if key not in z:
                    vectors = None
                else:
                    vectors = z[key]
                names = [str(s) for s in z["paths"]] if "paths" in z else None
        except (ValueError, OSError) as e:
            raise DataError(f"{p}: cannot read embeddings ({e}); recompute them with `dinolab embed`") from e
    if vectors is None:
        raise DataError(f"{p}: has no {key!r} embeddings; recompute with `dinolab embed"
                        f"{' --patch-mean' if key == 'patch_mean' else ''}` or use --key cls")
    return np.asarray(vectors), names


def _read_paths(paths: str | os.PathLike | Sequence[str], owner: Path) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        f = Path(paths)
        if not f.is_file():
            raise DataError(f"{f}: no such paths file for {owner}; give a text file with one path a line")
        return [line for line in read_text_lines(f) if line.strip()]
    return [str(s) for s in paths]


def _sibling_paths(p: Path) -> list[str] | None:
    for cand in (p.with_suffix(".txt"), p.with_name(p.stem + ".paths.txt")):
        if cand.is_file():
            return _read_paths(cand, p)
    return None


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=None if enabled else True, leave=False)


def _progress_iter(items, desc: str, enabled: bool, min_items: int):
    """``items``, behind a progress bar when ``enabled`` and there are at least ``min_items`` of them."""
    if not enabled or len(items) < min_items:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, disable=None, leave=False)
