"""Image-caption pairs for alignment: a CSV file or a built-in captioned set.

- **CSV**: a header row with the columns ``image`` and ``caption`` (other columns are ignored),
  then one pair per row. Relative image paths are resolved against the CSV's folder. A row with
  an empty image or caption, or whose image file does not exist, is skipped and named in
  ``Pairs.skipped`` (unreadable images are found and added there when the images are decoded).
- ``builtin:shapes[?n=..&size=..&seed=..]``: the generated shapes with their captions ("a red
  triangle on a striped background"); the shape names are its classes.

Examples:
    >>> p = load_pairs("builtin:shapes?n=6&size=32")
    >>> len(p), p.captions[0].endswith("background"), p.dataset.classes[0]
    (6, True, 'circle')
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..data import ImageDataset
from ..data.builtin import is_builtin
from ..errors import DataError

_HOW_TO = ("give a CSV with a header row 'image,caption' and one image path and caption per row, "
           "or builtin:shapes")


@dataclass
class Pairs:
    """Images and their captions.

    Attributes:
        dataset: the images (:class:`~dinolab.data.ImageDataset`; ``labels``/``classes`` for built-in sets).
        captions: one caption per image of ``dataset``.
        skipped: ``(where, reason)`` of each row or file that was left out.
        source: the source as given.
    """

    dataset: ImageDataset
    captions: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.captions)


def load_pairs(source: str | os.PathLike) -> Pairs:
    """Read pairs from a CSV file or ``builtin:shapes`` (see the module doc)."""
    if is_builtin(source):
        dataset = ImageDataset(str(source))
        if dataset.captions is None:
            raise DataError(f"{source} has no captions; use builtin:shapes or {_HOW_TO}")
        return Pairs(dataset, list(dataset.captions), [], str(source))
    path = Path(source)
    if not path.is_file():
        raise DataError(f"pairs file {path} does not exist; {_HOW_TO}")
    return _read_csv(path)


def _read_csv(path: Path) -> Pairs:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save the pairs CSV as UTF-8") from None
    except csv.Error as e:
        raise DataError(f"{path} is not a readable CSV ({e}); {_HOW_TO}") from None
    if not rows:
        raise DataError(f"{path} is empty; {_HOW_TO}")
    header = [h.strip().lower() for h in rows[0]]
    if "image" not in header or "caption" not in header:
        raise DataError(f"{path}: the header row is {rows[0]!r} but must name the columns 'image' and 'caption'; "
                        f"{_HOW_TO}")
    col_image, col_caption = header.index("image"), header.index("caption")
    images, captions, skipped = [], [], []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path} line {line}"
        if len(row) <= max(col_image, col_caption):
            skipped.append((where, f"{len(row)} fields, fewer than the header's {len(header)}"))
            continue
        image, caption = row[col_image].strip(), " ".join(row[col_caption].split())
        if not image or not caption:
            skipped.append((where, "empty image path" if not image else "empty caption"))
            continue
        p = Path(image)
        p = p if p.is_absolute() else path.parent / p
        if not p.is_file():
            skipped.append((str(p), f"file not found ({where})"))
            continue
        images.append(str(p))
        captions.append(caption)
    if not images:
        detail = f"; first problem: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise DataError(f"{path} holds no usable image-caption pair{detail}; {_HOW_TO}")
    return Pairs(ImageDataset(images), captions, skipped, str(path))
