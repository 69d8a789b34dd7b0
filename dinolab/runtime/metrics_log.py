"""``metrics.jsonl``: one JSON object per line, one line per training step or evaluation.

Every record carries ``step``, the number of optimizer iterations completed when it was written
(a training step's record has ``step = iteration + 1``; an evaluation after ``n`` iterations has
``step = n``). Lines are flushed as they are written, so a killed run loses at most the line being
written. On resume, :meth:`MetricsLog.truncate` drops every record past the checkpoint's
iteration (and a torn last line), so the log of a resumed run has each step exactly once.

Examples:
    >>> log = MetricsLog("runs/x/metrics.jsonl")            # doctest: +SKIP
    >>> log.write({"step": 1, "loss": 8.3}); log.close()    # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
from pathlib import Path
from typing import Any

from ..errors import DinolabError
from ..io import atomic_save_text

METRICS_NAME = "metrics.jsonl"  # its name in every run directory


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep them readable
    return v


def _step(record: dict[str, Any]) -> int | None:
    step = record.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All complete records of a ``metrics.jsonl``: a torn, undecodable or non-JSON line, or a record without a
    valid ``step`` (a count >= 0), is skipped."""
    records = []
    p = Path(path)
    if not p.is_file():
        return records
    for raw in p.read_bytes().splitlines():
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and _step(record) is not None:
            records.append(record)
    return records


class MetricsLog:
    """Append-only JSON-lines log with ``truncate(step)`` for resuming.

    ``resume_command`` (e.g. ``dinolab train --resume RUN``) is what an out-of-disk error tells the user to
    run once space is freed; None for a job that writes no checkpoint, whose advice is to run it again.
    """

    def __init__(self, path: str | os.PathLike, enabled: bool = True, resume_command: str | None = None) -> None:
        self.path = Path(path)
        self.enabled = enabled  # False: writes and truncation do nothing (ranks other than 0)
        self.resume_command = resume_command
        self._file = None

    def truncate(self, step: int) -> None:
        """Keep only the records with ``step <= step`` (rewritten atomically)."""
        if not self.enabled:
            return
        self.close()
        if self.path.is_dir():  # a folder in its place: kept aside, the log starts again
            from .checkpoint import move_aside

            move_aside(self.path)
        kept = [r for r in read_metrics(self.path) if _step(r) <= step]
        atomic_save_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "a")
            self._file.write(json.dumps({k: _json_value(v) for k, v in record.items()}) + "\n")
            self._file.flush()
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            with contextlib.suppress(OSError):  # closing would flush the same bytes into the same full disk
                self._file.close()
            self._file = None
            if self.resume_command is None:
                advice = (f"the job wrote no checkpoint, so there is nothing to resume: free some disk space and "
                          f"run the same command again (add --force to replace the partial {self.path.parent})")
            else:
                advice = (f"the last checkpoint in {self.path.parent} is intact. Free some disk space and continue "
                          f"with `{self.resume_command}`")
            raise DinolabError(f"no space left on the device while writing {self.path}; {advice}") from e

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
