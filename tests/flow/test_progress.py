"""Run progress (pipeline/flow/progress.py): bars on a terminal (a real pseudo-terminal here),
plain timestamped lines anywhere else (a StringIO standing in for a SLURM log), nothing when
disabled; an ETA from datasets finished in this run, unknown until there is a rate; a batches bar
that never shows a percentage against a total still growing. Timing is real, with small
intervals."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import time

import pytest

from pipeline.flow.progress import Progress, format_eta, is_interactive

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d lenspipe: (.*)$")


def lines(stream: io.StringIO) -> list[str]:
    """The progress lines written so far, without their timestamps."""
    found = []
    for line in stream.getvalue().splitlines():
        match = LINE.match(line)
        assert match, f"not a progress line: {line!r}"
        found.append(match.group(1))
    return found


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def terminal():
    """A pseudo-terminal: (the stream a program writes to, a function reading what it shows)."""
    leader, follower = pty.openpty()
    stream = os.fdopen(follower, "w", encoding="utf-8")
    shown = bytearray()

    def read() -> str:
        """What was shown until the output pauses (0.2 s), for at most a second."""
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and select.select([leader], [], [], 0.2)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown.extend(chunk)
        return shown.decode("utf-8", errors="replace")

    yield stream, read
    stream.close()
    os.close(leader)


def test_disabled_writes_nothing():
    stream = io.StringIO()
    progress = Progress(False, 3, stream=stream, every=0.01)
    progress.start()
    progress.batch_done()
    progress.dataset_done()
    progress.dataset_done(failed=True)
    time.sleep(0.05)
    progress.close()
    assert progress.mode == "off" and progress.bars is None
    assert stream.getvalue() == ""


def test_no_terminal_gives_plain_lines_at_start_each_tenth_and_end():
    stream = io.StringIO()
    progress = Progress(True, 20, stream=stream, every=60.0)
    assert progress.mode == "lines" and progress.bars is None
    progress.dataset_done()  # done before the run: counted, no line yet
    assert stream.getvalue() == ""
    progress.start()
    assert lines(stream) == [
        "1/20 datasets done, 0 operator batches computed, ETA unknown",
    ]
    progress.batch_done()
    progress.dataset_done()  # 2/20: a tenth
    progress.dataset_done(failed=True)  # 3/20: still the same tenth
    progress.batch_done()
    progress.dataset_done()  # 4/20: the next tenth
    shown = lines(stream)
    assert len(shown) == 3
    assert shown[1].startswith("2/20 datasets done, 1 operator batches computed, ETA")
    assert shown[2].startswith("4/20 datasets done (1 failed), 2 operator batches computed, ETA")
    for _ in range(16):
        progress.dataset_done()
    progress.close()
    final = lines(stream)[-1]
    assert final == "20/20 datasets done (1 failed), 2 operator batches computed"
    assert "\r" not in stream.getvalue()  # no bar redraws in a log


def test_lines_every_period_when_something_changed_and_a_heartbeat_when_nothing_did():
    stream = io.StringIO()
    every = 0.05
    progress = Progress(True, 1000, stream=stream, every=every)
    progress.start()
    assert len(lines(stream)) == 1
    progress.batch_done()
    wait_for(lambda: len(lines(stream)) == 2)
    assert lines(stream)[1].startswith("0/1000 datasets done, 1 operator batches computed")
    # nothing changes: no line for a while, then one every 10 periods (the run is alive)
    time.sleep(4 * every)
    assert len(lines(stream)) == 2
    wait_for(lambda: len(lines(stream)) == 3)
    progress.close()
    assert len(lines(stream)) == 3  # close adds no line when nothing changed since the last


def test_eta_from_datasets_finished_in_this_run():
    progress = Progress(True, 10, stream=io.StringIO(), every=60.0)
    for _ in range(4):
        progress.dataset_done()  # complete before this run: never in the rate
    progress.start()
    assert progress.eta_seconds() is None
    progress.dataset_done()
    assert progress.eta_seconds() is None  # one finish gives no rate
    time.sleep(0.2)
    progress.dataset_done()
    assert progress.first_finish is not None
    # 4 datasets left, one finished per (now - first finish) since the first
    now = progress.first_finish + 2.0
    assert progress.eta_seconds(now) == pytest.approx(4 * 2.0)
    real = progress.eta_seconds()
    assert real is not None and 4 * 0.2 <= real < 4 * 1.0
    progress.dataset_done(failed=True)
    assert progress.eta_seconds(progress.first_finish + 2.0) == pytest.approx(3 * 2.0 / 2)
    for _ in range(3):
        progress.dataset_done()
    assert progress.eta_seconds() == 0.0
    progress.close()


def test_terminal_gets_bars_with_an_eta_and_a_batch_count_without_total(terminal):
    stream, read = terminal
    assert is_interactive(stream)
    progress = Progress(True, 4, stream=stream, every=60.0)
    assert progress.mode == "bars"
    datasets, batches = progress.bars
    assert batches.total is None  # a total only of the batches known so far would sit at 99 %
    progress.start()
    shown = read()
    assert "datasets:   0%" in shown and "0/4" in shown and "ETA unknown" in shown
    for _ in range(7):
        progress.batch_done()
    progress.dataset_done()
    time.sleep(0.1)
    progress.dataset_done(failed=True)
    shown = read()
    assert "2/4" in shown and "1 failed" in shown
    assert re.search(r"ETA \d+ s", shown)
    progress.dataset_done()
    progress.dataset_done()
    progress.close()
    shown = read()
    assert "\r" in shown  # bars are redrawn in place
    assert "datasets: 100%" in shown and "4/4" in shown
    assert "batches : 7 computed" in shown
    assert "99%" not in shown
    assert "lenspipe:" not in shown  # no log lines on a terminal


def test_bars_refresh_their_eta_between_events(terminal, monkeypatch):
    import pipeline.flow.progress as module

    monkeypatch.setattr(module, "BAR_REFRESH_SECONDS", 0.05)
    stream, read = terminal
    progress = Progress(True, 100, stream=stream)
    progress.start()
    progress.dataset_done()
    progress.dataset_done()
    read()
    time.sleep(0.3)
    assert "ETA" in read()  # redrawn by the refresh thread, though nothing happened
    progress.close()


def test_is_interactive():
    assert not is_interactive(io.StringIO())
    assert not is_interactive(object())
    closed = io.StringIO()
    closed.close()
    assert not is_interactive(closed)


def test_format_eta():
    assert format_eta(None) == "ETA unknown"
    assert format_eta(12.4) == "ETA 12 s"
    assert format_eta(-1.0) == "ETA 0 s"
    assert format_eta(180) == "ETA 3 min"
    assert format_eta(2.5 * 3600) == "ETA 2.5 h"
    assert format_eta(3 * 86400) == "ETA 3.0 d"


def test_a_broken_log_stream_turns_progress_off():
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("disk full")

    progress = Progress(True, 2, stream=Broken(), every=60.0)
    progress.start()  # the write fails: progress stops, the run goes on
    assert progress.mode == "off"
    progress.dataset_done()
    progress.close()
