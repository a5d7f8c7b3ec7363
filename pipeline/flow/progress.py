"""How far a run is, for a person at a terminal and for a log file: :class:`Progress`.

On a terminal (or in a Jupyter kernel) two tqdm bars: datasets (done of total, failed, ETA) and
operator batches (computed, rate). Anywhere else (a SLURM log, a pipe, a file) no bars, whose
redraws fill log files, but a plain line now and then::

    2026-12-01 10:42:07 lenspipe: 12/40 datasets done (1 failed), 230 operator batches computed, ETA 3 min

at most every ``every`` seconds when something changed (every ten times that when nothing did,
so a log shows the run is alive), at each tenth of the datasets, and once at the end.

The ETA is the datasets left over the rate at which datasets finished in this run, measured from
the first one finished to now; it is unknown until two have finished. Datasets accounted for
before :meth:`Progress.start` (complete before, problems found at discovery, resumed datasets
only finalized) count as done, never in the rate. The batches bar shows no total: the batches of
a dataset are known only once it is prepared, and they run before the next prepare, so a total
of the batches known so far stayed just ahead of those done (the old bar sat at 99 % the whole
run, with an ETA measured against a total that kept growing).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

__all__ = ["Progress", "format_eta", "is_interactive"]

BAR_REFRESH_SECONDS = 1.0  # the bars' ETA is recomputed this often between events
QUIET_FACTOR = 10  # a line every QUIET_FACTOR * every seconds even when nothing changed


def is_interactive(stream: Any) -> bool:
    """Whether ``stream`` shows redrawn bars to a person: a terminal, or a Jupyter kernel's
    output stream (which renders carriage returns)."""
    if "ipykernel" in type(stream).__module__:
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def format_eta(seconds: float | None) -> str:
    """``"ETA 45 s"``, ``"ETA 3 min"``, ``"ETA 2.5 h"``, ``"ETA 1.2 d"``; ``"ETA unknown"`` for
    ``None``."""
    if seconds is None:
        return "ETA unknown"
    if seconds < 90:
        return f"ETA {max(seconds, 0):.0f} s"
    if seconds < 90 * 60:
        return f"ETA {seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"ETA {seconds / 3600:.1f} h"
    return f"ETA {seconds / 86400:.1f} d"


class Progress:
    """Progress of a run over ``n_datasets`` datasets, shown on ``stream`` (default: stderr) as
    bars where it is interactive (:func:`is_interactive`), else as a line at most every
    ``every`` seconds; nothing when not ``enabled``.

    The driver calls :meth:`dataset_done` for every dataset accounted for (complete, failed,
    skipped as complete before, a problem at discovery), :meth:`batch_done` for every operator
    batch computed, :meth:`start` once its bookkeeping is over and tasks run (from then on
    finished datasets measure the rate), and :meth:`close` at the end. Thread-safe: a
    background thread writes the periodic lines and refreshes the bars.
    """

    def __init__(
        self,
        enabled: bool,
        n_datasets: int,
        *,
        stream: TextIO | None = None,
        every: float = 30.0,
    ) -> None:
        self.stream: TextIO = stream if stream is not None else sys.stderr
        self.n_datasets = n_datasets
        self.every = every
        self.mode = "off" if not enabled else "bars" if is_interactive(self.stream) else "lines"
        self.done = self.failed = self.batches = 0
        self.started: float | None = None
        self.finished_in_run = 0
        self.first_finish: float | None = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_line = time.monotonic()
        self._last_shown: tuple[int, int, int] | None = None
        self._tenth = 0
        self.bars: tuple[Any, Any] | None = None
        if self.mode == "bars":
            from tqdm import tqdm

            self.bars = (
                tqdm(
                    total=n_datasets,
                    desc="datasets",
                    unit="ds",
                    position=0,
                    file=self.stream,
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                    "[{elapsed}{postfix}]",
                ),
                tqdm(
                    total=None,
                    desc="batches ",
                    unit="batch",
                    position=1,
                    file=self.stream,
                    bar_format="{desc}: {n_fmt} computed [{elapsed}, {rate_fmt}]",
                ),
            )
            self.bars[0].set_postfix_str(self._postfix(time.monotonic()), refresh=True)
        if self.mode != "off":
            self._thread = threading.Thread(
                target=self._tick, name="lenspipe-progress", daemon=True
            )
            self._thread.start()

    # ------------------------------------------------------------------------------ events
    def start(self) -> None:
        """Tasks run from now: datasets finished from now on measure the ETA's rate. In log mode
        writes the first line (the state the run starts from)."""
        with self._lock:
            self.started = time.monotonic()
            if self.mode == "lines":
                self._write_line(self.started)
            self._tenth = self._tenths()

    def dataset_done(self, *, failed: bool = False) -> None:
        """One dataset accounted for: complete, or ``failed``."""
        with self._lock:
            now = time.monotonic()
            self.done += 1
            self.failed += failed
            if self.started is not None:
                self.finished_in_run += 1
                if self.first_finish is None:
                    self.first_finish = now
            if self.bars:
                self.bars[0].set_postfix_str(self._postfix(now), refresh=False)
                self.bars[0].update(1)
            elif self.mode == "lines" and self.started is not None:
                tenth = self._tenths()
                if tenth > self._tenth:
                    self._tenth = tenth
                    self._write_line(now)

    def batch_done(self) -> None:
        """One operator batch computed."""
        with self._lock:
            self.batches += 1
            if self.bars:
                self.bars[1].update(1)

    def close(self) -> None:
        """Stop the periodic thread; close the bars, or write the last line."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self.bars:
                self.bars[0].set_postfix_str(self._postfix(time.monotonic()), refresh=True)
                for bar in self.bars:
                    bar.close()
                self.bars = None
            elif self.mode == "lines" and self._last_shown != self._state():
                self._write_line(time.monotonic())
            self.mode = "off"

    # ------------------------------------------------------------------------------ ETA
    def eta_seconds(self, now: float | None = None) -> float | None:
        """Seconds left: the datasets left over the rate at which datasets finished since the
        first one finished in this run; ``None`` until two have finished (or no time passed),
        0 when none is left."""
        left = self.n_datasets - self.done
        if left <= 0:
            return 0.0
        if self.first_finish is None or self.finished_in_run < 2:
            return None
        now = time.monotonic() if now is None else now
        elapsed = now - self.first_finish
        if elapsed <= 0:
            return None
        return left * elapsed / (self.finished_in_run - 1)

    def line(self, now: float | None = None) -> str:
        """The state as one line (no timestamp): ``"12/40 datasets done (1 failed), 230
        operator batches computed, ETA 3 min"``."""
        failed = f" ({self.failed} failed)" if self.failed else ""
        text = (
            f"{self.done}/{self.n_datasets} datasets done{failed}, "
            f"{self.batches} operator batches computed"
        )
        if self.done < self.n_datasets:
            text += ", " + format_eta(self.eta_seconds(now))
        return text

    # ------------------------------------------------------------------------------ output
    def _postfix(self, now: float) -> str:
        parts = [f"{self.failed} failed"] if self.failed else []
        if self.done < self.n_datasets:
            parts.append(format_eta(self.eta_seconds(now)))
        return ", ".join(parts)

    def _tenths(self) -> int:
        return 10 * self.done // self.n_datasets if self.n_datasets else 10

    def _state(self) -> tuple[int, int, int]:
        return (self.done, self.failed, self.batches)

    def _write_line(self, now: float) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            self.stream.write(f"{stamp} lenspipe: {self.line(now)}\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken log: progress is not worth a crash
            self.mode = "off"
        self._last_line, self._last_shown = now, self._state()

    def _tick(self) -> None:
        interval = BAR_REFRESH_SECONDS if self.mode == "bars" else self.every
        while not self._stop.wait(min(interval, self.every)):
            with self._lock:
                now = time.monotonic()
                if self.bars:
                    self.bars[0].set_postfix_str(self._postfix(now), refresh=True)
                elif self.mode == "lines" and self.started is not None:
                    changed = self._last_shown != self._state()
                    quiet = now - self._last_line >= QUIET_FACTOR * self.every
                    if (changed and now - self._last_line >= self.every) or quiet:
                        self._write_line(now)
