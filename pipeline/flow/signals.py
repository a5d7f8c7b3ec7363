"""Stop signals of a run: SIGINT, SIGTERM and SIGHUP stop submitting, cancel what is in flight,
record the partial summary, release the lock and end with exit 128 + the signal number."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from pipeline.exc import RunInterrupted

__all__ = ["STOP_SIGNALS", "StopSignals"]

# exit status of a run stopped by a signal: 128 + its number, as a shell reports it
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class StopSignals:
    """Catches SIGINT, SIGTERM and SIGHUP for the duration of a run (main thread only).

    The first signal is recorded in ``received``; while ``raising`` (planning, before any task
    exists) the handler also raises :class:`RunInterrupted` at once. Once tasks run, the driver
    checks ``received`` between results (at least every 0.1 s) and stops cleanly."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.raising = True
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if self.raising:
            raise RunInterrupted(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Record, never raise, inside the block (cluster start: half-built objects)."""
        raising, self.raising = self.raising, False
        try:
            yield
        finally:
            self.raising = raising
