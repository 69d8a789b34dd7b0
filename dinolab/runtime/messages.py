"""Messages and progress bars of training loops: stdlib ``logging`` for words, tqdm for bars.

Loops say what happens through :func:`say`, which logs to ``dinolab.run`` (INFO). That logger
writes above any progress bar (:class:`TqdmHandler`, to the current ``sys.stderr``) and does not
propagate, so a script sees the messages without configuring logging; replace its handler or set
``logging.getLogger("dinolab.run").propagate = True`` to route them elsewhere. Under torchrun only
rank 0 speaks. Library modules keep their own ``logging.getLogger("dinolab.<package>")``.

Examples:
    >>> say("resuming runs/x at step 3")     # doctest: +SKIP
    resuming runs/x at step 3
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Iterable

RUN_LOGGER = "dinolab.run"


class TqdmHandler(logging.Handler):
    """Writes records with ``tqdm.write`` (above the bars) to the ``sys.stderr`` of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never break the loop
            self.handleError(record)


def run_logger() -> logging.Logger:
    """The ``dinolab.run`` logger, with its default handler on first use."""
    logger = logging.getLogger(RUN_LOGGER)
    if not logger.handlers:
        logger.addHandler(TqdmHandler())
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def say(message: str, level: int = logging.INFO) -> None:
    """Tell the user ``message`` (rank 0 only)."""
    from .distributed import world

    if world()[1] == 0:
        run_logger().log(level, message)


def progress(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar on stderr, shown on a terminal when ``enabled`` (``disable=None``: tqdm's own terminal check)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=None if enabled else True, dynamic_ncols=True, **kwargs)
