"""Several datasets per prepare task (``run.datasets_per_task``) on real Dask clusters: the store
is the same bit for bit as with one dataset per task; a group whose task raises is split and
each of its datasets runs alone, so a bad one fails alone after its own retries; a group held
past its deadline by a stopped worker is split and finished elsewhere."""

from __future__ import annotations

import contextlib
import csv
import os
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import cloudpickle
import psutil
import pytest
from distributed import Client, LocalCluster, get_task_stream

import pipeline.flow.driver as driver_module
import pipeline.flow.tasks as tasks_module
from pipeline.flow.config import load_config
from pipeline.flow.run import run_survey
from pipeline.io.store import list_datasets
from pipeline.mock import simulate_survey
from tests.reliability.support import assert_stores_equal, write_config

pytestmark = pytest.mark.timeout(300)

N_DATASETS = 24


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("groups")
    simulate_survey(folder, N_DATASETS, seed=5, shape_range=(40, 56), psf_shapes=(5, 7))
    return folder / "manifest.csv"


@pytest.fixture(scope="module")
def reference(manifest, tmp_path_factory) -> Path:
    """The survey run with one dataset per task."""
    folder = tmp_path_factory.mktemp("groups-reference")
    store = folder / "store.zarr"
    run = {"retries": 2, "progress": False, "datasets_per_task": 1}
    config = load_config(write_config(folder / "survey.yaml", manifest, store, run=run))
    with _threads_cluster() as client, get_task_stream(client) as stream:
        summary = run_survey(config, client=client, progress=False)
    assert summary.complete == N_DATASETS and summary.failed == 0
    keys = [str(task["key"]) for task in stream.data if str(task["key"]).startswith("prepare-")]
    assert len(keys) == N_DATASETS and not any(":" in key for key in keys)
    return store


def _threads_cluster():
    """A real scheduler with one worker thread in this process: the tasks run the code this
    test has patched."""
    cluster = LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    )
    client = Client(cluster)

    class _Both:
        def __enter__(self):
            return client

        def __exit__(self, *exc):
            client.close()
            cluster.close()

    return _Both()


def _config(tmp_path: Path, manifest: Path, per_task: int | str, **run) -> tuple:
    store = tmp_path / "store.zarr"
    settings = {"retries": 2, "progress": False, "datasets_per_task": per_task, **run}
    return load_config(write_config(tmp_path / "survey.yaml", manifest, store, run=settings)), store


def _names(manifest: Path) -> list[str]:
    """The survey's dataset names, in the manifest's order (the order they are prepared in)."""
    with manifest.open(newline="") as file:
        return [row["name"] for row in csv.DictReader(file)]


def _group_keys(stream) -> list[str]:
    return [str(t["key"]) for t in stream.data if ":" in str(t["key"])]


def test_groups_give_the_store_of_one_dataset_per_task(manifest, reference, tmp_path):
    config, store = _config(tmp_path, manifest, 4)
    with _threads_cluster() as client, get_task_stream(client) as stream:
        summary = run_survey(config, client=client, progress=False)
    assert summary.complete == N_DATASETS and summary.failed == 0, summary.table()
    groups = [key.rsplit("-", 1)[0] for key in _group_keys(stream)]
    # 24 queued, one worker: at most 4, and no more than leaves 4 tasks for what is queued
    names = _names(manifest)
    assert groups == [
        f"prepare-{names[0]}:4",
        f"prepare-{names[4]}:4",
        f"prepare-{names[8]}:4",
        f"prepare-{names[12]}:3",
        f"prepare-{names[15]}:2",
    ]
    assert_stores_equal(store, reference)


class _Injected(RuntimeError):
    pass


_ORIGINAL_PREPARE_TASK = tasks_module.prepare_task
_FAULT: dict = {"bad": None, "failures": 0, "calls": Counter()}
_FAULT_LOCK = threading.Lock()


def _faulty_prepare_task(spec, *args, **kwargs):
    """``prepare_task`` that raises for dataset ``_FAULT["bad"]`` on its first
    ``_FAULT["failures"]`` calls (module level: Dask pickles it by reference, and the
    in-process worker runs this very function)."""
    with _FAULT_LOCK:
        _FAULT["calls"][spec.name] += 1
        fail = spec.name == _FAULT["bad"] and _FAULT["calls"][spec.name] <= _FAULT["failures"]
    if fail:
        raise _Injected(f"injected fault in {spec.name}")
    return _ORIGINAL_PREPARE_TASK(spec, *args, **kwargs)


def _inject(monkeypatch, bad: str, failures: int) -> Counter:
    """Make ``bad`` fail its first ``failures`` prepares, in a group task or alone; returns the
    prepare calls per dataset."""
    calls: Counter = Counter()
    monkeypatch.setitem(_FAULT, "bad", bad)
    monkeypatch.setitem(_FAULT, "failures", failures)
    monkeypatch.setitem(_FAULT, "calls", calls)
    monkeypatch.setattr(tasks_module, "prepare_task", _faulty_prepare_task)  # in a group
    monkeypatch.setattr(driver_module, "prepare_task", _faulty_prepare_task)  # alone
    return calls


def test_a_group_that_raises_is_split_and_the_bad_dataset_fails_alone(
    manifest, reference, tmp_path, monkeypatch, caplog
):
    names = _names(manifest)
    bad = names[1]  # in the first group, of names[0:4]
    calls = _inject(monkeypatch, bad, failures=10**6)
    config, store = _config(tmp_path, manifest, 4, retries=1)
    with _threads_cluster() as client:
        summary = run_survey(config, client=client, progress=False)
    assert summary.failed == 1 and summary.complete == N_DATASETS - 1, summary.table()
    (failure,) = summary.failures
    assert failure["name"] == bad
    assert f"_Injected: injected fault in {bad}" in failure["message"]
    # once in its group (no retries there), then 1 + run.retries times alone
    assert calls[bad] == 1 + 2
    # the group's first dataset ran twice (in the group, then alone); the two after the bad
    # one only alone; the next group's once
    assert [calls[names[i]] for i in (0, 2, 3, 4)] == [2, 1, 1, 1]
    assert "running each of its 4 datasets as a task of its own" in caplog.text
    statuses = list_datasets(store)
    assert statuses.pop(bad) == "failed"
    assert set(statuses.values()) == {"complete"}


def test_a_dataset_that_fails_once_in_its_group_completes_alone(
    manifest, reference, tmp_path, monkeypatch
):
    bad = _names(manifest)[4]  # in the second group
    calls = _inject(monkeypatch, bad, failures=1)
    config, store = _config(tmp_path, manifest, 4)
    with _threads_cluster() as client:
        summary = run_survey(config, client=client, progress=False)
    assert summary.failed == 0 and summary.complete == N_DATASETS, summary.table()
    assert calls[bad] == 2
    assert_stores_equal(store, reference)


def _hang_on_first_prepare_of(name: str, marker: str) -> None:
    """Run on a worker: the first prepare of dataset ``name`` in any of the workers (``marker``,
    created exclusively, holds its pid) hangs, as a read from a dead file system does; the
    worker goes on answering the scheduler."""
    import pipeline.flow.tasks as tasks

    original = tasks.prepare_task

    def prepare_task(spec, *args, **kwargs):
        if spec.name == name:
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass  # stopped once already: run as usual
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                time.sleep(3600)
        return original(spec, *args, **kwargs)

    # also what a single prepare task's function resolves to, when it is unpickled here
    tasks.prepare_task = prepare_task


def test_a_group_stuck_on_its_worker_is_split_and_finished_elsewhere(
    manifest, reference, tmp_path, caplog
):
    """Two worker processes; the one preparing the first group hangs at that group's second
    dataset: past the group's deadline (``task_timeout`` per dataset) the driver removes that
    worker and runs the group's datasets one per task on the other."""
    config, store = _config(tmp_path, manifest, 3, task_timeout=4)
    names, marker = _names(manifest), tmp_path / "stopped.pid"
    stopped: list[psutil.Process] = []
    module = sys.modules[__name__]
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        cloudpickle.register_pickle_by_value(module)  # the worker processes cannot import it
        try:
            client.run(_hang_on_first_prepare_of, names[1], os.fspath(marker))
        finally:
            cloudpickle.unregister_pickle_by_value(module)
        try:
            summary = run_survey(config, client=client, progress=False)
        finally:
            if marker.exists():
                stopped.append(psutil.Process(int(marker.read_text())))
            for process in stopped:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
    assert stopped, "no prepare hung"
    assert summary.failed == 0 and summary.complete == N_DATASETS, summary.table()
    assert summary.tasks_timed_out >= 1
    held = rf"task prepare-{names[0]}:3-\S+ was held \d+ s by worker \S+: running each of its 3"
    assert re.search(held, caplog.text), caplog.text[-3000:]
    assert_stores_equal(store, reference)
