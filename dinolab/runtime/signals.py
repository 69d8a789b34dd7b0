"""SIGTERM / Ctrl-C for training loops: finish the step, save, stop; a second Ctrl-C aborts.

:class:`StopSignals` records the first SIGTERM or SIGINT as the reason to stop after the current
step (the loop checks :attr:`StopSignals.reason`); a second SIGINT raises ``KeyboardInterrupt``.
Data-loader worker processes are forked with the handler installed and the terminal sends Ctrl-C
to the whole process group: the handler acts only in the process that installed it, so the
message is said once, not once per worker.

Examples:
    >>> stops = StopSignals(say=print)
    >>> with stops:                       # doctest: +SKIP
    ...     for step in loop:
    ...         if stops.reason: break
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, Callable

__all__ = ["StopSignals", "guarded"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def guarded(handler: Callable[[int, Any], None]) -> Callable[[int, Any], None]:
    """``handler`` that does nothing in processes forked after it was made (data-loader workers)."""
    pid = os.getpid()

    def handle(signum: int, frame: Any) -> None:
        if os.getpid() == pid:
            handler(signum, frame)

    return handle


def install(handler: Callable[[int, Any], None]) -> dict[int, Any]:
    """Install ``handler`` (guarded) for SIGTERM and SIGINT from the main thread; returns the old handlers
    (``{}`` off the main thread, where Python cannot set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    handle = guarded(handler)
    return {s: signal.signal(s, handle) for s in STOP_SIGNALS}


def restore(old: dict[int, Any]) -> None:
    for s, h in old.items():
        signal.signal(s, h)


class StopSignals:
    """The first SIGTERM / SIGINT sets :attr:`reason` (``"SIGTERM"`` / ``"SIGINT"``) and says ``message``; a
    second SIGINT raises ``KeyboardInterrupt``. A context manager installing and restoring the handlers."""

    def __init__(self, say: Callable[[str], None] | None = None,
                 message: str = "{signal} received: finishing the current step, then saving a checkpoint "
                                "(press Ctrl-C again to abort without saving)") -> None:
        self.reason: str | None = None
        self.say, self.message = say, message
        self._old: dict[int, Any] = {}

    def handle(self, signum: int, frame: Any = None) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name
        if self.say is not None:
            self.say(self.message.format(signal=self.reason))

    def __enter__(self) -> StopSignals:
        self._old = install(self.handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        restore(self._old)
        self._old = {}
