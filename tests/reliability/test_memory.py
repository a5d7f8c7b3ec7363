"""Memory: with ``sparse_operator.batch_size: auto`` the rows per operator batch come from a
memory budget, so a large operator (21x21 PSF, ~45,000 unmasked pixels: 1.3 GB of peak task
memory as one batch) completes on a worker limited to 1 GiB without the worker being killed.

Checked by hand (2026-11, this machine, 2 cores): the same survey with ``batch_size: 65536`` (one
batch of 45,244 rows) passes Dask's pause threshold (80%, ~830 MiB) and is killed by the nanny
above 95% of 1 GiB, on four workers in a row: the dataset fails with ``KilledWorker`` (exit 3,
9 s). With ``auto`` the budget is 256 MiB (a quarter of the limit): 8,818 rows per batch, 6
batches, worker peak RSS (VmHWM) 386 MiB, about 150 MiB of it before the first task, 1.7 s.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from pipeline.exc import ConfigError
from pipeline.flow.cluster import cluster_client
from pipeline.flow.config import config_from_dict, load_config
from pipeline.flow.run import run_survey
from pipeline.mock import simulate_survey
from pipeline.operators import BatchGeometry, OperatorInputs, compute_rows
from pipeline.operators.batching import (
    DEFAULT_MEMORY_BUDGET,
    operator_batch_rows,
    operator_row_bytes,
)
from tests.reliability.support import set_manifest_column, write_config

GiB = 2**30


def _peak_rss() -> int:
    """This process's peak resident memory in bytes: ``VmHWM`` of its own address space
    (``getrusage``'s ``ru_maxrss`` would include the RSS of the parent it was forked from, since
    Linux keeps it across ``exec``)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def test_auto_batches_keep_a_large_operator_under_a_1gib_worker(tmp_path):
    simulate_survey(tmp_path, 1, seed=4, shape_range=(256, 256), psf_shapes=(21,))
    set_manifest_column(tmp_path / "manifest.csv", "mask_radius", 12.0)
    cluster = {"kind": "local", "n_workers": 1, "memory_limit": "1GiB"}
    path = write_config(
        tmp_path / "auto.yaml",
        tmp_path / "manifest.csv",
        tmp_path / "auto.zarr",
        batch_size="auto",
        cluster=cluster,
    )
    config = load_config(path)
    assert config.operator_memory_budget() == GiB // 4

    with cluster_client(config.cluster) as client:
        (pid_before,) = client.run(os.getpid).values()
        summary = run_survey(config, client=client, progress=False)
        (pid_after,) = client.run(os.getpid).values()
        (peak,) = client.run(_peak_rss).values()

    assert summary.exit_code == 0 and summary.complete == 1, summary.table()
    assert pid_after == pid_before  # the worker was never killed and restarted
    assert peak < 0.8 * GiB  # below Dask's pause threshold (80%), far from the kill at 95%

    import zarr

    group = zarr.open_group(tmp_path / "auto.zarr", mode="r")["datasets"]["lens_00004"]
    n = int(group.attrs["n_pixels"])
    operator = group["sparse_operator"]
    rows = int(operator.attrs["batch_size"])
    assert n > 40_000
    budget_rows = operator_batch_rows((21, 21), n, GiB // 4)
    assert budget_rows == GiB // 4 // 30_440
    n_batches = math.ceil(n / budget_rows)
    # the budget's rows, balanced over as many batches: never more rows than the budget allows
    assert (
        rows
        == BatchGeometry.balanced(n, budget_rows).batch_size
        == math.ceil(n / n_batches)
        <= budget_rows
    )
    assert operator.attrs["n_batches"] == n_batches == summary.shards_computed >= 5
    # one batch of the whole operator would not fit in the worker at all
    assert n * operator_row_bytes((21, 21)) > GiB

    # the values are W's rows (checked against an in-process computation of a few batches)
    mask = np.asarray(group["mask"][...], dtype=bool)
    inputs = OperatorInputs.from_noise_map(group["noise_map"][...], mask, group["psf"][...])
    values = operator["values"]
    for start in (0, (n // rows // 2) * rows, (n // rows) * rows):
        stop = min(start + rows, n)
        expected = compute_rows(inputs, start, stop, "numpy")
        got = values[start:stop]
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * scale)


def _config(tmp_path, operator: dict, cluster: dict | None = None):
    data = {
        "inputs": {"kind": "manifest", "path": "m.csv"},
        "pixel_scales": 0.1,
        "mask": {"kind": "circular", "radius": 1.0},
        "sparse_operator": operator,
        "output": {"store": "s.zarr"},
    }
    if cluster:
        data["cluster"] = cluster
    return config_from_dict(data, tmp_path)


def test_budget_rules(tmp_path):
    auto = {"batch_size": "auto"}
    # an explicit budget wins
    config = _config(tmp_path, {**auto, "memory_budget_mb": 100}, {"kind": "local"})
    assert config.operator_memory_budget() == 100 * 2**20
    # else a quarter of an explicit local memory limit
    local = {"kind": "local", "memory_limit": "2GiB"}
    assert _config(tmp_path, auto, local).operator_memory_budget() == GiB // 2
    # else 512 MiB (local "auto" limit, scheduler address, batch systems)
    assert _config(tmp_path, auto).operator_memory_budget() == DEFAULT_MEMORY_BUDGET == 512 * 2**20
    address = {"kind": "address", "address": "tcp://127.0.0.1:8786"}
    assert _config(tmp_path, auto, address).operator_memory_budget() == DEFAULT_MEMORY_BUDGET
    # the budget groups rows into tasks only: not part of the settings hash
    assert "memory_budget_mb" not in _config(tmp_path, auto).dataset_settings()["sparse_operator"]
    with pytest.raises(ConfigError, match="sparse_operator.memory_budget_mb"):
        _config(tmp_path, {**auto, "memory_budget_mb": 0})


def test_rows_per_batch_from_the_budget():
    # 21x21: 841 offsets -> 4 * 841 * 8 + 441 * 8 = 30,440 bytes per row
    assert operator_row_bytes((21, 21)) == 30_440
    assert operator_batch_rows((21, 21), 10**6, 256 * 2**20) == 8_818
    assert operator_batch_rows((21, 21), 5_000, 256 * 2**20) == 5_000  # one batch
    assert operator_batch_rows((49, 49), 10**6, 2**20) == 64  # floor
    assert operator_batch_rows((3, 3), 10**7, 4 * GiB) == 65_536  # ceiling
    assert operator_batch_rows((3, 3), 10, 4 * GiB) == 10
    # non-square kernels count their own offsets: (2*21-1)*(2*11-1)+1)/2 = 431
    assert operator_row_bytes((21, 11)) == 4 * 431 * 8 + 231 * 8
