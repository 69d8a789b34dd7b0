"""What a resumable training loop opens around its steps: the metrics log and the stop signals.

``dinolab align``, ``dinolab finetune`` and ``dinolab segment fit`` share this; ``dinolab train``'s
:class:`~dinolab.train.trainer.Trainer` agrees its stops between ranks and keeps its own.

Examples:
    >>> with resumable_loop(run, 0, f"dinolab align --resume --out {run}", print) as (metrics, stops):  # doctest: +SKIP
    ...     for step in steps:
    ...         metrics.write({"step": step, "loss": train_step()})
    ...         if stops.reason: break
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator

from .metrics_log import METRICS_NAME, MetricsLog
from .signals import StopSignals

__all__ = ["resumable_loop"]


@contextlib.contextmanager
def resumable_loop(run_dir: str | os.PathLike | None, step: int, resume_command: str,
                   say: Callable[[str], None] | None = None) -> Iterator[tuple[MetricsLog, StopSignals]]:
    """``run_dir/metrics.jsonl`` cut back to ``step`` (a resumed run) and SIGTERM / Ctrl-C handlers installed.

    ``resume_command`` (e.g. ``dinolab align --resume --out RUN``) is what an out-of-disk error tells the
    user to run once space is freed.

    Without a run directory (an in-memory job) nothing is written and no handler is installed: with
    no checkpoint to save, Ctrl-C keeps its usual meaning and ``stops.reason`` stays None.
    """
    metrics = MetricsLog(Path(run_dir or os.devnull) / METRICS_NAME, enabled=run_dir is not None,
                         resume_command=resume_command)
    metrics.truncate(step)
    stops = StopSignals(say=say)
    try:
        with stops if run_dir is not None else contextlib.nullcontext():
            yield metrics, stops
    finally:
        metrics.close()
