"""Image sets from folders, file lists and built-in sets.

:class:`ImageDataset` accepts one ``source``:

- a **folder**: every file below it (recursively) whose extension is in ``extensions``, in
  sorted path order. Hidden files and folders (names starting with ``.``) are skipped.
- a **class-per-subfolder folder**: when *every* image sits exactly one level down (in
  ``root/<class>/image``, none at the top and none deeper) and there are at least two such
  subfolders, the subfolder names are the classes (sorted) and each image gets the index of
  its folder as label. Any other layout has no labels. Pass ``labels=True`` to insist on this
  layout (error otherwise) or ``labels=False`` to ignore it.
- a **.txt file list**: one image path per line (blank lines and lines starting with ``#`` are
  skipped). Relative paths are resolved against ``root`` if given, else against the list's
  folder. With ``root`` given, absolute paths and paths that climb out of ``root`` with ``..``
  are refused, so a list cannot make dinolab read files outside its root.
- a single **image file**.
- ``builtin:digits`` / ``builtin:shapes[?n=..&size=..&seed=..]`` (see :mod:`dinolab.data.builtin`).

Decoding happens in :meth:`ImageDataset.load`, one file at a time; a bad file raises
:class:`~dinolab.data.decode.UnreadableImage` there and the loaders skip and report it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import DataError
from ..io import escapes_root, read_text_lines
from .builtin import BuiltinSet, is_builtin, load_builtin
from .decode import DEFAULT_MAX_PIXELS, decode_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                    ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".mpo")

logger = logging.getLogger("dinolab.data")

_HOW_TO = ("pass a folder of images, a class-per-subfolder folder, a .txt file with one image path per line, "
           "or builtin:digits / builtin:shapes")


class ImageDataset(torch.utils.data.Dataset):
    """Images from a folder, a class-per-subfolder folder, a file list or a built-in set.

    Attributes:
        source: the source as given (a string).
        paths: one path (or ``builtin:<name>/<i>`` name) per image.
        labels: ``(N,)`` int64 class indices, or None when the source has no classes.
        classes: class names (``labels`` index into them), or None.
        captions: one caption per image (``builtin:shapes`` only), else None.
        mask_paths: foreground-mask files (white = object), one per image, or None; built-in masks
            live in memory: use :meth:`masks`, which reads either.

    ``dataset[i]`` and ``dataset.load(i)`` return the ``(3, H, W)`` uint8 RGB image.

    Examples:
        >>> ds = ImageDataset("builtin:shapes?n=20&size=32")
        >>> len(ds), ds.classes[:2], ds.load(0).shape
        (20, ['circle', 'square'], torch.Size([3, 32, 32]))
        >>> ds.masks(0).shape, ds.captions[0].startswith("a")
        (torch.Size([32, 32]), True)
    """

    def __init__(self, source: str | os.PathLike | Sequence[str | os.PathLike], *,
                 root: str | os.PathLike | None = None, extensions: Sequence[str] = IMAGE_EXTENSIONS,
                 labels: bool | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS):
        self.max_pixels = max_pixels
        self.labels: np.ndarray | None = None
        self.classes: list[str] | None = None
        self.captions: list[str] | None = None
        self.mask_paths: list[str] | None = None
        self._builtin: BuiltinSet | None = None
        exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)

        if isinstance(source, (list, tuple)):
            self.source = f"<list of {len(source)} paths>"
            self.paths = [str(p) for p in source]
            if not self.paths:
                raise DataError(f"the list of image paths is empty; {_HOW_TO}")
        elif is_builtin(source):
            self.source = str(source)
            self._builtin = load_builtin(str(source))
            self.paths = self._builtin.paths
            self.labels, self.classes = self._builtin.labels, list(self._builtin.classes)
            self.captions = self._builtin.captions
        else:
            self.source = str(source)
            p = Path(source)
            if not p.exists():
                raise DataError(f"data source {p} does not exist; {_HOW_TO}")
            if p.is_dir():
                self.paths, self.labels, self.classes = _scan_folder(p, exts, labels)
            elif p.suffix.lower() == ".txt":
                self.paths = _read_file_list(p, root)
            elif p.suffix.lower() in exts:
                self.paths = [str(p)]
            else:
                raise DataError(f"data source {p} is a file but neither an image ({', '.join(exts)}) nor a .txt "
                                f"file list; {_HOW_TO}")
        if labels and self.labels is None:
            raise DataError(f"labels were required but {self.source} has no classes; put the images of each "
                            f"class in their own subfolder (root/<class>/<image>), nothing at the top level")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.load(i)

    def load(self, i: int, *, min_size: int | None = None) -> torch.Tensor:
        """Image ``i`` as a ``(3, H, W)`` uint8 RGB tensor (raises ``UnreadableImage`` for a bad file).

        ``min_size`` lets the decoder shrink large JPEGs while keeping the shorter side >= ``min_size``.
        """
        if self._builtin is not None:
            return torch.from_numpy(self._builtin.images[i].copy())
        return decode_image(self.paths[i], max_pixels=self.max_pixels, min_size=min_size)

    def masks(self, i: int) -> torch.Tensor | None:
        """Ground-truth foreground mask of image ``i``, ``(H, W)`` bool (True on the object), or None
        when the data set has no masks (see :attr:`has_masks`)."""
        if self._builtin is not None and self._builtin.masks is not None:
            return torch.from_numpy(self._builtin.masks[i].copy())
        if self.mask_paths is not None:
            return decode_image(self.mask_paths[i], max_pixels=self.max_pixels)[0] > 127
        return None

    @property
    def has_masks(self) -> bool:
        return self.mask_paths is not None or (self._builtin is not None and self._builtin.masks is not None)

    def __repr__(self) -> str:
        extra = f", {len(self.classes)} classes" if self.classes else ""
        return f"ImageDataset({self.source!r}, {len(self)} images{extra})"


def _scan_folder(folder: Path, exts: tuple[str, ...], labels: bool | None
                 ) -> tuple[list[str], np.ndarray | None, list[str] | None]:
    found = [Path(p).relative_to(folder) for p in walk_images(folder, exts)]
    if not found:
        raise DataError(f"no images found under {folder} (looked for {', '.join(exts)}, recursively); "
                        f"put images there or {_HOW_TO}")
    found.sort(key=lambda r: r.as_posix())
    paths = [str(folder / r) for r in found]
    class_names = sorted({r.parts[0] for r in found})
    if labels is not False and all(len(r.parts) == 2 for r in found) and len(class_names) >= 2:
        index = {c: k for k, c in enumerate(class_names)}
        return paths, np.array([index[r.parts[0]] for r in found], dtype=np.int64), class_names
    return paths, None, None


def walk_images(folder: str | os.PathLike, exts: Sequence[str] = IMAGE_EXTENSIONS) -> list[str]:
    """Paths of the non-hidden files below ``folder`` whose extension is in ``exts`` (lower case, with dot).

    Symbolic links to folders are followed, but each real folder (device + inode) is read once: a link
    back up the tree (``sub/up -> ..``) would otherwise walk forever, and a link to a folder already
    read would list its images twice. Such links and unreadable folders are named in one warning each.
    """
    seen: set[tuple[int, int]] = set()
    skipped_links: list[str] = []
    unreadable: list[str] = []
    out: list[str] = []

    def first_visit(path: str) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            return False
        key = (st.st_dev, st.st_ino)
        if key in seen:
            return False
        seen.add(key)
        return True

    first_visit(os.fspath(folder))
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True,
                                                 onerror=lambda e: unreadable.append(f"{e.filename} ({e.strerror})")):
        keep = []
        for d in dirnames:
            if d.startswith("."):
                continue
            if first_visit(os.path.join(dirpath, d)):
                keep.append(d)
            else:
                skipped_links.append(os.path.join(dirpath, d))
        dirnames[:] = keep
        out += [os.path.join(dirpath, f) for f in filenames
                if not f.startswith(".") and os.path.splitext(f)[1].lower() in exts]
    if skipped_links:
        logger.warning(f"{folder}: skipped {len(skipped_links)} link(s) to folders already read (a loop or a "
                       f"second path to the same folder): {', '.join(skipped_links[:3])}"
                       + (" ..." if len(skipped_links) > 3 else ""))
    if unreadable:
        logger.warning(f"{folder}: could not read {len(unreadable)} folder(s), their images are left out: "
                       f"{', '.join(unreadable[:3])}" + (" ..." if len(unreadable) > 3 else ""))
    return out


def _read_file_list(list_path: Path, root: str | os.PathLike | None) -> list[str]:
    base = Path(root) if root is not None else list_path.parent
    try:
        lines = read_text_lines(list_path)
    except UnicodeDecodeError:
        raise DataError(f"file list {list_path} is not UTF-8 text; it should hold one image path per line") from None
    paths = []
    for n, line in enumerate(lines, 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if root is not None:
            _check_inside_root(entry, root, list_path, n)
        p = Path(entry)
        paths.append(str(p if p.is_absolute() else base / p))
    if not paths:
        raise DataError(f"file list {list_path} lists no images; write one image path per line")
    return paths


def _check_inside_root(entry: str, root: str | os.PathLike, list_path: Path, line: int) -> None:
    if escapes_root(entry):  # '..' and absolute paths are what a hostile list uses
        raise DataError(f"{list_path} line {line}: {entry!r} points outside the root folder {root}; list paths "
                        f"relative to the root, without '..' or a leading '/', or do not pass root")
