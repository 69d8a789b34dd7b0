"""Safe file output: atomic writes and refusal to overwrite.

Every file dinolab writes goes through :func:`atomic_write` (temporary file in
the same folder, fsync, rename), so a crash or a full disk never leaves a
half-written file in place of a good one. Commands that write user-visible
outputs call :func:`check_writable` first, so nothing the user already has is
overwritten without ``--force``.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import math
import os
import shutil
import tempfile
from pathlib import Path, PurePath
from typing import Any, Iterator

from .errors import DinolabError


def check_writable(path: str | os.PathLike, force: bool = False) -> Path:
    """Return ``path`` as a Path, refusing an existing file unless ``force``, a folder in its place, and a
    place where it cannot be written (under a file, in a read-only folder), before any work is done."""
    p = Path(path)
    if p.is_dir():
        raise DinolabError(f"{p} is a folder; give the path of a file to write (e.g. {p / 'out'}{p.suffix})")
    if p.exists() and not force:
        raise DinolabError(f"{p} already exists; choose another output path or pass --force to overwrite it")
    existing = p.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DinolabError(f"cannot write {p}: {existing} is a file, not a folder; choose another output path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DinolabError(f"cannot write {p}: the folder {existing} is not writable (read-only or another "
                           f"user's); choose another output path")
    return p


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, keep_previous: str | os.PathLike | None = None
                 ) -> Iterator:
    """Open a temporary file next to ``path``; on success fsync and rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is untouched. With ``keep_previous``, an
    existing ``path`` is renamed to it once the new file is complete, just before the new file takes its
    place: until then the old file is untouched, afterwards both are whole, separate files (a hard link
    would share one inode with the file being replaced, which an in-place damage would hit twice).
    A full disk (ENOSPC) is reported as a :class:`DinolabError` naming the file.

    Text modes write UTF-8 with ``surrogateescape``: a file name that is not valid UTF-8 (Linux allows
    any bytes; Python decodes them to lone surrogates, ``os.fsdecode``) is written back as its original
    bytes, so lists of paths round-trip through :func:`read_text_lines`.
    """
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    except OSError as e:
        raise DinolabError(f"cannot write {p}: {e.strerror} ({e.filename}); choose another output path") from e
    try:
        text = {} if "b" in mode else {"encoding": "utf-8", "errors": "surrogateescape"}  # see below
        with os.fdopen(fd, mode, **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the mode a plain open() would
        if keep_previous is not None and p.exists():
            os.replace(p, keep_previous)
        os.replace(tmp, p)
        _fsync_dir(p.parent)
    except BaseException as e:
        written = _size_quietly(tmp)
        _remove_quietly(tmp)
        full = _disk_full_error(e)
        if full is not None:  # also when a writer wraps it (torch.save: RuntimeError "unexpected pos")
            free = _free_bytes(p.parent)
            raise DinolabError(f"no space left on the device while writing {p} ({_mb(written)} written, "
                               f"{_mb(free)} free there: it needs more than {_mb(written)}); the previous file "
                               f"(if any) is intact and the partial one was removed. Free some disk space and try "
                               f"again") from full
        raise


def escapes_root(entry: str) -> bool:
    """Whether the relative path ``entry`` (from a file list, an index) could leave the folder it is read
    against: an absolute path, a drive, or a ``..`` that climbs above the start. A lexical check; symlinks
    inside the folder belong to whoever owns it and are followed."""
    normal = os.path.normpath(entry)
    return (os.path.isabs(entry) or bool(PurePath(entry).drive) or normal == ".."
            or normal.startswith(".." + os.sep) or normal.startswith("../"))


def atomic_save_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_save_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def read_text_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a text file that holds paths: UTF-8, where bytes that are not UTF-8 (a file name from
    a camera or an archive) decode as :func:`os.fsdecode` does, so they name the same file again.

    Raises:
        UnicodeDecodeError: when the file holds NUL bytes (a binary file, not a list).
    """
    data = Path(path).read_bytes()
    if b"\0" in data:
        raise UnicodeDecodeError("utf-8", data[:1], 0, 1, "a NUL byte: binary data, not text")
    return data.decode("utf-8", errors="surrogateescape").splitlines()


def remove_partial_writes(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write` left next to ``path`` (returns them).

    A process killed while writing (``kill -9``, power loss) leaves its temporary file behind; the
    target itself is intact. Call this only where no other process is writing ``path``, e.g. when a
    run is resumed.
    """
    p = Path(path)
    stale = sorted(p.parent.glob(f".{glob.escape(p.name)}.*tmp"))  # "*tmp": also a fixed ".NAME.tmp"
    for f in stale:
        _remove_quietly(str(f))
    return stale


def json_value(x: Any) -> Any:
    """``x`` with numpy arrays and scalars as lists and numbers, dict keys as strings, NaN / inf as None (JSON has
    no NaN)."""
    import numpy as np

    if isinstance(x, dict):
        return {str(k): json_value(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_value(v) for v in x]
    if isinstance(x, np.ndarray):
        return json_value(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None  # JSON has no NaN
    return x


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _disk_full_error(e: BaseException) -> OSError | None:
    """The ENOSPC error behind ``e`` (``e`` itself or what it was raised from / during), if any."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return e
        e = e.__cause__ or e.__context__
    return None


def _size_quietly(p: str) -> int:
    try:
        return os.path.getsize(p)
    except OSError:
        return 0


def _free_bytes(d: Path) -> int:
    try:
        return shutil.disk_usage(d).free
    except OSError:
        return 0


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def _remove_quietly(p: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(p)
