"""No endless wait: inputs that would block a read (a FIFO, ``/dev/zero``) are refused at
discovery; a stopped worker's task is taken from it after ``run.task_timeout``; a run whose
workers can never run a task ends after ``cluster.start_timeout`` with exit 1, its lock
released and its store consistent."""

from __future__ import annotations

import csv
import os
import signal
import time

import psutil
import pytest

from pipeline.io.store import list_datasets
from tests.reliability.support import (
    assert_stores_equal,
    descendants,
    logs,
    marker_files,
    owned,
    read_lock,
    run_cli,
    start_run,
    summary_counts,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.timeout(400)


def _rewrite(manifest, change) -> None:
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    fields = list(rows[0])
    for row in rows:
        change(row)
        fields += [key for key in row if key not in fields]
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def small_manifest(tmp_path):
    from pipeline.mock import simulate_survey

    simulate_survey(tmp_path / "in", 3, seed=60, shape_range=(36, 36), psf_shapes=(5,))
    return tmp_path / "in" / "manifest.csv"


def test_fifo_and_dev_zero_inputs_fail_at_discovery_and_nothing_blocks(small_manifest, tmp_path):
    fifo = tmp_path / "noise.fifo"
    os.mkfifo(fifo)

    def change(row):
        if row["name"] == "lens_00060":
            row["noise_map"] = os.fspath(fifo)
        elif row["name"] == "lens_00061":
            row["psf"] = "/dev/zero"
        # an unused mask column (mask.kind is circular): never opened, checked or hashed
        row["mask"] = os.fspath(fifo)

    _rewrite(small_manifest, change)
    config = write_config(
        tmp_path / "survey.yaml", small_manifest, tmp_path / "s.zarr", n_workers=1
    )
    done = run_cli(config, timeout=180)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "noise.fifo' is a FIFO (named pipe), not a regular file" in done.stdout
    assert "'/dev/zero' is a character device, not a regular file" in done.stdout
    statuses = list_datasets(tmp_path / "s.zarr")
    assert statuses == {"lens_00062": "complete"}
    assert read_lock(tmp_path / "s.zarr") is None


def test_a_stopped_worker_is_replaced_after_the_task_timeout(
    busy_manifest, busy_reference, tmp_path
):
    reference, n_batches = busy_reference
    store = tmp_path / "store.zarr"
    config = write_config(
        tmp_path / "survey.yaml",
        busy_manifest,
        store,
        run={"retries": 2, "max_tasks_in_flight": 64, "progress": False, "task_timeout": 4},
    )
    stopped: list[psutil.Process] = []
    try:
        with owned(start_run(config, tmp_path, "run")) as run:
            wait_for(lambda: len(marker_files(store)) >= 8, 120, "8 operator batches", run)
            workers = [p for p in descendants(run.pid) if "python" in p.name().lower()]
            victim = max(workers, key=lambda p: p.cpu_percent(interval=0.2))
            victim.send_signal(signal.SIGSTOP)
            stopped.append(victim)
            assert run.wait(timeout=300) == 0, logs(tmp_path, "run")
    finally:
        for process in stopped:
            try:
                process.send_signal(signal.SIGCONT)
                process.kill()
            except psutil.NoSuchProcess:
                pass
    out = logs(tmp_path, "run")
    counts = summary_counts(out)
    assert counts["tasks past run.task_timeout"] >= 1, out
    assert counts["failed"] == 0
    assert_stores_equal(store, reference)
    assert read_lock(store) is None


def test_no_worker_able_to_run_ends_the_run_after_start_timeout(small_manifest, tmp_path):
    store = tmp_path / "s.zarr"
    config = write_config(
        tmp_path / "survey.yaml",
        small_manifest,
        store,
        # below what a worker process needs: its nanny restarts it forever, or it pauses
        cluster={"kind": "local", "n_workers": 1, "memory_limit": "40MB", "start_timeout": 8},
    )
    start = time.monotonic()
    done = run_cli(config, timeout=240)
    elapsed = time.monotonic() - start
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "no Dask worker was alive for 8 s (cluster.start_timeout)" in out
    assert "Resume with: lenspipe run" in out
    assert elapsed < 200
    assert read_lock(store) is None  # released
    # consistent: nothing claims to be complete, and a run with a sane cluster finishes it
    assert all(state != "complete" for state in list_datasets(store).values())
    good = write_config(tmp_path / "good.yaml", small_manifest, store, n_workers=1)
    again = run_cli(good, timeout=240)
    assert again.returncode == 0, again.stdout + again.stderr
    assert set(list_datasets(store).values()) == {"complete"}
