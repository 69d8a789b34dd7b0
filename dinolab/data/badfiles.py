"""Count, name and bound the unreadable files met while reading a data set.

Loaders drop unreadable images and hand them over as ``(path, reason)`` pairs;
:class:`BadFileLog` collects them (each file once, however many epochs see it),
warns once, writes them to a log file and stops the run with a
:class:`~dinolab.errors.DataError` when their share passes a limit.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ..errors import DataError
from ..io import atomic_save_text

logger = logging.getLogger("dinolab.data")

LOG_NAME = "bad_files.log"


@contextlib.contextmanager
def warnings_held_back() -> Iterator[None]:
    """Silence :meth:`BadFileLog.warn` inside the block, for a caller that reports the files itself."""
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class BadFileLog:
    """The unreadable files of a run.

    Args:
        max_bad_fraction: stop (``check`` raises) when more than this share of the files seen is bad.
        log_path: where :meth:`write` puts the list (one ``path<TAB>reason`` line per file).
        config_key: the setting named in the error message, to raise the limit.
        min_seen: ``check`` judges the share only once this many files were seen (or all of them,
            when the total is smaller), so a few bad files in the first batch do not stop a run whose
            data is mostly good.

    Examples:
        >>> log = BadFileLog(max_bad_fraction=0.1)
        >>> log.add([("a.jpg", "empty file (0 bytes)")])
        >>> log.count, log.paths
        (1, ['a.jpg'])
        >>> log.check(n_seen=100)   # 1% bad: fine
    """

    def __init__(self, max_bad_fraction: float = 0.1, log_path: str | os.PathLike | None = None, *,
                 config_key: str = "data.max_bad_fraction", min_seen: int = 100):
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise DataError(f"{config_key}={max_bad_fraction} must be between 0 and 1")
        self.max_bad_fraction = max_bad_fraction
        self.log_path = Path(log_path) if log_path is not None else None
        self.config_key = config_key
        self.min_seen = min_seen
        self._reasons: dict[str, str] = {}
        self._warned = False

    def add(self, bad: Iterable[tuple[str, str]]) -> None:
        """Record ``(path, reason)`` pairs; a path already recorded is not counted again."""
        for path, reason in bad:
            self._reasons.setdefault(str(path), str(reason))

    @property
    def count(self) -> int:
        return len(self._reasons)

    @property
    def paths(self) -> list[str]:
        return list(self._reasons)

    @property
    def items(self) -> list[tuple[str, str]]:
        return list(self._reasons.items())

    def summary(self, first: int = 3) -> str:
        """One line: how many files were skipped, the first few with their reasons, where the rest is."""
        if not self._reasons:
            return "no unreadable files"
        shown = "; ".join(f"{p} ({r})" for p, r in self.items[:first])
        more = f"; and {self.count - first} more" if self.count > first else ""
        where = f" (full list in {self.log_path})" if self.log_path is not None else ""
        noun = "file" if self.count == 1 else "files"
        return f"skipped {self.count} unreadable {noun}: {shown}{more}{where}"

    def warn(self) -> None:
        """Log :meth:`summary` as a warning, once per log (and only if there are bad files)."""
        if self._reasons and not self._warned:
            logger.warning(self.summary())
            self._warned = True

    def check(self, n_seen: int, *, total: int | None = None) -> None:
        """Raise :class:`DataError` if more than ``max_bad_fraction`` of ``n_seen`` files were bad.

        ``n_seen`` counts the distinct files tried so far, bad ones included; ``total`` is the size of
        the data set, if known (the share is judged from ``min(min_seen, total)`` files on).
        """
        needed = self.min_seen if total is None else min(self.min_seen, total)
        if n_seen <= 0 or n_seen < needed:
            return
        share = self.count / n_seen
        if share > self.max_bad_fraction:
            where = f"; the full list is in {self.log_path}" if self.log_path is not None else ""
            raise DataError(
                f"{self.count} of {n_seen} files ({share:.1%}) could not be read, above the limit "
                f"{self.config_key}={self.max_bad_fraction}. First: "
                + "; ".join(f"{p} ({r})" for p, r in self.items[:3])
                + f"{where}. Fix or remove those files, or raise {self.config_key}")

    def write(self, path: str | os.PathLike | None = None) -> Path | None:
        """Write one ``path<TAB>reason`` line per bad file to ``path`` (default ``log_path``)."""
        target = Path(path) if path is not None else self.log_path
        if target is None:
            raise ValueError("BadFileLog.write needs a path (none given and no log_path set)")
        atomic_save_text(target, "".join(f"{p}\t{r}\n" for p, r in self.items))
        return target


def print_skipped(bad: Sequence[tuple[str, str]], source: object = None, *, limit: int = 50) -> None:
    """Print every unreadable file of ``bad`` (``(path, reason)``) on stdout, ``limit`` at most, one per
    line under a count; nothing when ``bad`` is empty. For commands whose output is the screen
    (search, zeroshot, curation), where no log file is written."""
    if not bad:
        return
    where = f"{source}: " if source is not None else ""
    print(f"{where}skipped {len(bad)} unreadable image(s):")
    for path, reason in bad[:limit]:
        print(f"  {path} ({reason})")
    if len(bad) > limit:
        print(f"  ... and {len(bad) - limit} more (`dinolab embed` writes the full list to a log file)")
