"""Driver loss: SIGKILL the ``lenspipe run`` process mid-run; re-running the same command takes
over its stale lock, recomputes only the unfinished batches (counted in the summary) and leaves
the store identical to an undisturbed run."""

from __future__ import annotations

import signal

import psutil
import pytest

from pipeline.io.store import batches_done, list_datasets, open_store
from tests.reliability.support import (
    alive,
    assert_stores_equal,
    descendants,
    logs,
    marker_files,
    owned,
    read_lock,
    reap,
    run_cli,
    start_run,
    summary_counts,
    wait_for,
    write_config,
)

# processes are killed here: a hang must fail the test, not the CI job
pytestmark = pytest.mark.timeout(300)


def status_has_operator(root, name: str) -> bool:
    return "sparse_operator" in root["datasets"][name]


def test_sigkill_the_driver_then_rerun(busy_manifest, busy_reference, tmp_path):
    reference, n_batches = busy_reference
    store = tmp_path / "store.zarr"
    config = write_config(tmp_path / "survey.yaml", busy_manifest, store)

    with owned(start_run(config, tmp_path, "first")) as first:
        # some batches written, most still to do
        wait_for(
            lambda: len(marker_files(store)) >= 10,
            timeout=120,
            what="10 operator batches",
            process=first,
        )
        workers = descendants(first.pid)
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=30) == -signal.SIGKILL
        # its worker processes end by themselves once their driver (scheduler, nannies) is gone
        # (any that do not are killed here, by pid, before the store is examined, and fail it)
        assert workers
        assert reap(workers, timeout=20) == [], "worker processes outlived their driver"
        assert not alive(workers)
    assert "Run " not in logs(tmp_path, "first")  # it never got to its summary

    # what the dead driver left: its lock (a dead pid on this host) and a partial store
    lock = read_lock(store)
    assert lock is not None and lock["pid"] == first.pid and not psutil.pid_exists(first.pid)
    root = open_store(store)
    statuses = list_datasets(store)
    assert set(statuses.values()) <= {"prepared", "complete", "preparing"}
    assert list(statuses.values()).count("complete") < 8
    # a dataset without a status was being written by its prepare task (which may already have
    # written batch 0): the driver never recorded it, so the re-run prepares it again
    recorded = [n for n, s in statuses.items() if s in ("prepared", "complete")]
    done = {name: batches_done(root, name) for name in recorded if status_has_operator(root, name)}
    done_before = sum(int(d.sum()) for n, d in done.items() if statuses[n] == "prepared")
    finished = sum(d.size for n, d in done.items() if statuses[n] == "complete")
    recorded_markers = [m for m in marker_files(store) if m.parents[3].name in recorded]
    assert done_before + finished == len(recorded_markers)
    assert 0 < done_before and done_before + finished < n_batches

    second = run_cli(config)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "taking over the stale run lock" in second.stderr
    counts = summary_counts(second.stdout)
    assert counts["operator batches skipped (done before)"] == done_before
    assert counts["operator batches computed"] == n_batches - done_before - finished
    assert counts["operator batches found damaged (redone)"] == 0
    assert counts["failed"] == 0
    assert read_lock(store) is None  # released at the end
    assert_stores_equal(store, reference)
