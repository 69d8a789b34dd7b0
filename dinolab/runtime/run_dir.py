"""The run directory of a training loop: refusal to overwrite, a lock, and nothing changed before a start is accepted.

:class:`RunDirectory` is opened at the start of a run and committed once every check that can
refuse the start has passed (config, data, the checkpoint of a resume):

- ``open(resume=False)`` refuses a directory that already holds files (unless ``force``) and
  creates it; ``open(resume=True)`` requires the run's config file. Both take the run's lock
  (``run.lock``, an ``flock`` held for the life of the run and released by the kernel if the
  process dies), so a second process on the same run is refused with the holder's pid and host;
  the lock of a killed process is taken over, and said so.
- ``commit(config_text)`` is the first write: it removes what ``--force`` replaces and the
  temporary files of interrupted writes, then writes the config. A refused resume therefore leaves
  the run exactly as it was, and a start that fails before ``commit`` leaves no files behind
  (``abandon`` removes the directory if it made it), so the corrected rerun needs no ``--force``.

Examples:
    >>> run = RunDirectory("runs/x", files=("config.yaml", "checkpoint.pt"))   # doctest: +SKIP
    >>> run.open(resume=False, force=False)                                    # doctest: +SKIP
    >>> run.commit(config.to_yaml()); ...; run.close()                         # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import DinolabError
from ..io import atomic_save_text, remove_partial_writes

try:
    import fcntl
except ImportError:  # not POSIX: the lock falls back to the pid check alone
    fcntl = None

logger = logging.getLogger("dinolab.runtime")

LOCK_NAME = "run.lock"
SKIPPED_LOG = "skipped.log"  # what a job could not use, one "item<TAB>reason" line each
_HELD: dict[str, list] = {}  # real path of a lock file -> [file descriptor, holders in this process]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        record = json.loads(os.read(fd, 4096).decode() or "{}")
    except (ValueError, UnicodeDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


class RunLock:
    """An exclusive lock on one run directory, re-entrant within a process."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._key: str | None = None

    def _refuse(self, holder: dict) -> DinolabError:
        who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
        since = f" since {holder['started']}" if "started" in holder else ""
        return DinolabError(f"{self.path.parent} is in use by another process ({who}{since}, `{holder.get('command', '')}`"
                            f"); two processes on one run would interleave its checkpoints and metrics. Wait for it "
                            f"to finish or stop it; if that process no longer exists, delete {self.path}")

    def acquire(self, command: str = "") -> None:
        """Take the lock or raise :class:`~dinolab.errors.DinolabError` naming the holder."""
        key = os.path.realpath(self.path)
        if key in _HELD:
            _HELD[key][1] += 1
            self._key = key
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise DinolabError(f"cannot create the lock file {self.path}: {e.strerror}; the run directory must be "
                               f"writable") from None
        try:
            holder = _holder(fd)
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise self._refuse(_holder(fd)) from None
            elif holder.get("host") == socket.gethostname() and _alive(int(holder.get("pid", -1))):
                raise self._refuse(holder)
            if holder.get("pid") is not None:
                logger.warning("%s: taking over the lock of pid %s on %s, which stopped without releasing it",
                               self.path.parent, holder.get("pid"), holder.get("host"))
            record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                      "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        _HELD[key] = [fd, 1]
        self._key = key

    def release(self) -> None:
        """Give the lock back (the file stays, empty: unlinking it could let two processes hold it)."""
        if self._key is None:
            return
        entry = _HELD[self._key]
        entry[1] -= 1
        if entry[1] == 0:
            with contextlib.suppress(OSError):
                os.ftruncate(entry[0], 0)
            os.close(entry[0])  # closing releases the flock
            del _HELD[self._key]
        self._key = None


class RunDirectory:
    """One run's folder: ``files`` and ``folders`` are what the run writes (``--force`` replaces only those).

    Args:
        path: the run directory.
        files, folders: names of the run's outputs inside it.
        config_name: the run's config file.
        resume_marker: the file a resume requires (default: the config file).
        command: how to run the loop (``dinolab train``), named in the advice of errors.
        enabled: False on the processes that do not write (torchrun ranks other than 0): every method does nothing.
    """

    def __init__(self, path: str | os.PathLike, *, files: Sequence[str], folders: Sequence[str] = (),
                 config_name: str = "config.yaml", command: str = "dinolab train", enabled: bool = True,
                 resume_marker: str | None = None) -> None:
        self.path = Path(path)
        self.files, self.folders = tuple(files), tuple(folders)
        self.config_name, self.command, self.enabled = config_name, command, enabled
        self.resume_marker = resume_marker or config_name
        self.resume = self.force = False
        self.committed = False
        self._created = False
        self._lock = RunLock(self.path)

    @property
    def config_path(self) -> Path:
        return self.path / self.config_name

    @staticmethod
    def find_resume(path: str | os.PathLike, config_name: str = "config.yaml",
                    command: str = "dinolab train") -> Path:
        """``path/config_name`` of the run to resume (refusing a folder that holds no run)."""
        config = Path(path) / config_name
        if not config.is_file():
            raise DinolabError(f"{path} is not a run directory (no {config_name}); --resume takes the directory of "
                               f"an earlier `{command}` run")
        return config

    def _holds_files(self) -> bool:
        return self.path.is_dir() and any(p.name != LOCK_NAME for p in self.path.iterdir())

    def open(self, *, resume: bool, force: bool = False) -> None:
        """Check the directory can hold this run and lock it; writes nothing but the lock."""
        self.resume, self.force = resume, force
        if not self.enabled:
            return
        if resume:
            self.find_resume(self.path, self.resume_marker, self.command)
        elif self.path.exists() and not self.path.is_dir():
            raise DinolabError(f"{self.path} is a file, not a directory; choose another --out directory")
        elif self._holds_files() and not force:
            raise DinolabError(f"{self.path} already exists and holds files; continue that run with --resume {self.path}, start "
                               f"over in it with --force, or choose another --out directory")
        if not self.path.exists():
            try:
                self.path.mkdir(parents=True)
            except OSError as e:  # read-only file system, no permission, a file on the way
                raise DinolabError(f"cannot create the run directory {self.path}: {e.strerror}; choose an --out "
                                   f"directory where you can write") from None
            self._created = True
        self._lock.acquire(self.command)

    def commit(self, config_text: str | None) -> None:
        """The start is accepted: replace what ``--force`` replaces, drop partial writes, write the config
        (``None``: keep the saved one)."""
        if not self.enabled:
            return
        if self.force and not self.resume:
            for name in self.files:
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    (self.path / name).unlink()
            for name in self.folders:
                shutil.rmtree(self.path / name, ignore_errors=True)
        for name in (*self.files, self.config_name):  # what a kill -9 in the middle of a write left behind
            remove_partial_writes(self.path / name)
        if config_text is not None:
            atomic_save_text(self.config_path, config_text)
        self.committed = True

    def abandon(self) -> None:
        """The start failed before :meth:`commit`: release the lock and remove the directory if this run made it."""
        if not self.enabled:
            return
        created = self._created and not self.committed
        if created:
            with contextlib.suppress(OSError):
                (self.path / LOCK_NAME).unlink()
        self.close()
        if created:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only if empty: nothing the user put there is removed

    def close(self) -> None:
        """Release the lock (idempotent)."""
        self._lock.release()


def write_skipped_log(run_dir: str | os.PathLike, skipped: Iterable[tuple[object, str]]) -> Path:
    """``run_dir/skipped.log`` (atomically): one ``item\treason`` line per input the job left out."""
    path = Path(run_dir) / SKIPPED_LOG
    atomic_save_text(path, "".join(f"{item}\t{reason}\n" for item, reason in skipped))
    return path
