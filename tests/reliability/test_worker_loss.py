"""Worker loss: SIGKILL a Dask worker process while operator batches run; the run completes and
the store equals an undisturbed run's, bit for bit."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest

from pipeline.flow.cluster import cluster_client
from pipeline.flow.config import LocalClusterConfig, load_config
from pipeline.flow.run import run_survey
from tests.reliability.support import assert_stores_equal, marker_files, write_config

# processes are killed here: a hang must fail the test, not the CI job
pytestmark = pytest.mark.timeout(300)


def test_sigkill_a_worker_during_operator_batches(busy_manifest, busy_reference, tmp_path):
    reference, n_batches = busy_reference
    store = tmp_path / "store.zarr"
    config = load_config(write_config(tmp_path / "survey.yaml", busy_manifest, store))
    killed: dict = {}
    errors: list[BaseException] = []
    stop = threading.Event()

    with cluster_client(LocalClusterConfig(n_workers=2)) as client:
        pids = client.run(os.getpid)  # {worker address: pid}
        assert len(pids) == 2

        def kill_one_worker_mid_batch() -> None:
            try:
                while not stop.is_set():
                    if marker_files(store):  # operator batches are being written
                        processing = client.processing()
                        for address, keys in processing.items():
                            running = [k for k in keys if str(k).startswith("op-")]
                            if running and address in pids:
                                done_before = len(marker_files(store))
                                os.kill(pids[address], signal.SIGKILL)
                                killed.update(
                                    address=address,
                                    pid=pids[address],
                                    keys=running,
                                    done_before=done_before,
                                )
                                return
                    time.sleep(0.01)
            except BaseException as err:  # noqa: BLE001 - reported by the test thread
                errors.append(err)

        killer = threading.Thread(target=kill_one_worker_mid_batch, daemon=True)
        killer.start()
        try:
            summary = run_survey(config, client=client, progress=False)
        finally:
            stop.set()
            killer.join(timeout=30)
        assert not errors, errors
        # the kill happened while that worker held operator tasks, before the run ended
        assert killed, "no worker was killed: the run ended before any batch was written"
        assert killed["keys"] and 0 < killed["done_before"] < n_batches
        assert not psutil.pid_exists(killed["pid"]) or (
            psutil.Process(killed["pid"]).status() == psutil.STATUS_ZOMBIE
        )
        # the nanny restarted a worker in its place
        client.wait_for_workers(2, timeout=60)
        new_pids = set(client.run(os.getpid).values())
        assert killed["pid"] not in new_pids and len(new_pids) == 2

    assert summary.exit_code == 0, summary.table()
    assert summary.failed == 0 and summary.complete == 8 and not summary.failures
    assert summary.shards_computed == n_batches  # each batch's result delivered once
    assert_stores_equal(store, reference)
