"""Stop signals of a run (pipeline/flow/signals.py), with real signals sent to this process:
handlers installed for the run and restored after it, the first signal recorded, raised as
:class:`RunInterrupted` (exit 128 + its number) only while ``raising``."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from pipeline.exc import RunInterrupted
from pipeline.flow.signals import STOP_SIGNALS, StopSignals

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


def _mine(signum, frame):  # a handler of the test's own, to see it restored
    raise AssertionError(f"signal {signum} reached the test's handler")


@pytest.fixture
def own_handlers():
    """This test's handlers on the stop signals for the test's duration (pytest's restored
    after)."""
    before = {signum: signal.signal(signum, _mine) for signum in STOP_SIGNALS}
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


def _send(signum: int, stop: StopSignals) -> None:
    """Send ``signum`` to this process and wait until its handler ran (Python runs handlers in
    the main thread between bytecodes; the sleep is interrupted)."""
    os.kill(os.getpid(), signum)
    deadline = time.monotonic() + 5
    while stop.received is None and time.monotonic() < deadline:
        time.sleep(0.01)


def test_the_stop_signals():
    assert set(STOP_SIGNALS) == {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@pytest.mark.usefixtures("own_handlers")
def test_handlers_are_installed_for_the_run_and_restored_after():
    with StopSignals() as stop:
        for signum in STOP_SIGNALS:
            assert signal.getsignal(signum) == stop._handle
    for signum in STOP_SIGNALS:
        assert signal.getsignal(signum) is _mine


@pytest.mark.usefixtures("own_handlers")
@pytest.mark.parametrize("signum", sorted(EXIT_CODES), ids=lambda s: signal.Signals(s).name)
def test_a_signal_before_any_task_ends_the_run_at_once(signum):
    with pytest.raises(RunInterrupted) as info:
        with StopSignals() as stop:
            _send(signum, stop)
            pytest.fail("the handler did not raise")
    assert stop.received == signum
    assert info.value.signum == signum and info.value.exit_code == EXIT_CODES[signum]
    assert str(info.value) == f"interrupted by {signal.Signals(signum).name}"
    assert isinstance(info.value, KeyboardInterrupt)  # passes through `except Exception`
    assert signal.getsignal(signum) is _mine  # restored on the way out


@pytest.mark.usefixtures("own_handlers")
def test_once_tasks_run_signals_are_recorded_the_first_kept():
    with StopSignals() as stop:
        stop.raising = False  # as the driver sets it once tasks exist
        _send(signal.SIGTERM, stop)
        assert stop.received == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert stop.received == signal.SIGTERM  # the first signal decides the exit code
    assert signal.getsignal(signal.SIGTERM) is _mine


@pytest.mark.usefixtures("own_handlers")
def test_deferred_records_and_then_raises_again():
    with StopSignals() as stop:
        with stop.deferred():
            assert stop.raising is False
            _send(signal.SIGHUP, stop)
        assert stop.received == signal.SIGHUP and stop.raising is True
        with pytest.raises(RunInterrupted) as info:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        # the recorded signal is still the first one; this one raised with its own number
        assert info.value.exit_code == 130 and stop.received == signal.SIGHUP


@pytest.mark.usefixtures("own_handlers")
def test_deferred_restores_raising_after_an_error():
    with StopSignals() as stop:
        stop.raising = False
        with pytest.raises(ValueError), stop.deferred():
            raise ValueError("cluster failed to start")
        assert stop.raising is False


@pytest.mark.usefixtures("own_handlers")
def test_outside_the_main_thread_nothing_is_installed():
    seen = {}

    def run():
        with StopSignals() as stop:
            seen["inside"] = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
            seen["previous"] = dict(stop._previous)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert seen["inside"] == dict.fromkeys(STOP_SIGNALS, _mine)
    assert seen["previous"] == {}
    assert all(signal.getsignal(signum) is _mine for signum in STOP_SIGNALS)
