"""The driver's fetch of a finished task's result (:func:`pipeline.flow.watch.fetch_result`),
on a real Dask cluster: the result, or at once a sign that it was lost with its worker (a batch
job cancelled) instead of waiting for a recomputation that has no worker to run on."""

from __future__ import annotations

import time

import pytest
from distributed import Client, LocalCluster

from pipeline.flow.watch import LOST, fetch_result

LOST_WAIT = 30.0  # seconds for the scheduler to tell the client the result is gone


def _double(value: int) -> int:
    return 2 * value


@pytest.fixture
def client():
    """A cluster of one worker process, on loopback."""
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def test_a_finished_result_is_fetched(client):
    future = client.submit(_double, 21, pure=False)
    future.result(timeout=30)
    assert fetch_result(future, timeout=30) == 42


def test_a_result_lost_with_its_worker_is_reported_at_once(client):
    """The only worker gone after the task finished: the future is ``lost`` (Dask would compute
    it again on a new worker); fetch_result says so at once instead of waiting its timeout."""
    future = client.submit(_double, 21, pure=False)
    future.result(timeout=30)
    client.cluster.scale(0)
    deadline = time.monotonic() + LOST_WAIT
    while future.status != "lost":
        assert time.monotonic() < deadline, f"still {future.status!r} after {LOST_WAIT:g} s"
        time.sleep(0.05)
    started = time.monotonic()
    assert fetch_result(future, timeout=60) is LOST
    assert time.monotonic() - started < 1.0
