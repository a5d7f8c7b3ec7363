"""The survey pipeline end to end on real Dask clusters: a LocalCluster with two worker processes,
and `dask scheduler` / `dask worker` processes on loopback. Results are checked against the
in-memory dataset model and operator."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.flow.config import load_config
from pipeline.flow.discover import discover
from pipeline.flow.prepare import PrepareSettings, prepare_imaging
from pipeline.flow.run import run_survey
from pipeline.io.store import (
    batches_done,
    dataset_attrs,
    list_datasets,
    open_imaging,
    open_store,
)
from pipeline.mock import simulate_survey

N_LENSES = 4
BATCH = 700  # several batches per dataset (balanced: rows <= BATCH)


def _survey(folder: Path, cluster: dict | None = None, **operator) -> Path:
    config_path = simulate_survey(folder, N_LENSES, seed=7, shape_range=(60, 76))
    config = yaml.safe_load(config_path.read_text())
    config["sparse_operator"].update({"batch_size": BATCH, **operator})
    config["over_sampling"] = {
        "kind": "radial",
        "sub_size_list": [4, 2, 1],
        "radial_list": [0.5, 1.0],
    }
    config["run"]["progress"] = False
    if cluster is not None:
        config["cluster"] = cluster
    config_path.write_text(yaml.safe_dump(config))
    return config_path


@pytest.fixture(scope="module")
def local_client():
    from distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        with Client(cluster) as client:
            yield client


def _check_store_against_memory(config) -> None:
    store = config.store_location
    settings = PrepareSettings.from_config(config)
    specs = discover(config).specs
    assert list_datasets(store) == {s.name: "complete" for s in specs}
    for spec in specs:
        expected = prepare_imaging(spec, settings)
        stored = open_imaging(store, spec.name)
        np.testing.assert_array_equal(stored.mask, expected.mask)
        np.testing.assert_array_equal(stored.data.native, expected.data.native)
        np.testing.assert_array_equal(stored.noise_map.native, expected.noise_map.native)
        np.testing.assert_array_equal(stored.psf.kernel.native, expected.psf.kernel.native)
        np.testing.assert_array_equal(stored.grid.slim, expected.grid.slim)
        np.testing.assert_array_equal(stored.grids.lp.over_sampled, expected.grids.lp.over_sampled)
        np.testing.assert_array_equal(
            stored.over_sample_size_pixelization.slim, expected.over_sample_size_pixelization.slim
        )
        reference = expected.apply_sparse_operator_cpu().sparse_operator
        values = stored.sparse_operator.values
        scale = np.abs(reference.values).max()
        np.testing.assert_allclose(values, reference.values, rtol=0, atol=1e-12 * scale)
        np.testing.assert_allclose(
            stored.sparse_operator.psf_weighted_data, reference.psf_weighted_data, rtol=1e-12
        )


def test_local_cluster_run_matches_in_memory_model(tmp_path, local_client):
    config = load_config(_survey(tmp_path))
    summary = run_survey(config, client=local_client)
    assert summary.exit_code == 0 and summary.complete == N_LENSES and summary.failed == 0
    n_batches = sum(
        int(
            open_store(config.store_location)["datasets"][s.name]["sparse_operator"].attrs[
                "n_batches"
            ]
        )
        for s in discover(config).specs
    )
    assert summary.shards_computed == n_batches > N_LENSES
    _check_store_against_memory(config)
    runs = open_store(config.store_location)["runs"]
    assert summary.run_id in runs and runs[summary.run_id].attrs["summary"]["complete"] == N_LENSES


def test_resume_recomputes_only_missing_batches(tmp_path, local_client):
    config = load_config(_survey(tmp_path, backend="numba"))
    first = run_survey(config, client=local_client)
    assert first.exit_code == 0
    store = config.store_location
    name = discover(config).specs[1].name
    root = open_store(store, mode="r+")
    group = root["datasets"][name]
    before = group["sparse_operator"]["values"][...]
    n_batches = int(group["sparse_operator"].attrs["n_batches"])
    rows = int(group["sparse_operator"].attrs["batch_size"])
    n_pixels = before.shape[0]
    # ceil(N / BATCH) batches of nearly equal size, none longer than BATCH
    assert n_batches == -(-n_pixels // BATCH) >= 3
    assert rows <= BATCH and (n_batches - 1) * rows < n_pixels <= n_batches * rows
    assert n_pixels - (n_batches - 1) * rows > rows - n_batches
    lost = [0, n_batches - 1]
    # an interrupted run: status still 'prepared', two markers never written, their values garbage
    group.attrs["status"] = "prepared"
    markers = Path(store) / "datasets" / name / "sparse_operator" / "batches_done" / "c"
    for index in lost:
        (markers / str(index)).unlink()  # the marker chunk file of that batch
        group["sparse_operator"]["values"][index * rows : (index + 1) * rows] = 7.0
    assert batches_done(root, name).sum() == n_batches - len(lost)

    second = run_survey(config, client=local_client)
    assert second.exit_code == 0
    assert second.shards_computed == len(lost)
    assert second.shards_skipped == n_batches - len(lost)
    assert second.resumed == 1 and second.skipped_complete == N_LENSES - 1
    np.testing.assert_array_equal(
        open_store(store)["datasets"][name]["sparse_operator"]["values"][...], before
    )
    assert list_datasets(store)[name] == "complete"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_dask_scheduler_and_worker_processes(tmp_path):
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = str(Path(sys.executable).with_name("dask"))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    scheduler = subprocess.Popen(
        [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    workers = [
        subprocess.Popen(
            [dask, "worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        from distributed import Client

        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(address, timeout=5) as client:
                    client.wait_for_workers(2, timeout=60)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        config = load_config(_survey(tmp_path, cluster={"kind": "address", "address": address}))
        summary = run_survey(config)
        assert summary.exit_code == 0 and summary.complete == N_LENSES
        _check_store_against_memory(config)
    finally:
        for process in [*workers, scheduler]:
            process.terminate()
        for process in [*workers, scheduler]:
            process.wait(timeout=30)


def test_prepare_seconds_means_the_same_in_the_task_and_after_finalize(tmp_path, local_client):
    """Regression (issue 12): the driver recorded load + group write as ``prepare_seconds`` at
    finalize, over the task's load time, so the survey plot mixed the two meanings."""
    config = load_config(
        simulate_survey(tmp_path, 1, seed=45, shape_range=(40, 40), psf_shapes=(5,), batch_size=100)
    )
    summary = run_survey(config, client=local_client, progress=False)
    assert summary.exit_code == 0 and summary.shards_computed > 1  # finalized by the driver
    timings = dataset_attrs(config.store_location, "lens_00045")["timings"]
    assert timings["prepare_seconds"] == summary.prepare_seconds  # the task's load time
    assert summary.write_seconds > 0
