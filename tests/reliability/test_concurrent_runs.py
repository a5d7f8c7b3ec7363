"""Concurrent runs on one store: the run lock refuses a second driver while the first is active
(and the first run's result is unaffected); the stale-lock rule lets a new run take over the lock
of a dead or silent one, and only those."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from pipeline.cli import main
from pipeline.exc import StoreError
from pipeline.io.store import (
    LOCK_NAME,
    SETTLE_SECONDS,
    acquire_run_lock,
    create_store,
    list_datasets,
    settle_seconds,
)
from pipeline.mock import simulate_survey
from tests.reliability.support import (
    assert_stores_equal,
    logs,
    owned,
    read_lock,
    run_cli,
    start_run,
    summary_counts,
    wait_for,
    write_config,
)

# processes are killed here: a hang must fail the test, not the CI job
pytestmark = pytest.mark.timeout(300)


def test_second_run_on_an_active_store_is_refused(busy_manifest, busy_reference, tmp_path):
    reference, n_batches = busy_reference
    store = tmp_path / "store.zarr"
    # one worker: the first run lasts long enough for the second to start while it is active
    config = write_config(tmp_path / "survey.yaml", busy_manifest, store, n_workers=1)

    with owned(start_run(config, tmp_path, "first")) as first:
        lock = wait_for(lambda: read_lock(store), timeout=120, what="the run lock", process=first)
        assert lock["pid"] == first.pid and lock["host"] == socket.gethostname()
        second = run_cli(config, timeout=120)
        assert first.poll() is None, "the first run ended before the second was refused"
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"in use by run {lock['run_id']}" in second.stderr
        assert f"pid {first.pid}" in second.stderr and "wait for it to finish" in second.stderr
        assert "Traceback" not in second.stderr and "Run " not in second.stdout
        assert first.wait(timeout=300) == 0, logs(tmp_path, "first")

    counts = summary_counts(logs(tmp_path, "first"))
    assert counts["operator batches computed"] == n_batches
    assert counts["operator batches skipped (done before)"] == 0
    assert read_lock(store) is None
    assert_stores_equal(store, reference)


# ---------------------------------------------------------------------------------------- stale rule
def _plant_lock(store, **content) -> dict:
    lock = {
        "run_id": "20260101T000000Z-planted",
        "token": "planted",
        "host": "another-host.example",
        "pid": 4242,
        "acquired": time.time(),
        "heartbeat": time.time(),
        **content,
    }
    (store / LOCK_NAME).write_text(json.dumps(lock))
    return lock


@pytest.fixture
def small_survey(tmp_path):
    """Two small lenses (one worker), store created, no lock: (config path, store path)."""
    config = simulate_survey(tmp_path, 2, seed=3, shape_range=(48, 56), n_workers=1)
    store = tmp_path / "survey.zarr"
    create_store(store)
    return config, store


def test_a_silent_lock_from_another_host_is_taken_over(small_survey, caplog):
    config, store = small_survey
    _plant_lock(store, heartbeat=time.time() - 3600)  # an hour without heartbeat
    with caplog.at_level(logging.WARNING, logger="pipeline.io.store.lock"):
        code = main(["run", str(config), "--no-progress"])
    assert code == 0
    assert "taking over the stale run lock of run 20260101T000000Z-planted" in caplog.text
    assert list_datasets(store) == {"lens_00003": "complete", "lens_00004": "complete"}
    assert read_lock(store) is None


def test_a_live_lock_is_refused_with_its_holder_named(small_survey, capsys):
    config, store = small_survey
    planted = _plant_lock(store)  # another host, fresh heartbeat: its owner may be running
    code = main(["run", str(config), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "in use by run 20260101T000000Z-planted" in err and "another-host.example" in err
    assert read_lock(store) == planted  # untouched
    assert list_datasets(store) == {}  # nothing was started


def test_stale_rule_on_this_host(small_survey):
    _, store = small_survey
    root = create_store(store)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with owned(sleeper):
        here = socket.gethostname()
        # a live process on this host with a fresh heartbeat holds the store
        _plant_lock(store, host=here, pid=sleeper.pid)
        with pytest.raises(StoreError, match=f"pid {sleeper.pid}"):
            acquire_run_lock(root, "second", settle=0)
        # ... unless it has been silent for longer than stale_after
        _plant_lock(store, host=here, pid=sleeper.pid, heartbeat=time.time() - 600)
        acquire_run_lock(root, "second", settle=0).release()
    # a dead process on this host: stale at once, whatever its heartbeat
    _plant_lock(store, host=here, pid=sleeper.pid)
    lock = acquire_run_lock(root, "third", settle=0)
    assert read_lock(store)["run_id"] == "third"
    lock.release()
    # a lock file that is not JSON (a torn write) is stale
    (store / LOCK_NAME).write_text('{"run_id": "x", "tok')
    acquire_run_lock(root, "fourth", settle=0).release()
    assert not (store / LOCK_NAME).exists()


def test_heartbeat_thread_keeps_a_busy_driver_locked_in(small_survey):
    """A driver waiting on one long task (or on batch jobs to start) receives no results, so it
    cannot refresh its lock itself: the heartbeat thread does, and a second driver stays out."""
    _, store = small_survey
    root = create_store(store)
    first = acquire_run_lock(root, "first", settle=0, interval=0.1).start_heartbeat()
    try:
        acquired = read_lock(store)["heartbeat"]
        time.sleep(1.0)  # the "driver" does nothing meanwhile
        assert read_lock(store)["heartbeat"] > acquired + 0.5
        with pytest.raises(StoreError, match="in use by run first"):
            acquire_run_lock(root, "second", stale_after=0.6, settle=0)
    finally:
        first.release()
    assert read_lock(store) is None


def test_a_taken_over_lock_is_never_overwritten_by_its_old_holder(small_survey):
    _, store = small_survey
    root = create_store(store)
    stalled = acquire_run_lock(root, "stalled", settle=0)  # no heartbeat thread: it "hangs"
    time.sleep(0.3)
    successor = acquire_run_lock(root, "successor", stale_after=0.2, settle=0)
    stalled.heartbeat(force=True)  # the stalled driver wakes up
    assert stalled.lost
    assert read_lock(store)["run_id"] == "successor"
    stalled.release()  # must not remove the successor's lock
    assert read_lock(store)["run_id"] == "successor"
    successor.release()
    assert read_lock(store) is None
    assert os.getpid() == stalled.content["pid"] == successor.content["pid"]


# ---------------------------------------------------------------------------------------- settle
def test_settle_time_only_where_the_lock_write_can_race(tmp_path):
    from zarr.storage import FsspecStore, LocalStore, MemoryStore

    local = LocalStore(tmp_path)
    assert settle_seconds(local, took_over=False) == 0.0  # exclusive create: atomic
    assert settle_seconds(MemoryStore(), took_over=False) == 0.0
    assert settle_seconds(local, took_over=True) == SETTLE_SECONDS > 0  # overwrite: may race
    remote = FsspecStore.from_url("memory://lenspipe-settle-test")
    assert settle_seconds(remote, took_over=False) == SETTLE_SECONDS


def _race_for_lock(store: str, run_id: str, barrier) -> str:
    from pipeline.io.store import open_store

    root = open_store(store, mode="r+")
    barrier.wait()
    try:
        acquire_run_lock(root, run_id)  # default settle: none on a local store
    except StoreError:
        return "refused"
    return "held"


def test_drivers_racing_for_a_local_lock_without_settle_time(tmp_path):
    """Four processes released at once: the exclusive create lets exactly one hold the lock."""
    import multiprocessing

    store = tmp_path / "race.zarr"
    create_store(store)
    context = multiprocessing.get_context("spawn")
    for attempt in range(3):
        barrier = context.Manager().Barrier(4)
        with context.Pool(4) as pool:
            outcomes = pool.starmap(
                _race_for_lock, [(str(store), f"run-{attempt}-{i}", barrier) for i in range(4)]
            )
        assert sorted(outcomes) == ["held", "refused", "refused", "refused"]
        holder = read_lock(store)["run_id"]
        assert holder.startswith(f"run-{attempt}-")
        (store / LOCK_NAME).unlink()  # the holder's process is gone: start the next race clean
