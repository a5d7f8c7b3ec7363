"""Benchmark of the survey pipeline: a mock survey run serially in-process and on a LocalCluster
with 1 and 2 worker processes. Prints a Markdown table.

* datasets per second;
* parallel efficiency = serial time / (workers x wall time), against a serial in-process loop of
  exactly the same tasks (prepare with its group, operator shards, the driver's finalize);
* the machine's ceiling for that efficiency: two plain processes running the serial loop at once;
* where the workers' time goes: operator kernels, store writes (each dataset's group and its
  operator batches), load (FITS, checks, masks, over-sampling), and the rest (scheduling, task
  overhead, idle), as shares of workers x wall time; "outside" = load + the rest;
* 2 workers against the ceiling: the LocalCluster's efficiency over the plain pair's;
* the Dask runs' own CPU per dataset: the driver process's (driver, client, scheduler) and the
  workers' outside their tasks' CPU time;
* Dask's own CPU per task: empty tasks submitted as the driver submits (``client.map`` in
  groups, results taken in batches) on the same LocalCluster, CPU seconds of the driver process
  (with the scheduler, which runs in it) and of the workers, divided by the tasks.

Usage: ``python benchmarks/pipeline.py [--n 200] [--batch-size auto|2048] [--repeat 3] [--dir /dev/shm]``
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# this file is named like the package: keep its own folder off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from pipeline.flow.config import load_config  # noqa: E402
from pipeline.flow.discover import discover  # noqa: E402
from pipeline.flow.prepare import PrepareSettings  # noqa: E402
from pipeline.flow.run import run_survey  # noqa: E402
from pipeline.flow.tasks import (  # noqa: E402
    AutoBatchSize,
    operator_batch_task,
    prepare_task,
)
from pipeline.io.store import (  # noqa: E402
    OperatorStorage,
    StoreRecipe,
    create_store,
    finalize_dataset,
)
from pipeline.mock import simulate_survey  # noqa: E402


def serial(config) -> dict:
    """The same tasks, one after another in this process (the baseline)."""
    store = StoreRecipe(config.store_location, {})
    root = create_store(store.location)
    settings = PrepareSettings.from_config(config)
    op = config.sparse_operator
    storage = OperatorStorage(op.dtype, op.codec, op.level, op.keep_bits, op.shuffle)
    batch_size = op.batch_size
    if batch_size == "auto":  # as the driver does
        batch_size = AutoBatchSize(config.operator_memory_budget())
    totals = {"kernel": 0.0, "write": 0.0, "prepare": 0.0}
    start = time.perf_counter()
    for spec in discover(config).specs:
        prepared = prepare_task(spec, settings, store, batch_size, storage, op.backend)
        totals["prepare"] += prepared.load_seconds
        totals["kernel"] += prepared.first_batch.kernel_seconds
        totals["write"] += prepared.write_seconds
        for index in range(1, prepared.n_batches):
            shard = operator_batch_task(
                store, spec.name, index, op.backend, prepared.metadata["token"]
            )
            totals["kernel"] += shard.kernel_seconds
            totals["write"] += shard.write_seconds
        if not prepared.complete:  # the driver's one metadata write for this dataset
            finalize_dataset(root, spec.name, verify_markers=False)
    totals["wall"] = time.perf_counter() - start
    return totals


WARMUP_DATASETS = 8


def parallel(config, n_workers: int, warmup) -> dict:
    from pipeline.flow.cluster import cluster_client
    from pipeline.flow.config import LocalClusterConfig

    with cluster_client(LocalClusterConfig(n_workers=n_workers)) as client:
        # the serial loop runs after an in-process warm-up pass: warm the workers the same way
        # (imports, first FITS read, first Zarr write) on a small survey of its own
        summary = run_survey(warmup, client=client, progress=False, overwrite=True)
        assert summary.failed == 0 and summary.complete == WARMUP_DATASETS
        driver = _cpu_seconds()
        workers = sum(client.run(_cpu_seconds).values())
        start = time.perf_counter()
        summary = run_survey(config, client=client, progress=False)
        wall = time.perf_counter() - start
        driver = _cpu_seconds() - driver
        workers = sum(client.run(_cpu_seconds).values()) - workers
    assert summary.failed == 0, summary.failures[:3]
    return {
        "wall": wall,
        "kernel": summary.kernel_seconds,
        "write": summary.write_seconds,
        "prepare": summary.prepare_seconds,
        # CPU seconds of the driver process (driver, client and scheduler), and of the worker
        # processes outside the tasks' own CPU time (Dask's worker side); the summary's CPU time
        # is the tasks' and the driver's, whose CPU is at most ``driver``
        "driver_cpu": driver,
        "workers_outside_cpu": workers - (summary.cpu_seconds - driver),
    }


def _noop(index: int) -> int:
    return index


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def dask_cpu_per_task(n_workers: int, n_tasks: int = 4000, group: int = 500) -> dict:
    """Milliseconds of CPU per empty task: the driver process (client and scheduler) and the
    workers, on a LocalCluster as the pipeline starts it."""
    from distributed import as_completed

    from pipeline.flow.cluster import cluster_client
    from pipeline.flow.config import LocalClusterConfig

    with cluster_client(LocalClusterConfig(n_workers=n_workers)) as client:
        client.gather(client.map(_noop, range(200), pure=False))  # warm: connections, imports
        driver = _cpu_seconds()
        workers = sum(client.run(_cpu_seconds).values())
        futures = []
        for first in range(0, n_tasks, group):
            futures += client.map(_noop, range(first, min(first + group, n_tasks)), pure=False)
        for batch in as_completed(futures).batches():
            client.gather(batch)
        driver = _cpu_seconds() - driver
        workers = sum(client.run(_cpu_seconds).values()) - workers
    return {"driver_ms": 1000 * driver / n_tasks, "workers_ms": 1000 * workers / n_tasks}


def _serial_here(folder: str, store: str, batch_size: int | str) -> dict:
    return _measured(Path(folder), store, batch_size, serial)


def plain_pair(folder: Path, batch_size: int | str, warm_folder: Path) -> dict:
    """The machine's own ceiling: two plain processes (no Dask) each run the whole serial loop,
    into stores of their own, at the same time. Their slowdown against one alone is what two
    processes cost each other on these cores (shared caches, memory bandwidth, hypervisor)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        pool.starmap(
            _serial_here, [(str(warm_folder), f"pairwarm{i}.zarr", batch_size) for i in (0, 1)]
        )
        start = time.perf_counter()
        both = pool.starmap(
            _serial_here, [(str(folder), f"pair{i}.zarr", batch_size) for i in (0, 1)]
        )
        wall = time.perf_counter() - start
        pool.close()  # a clean exit: terminate() leaves the pool's semaphores to the tracker
        pool.join()
    return {"wall": wall, **{k: sum(r[k] for r in both) for k in ("kernel", "write", "prepare")}}


def _config(folder: Path, store: str, batch_size: int | str):
    path = folder / "survey.yaml"
    data = yaml.safe_load(path.read_text())
    data["output"]["store"] = store
    data["sparse_operator"]["batch_size"] = batch_size
    data["run"]["progress"] = False
    out = folder / f"{store}.yaml"
    out.write_text(yaml.safe_dump(data))
    return load_config(out)


def config_size(config) -> int:
    return len(discover(config).specs)


def _measured(folder: Path, store: str, batch_size: int | str, run) -> dict:
    """One measured run into a new store, which is then checked and deleted.

    Deleting matters on virtual machines: memory the guest never touched before costs a
    hypervisor fault per page, so a run writing into fresh memory (tmpfs or page cache) after
    earlier runs' stores filled the recycled pages measured its writes 2.5x slower here. With each
    store deleted, every run writes into the same, recycled memory."""
    from pipeline.io.store import list_datasets

    config = _config(folder, store, batch_size)
    result = run(config)
    statuses = list_datasets(config.store_location)
    assert set(statuses.values()) == {"complete"} and len(statuses) == config_size(config)
    shutil.rmtree(config.store_location)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument(
        "--batch-size",
        type=lambda v: v if v == "auto" else int(v),
        default="auto",
        help="rows per operator task: auto (the default: as many as fit the memory budget, one "
        "task per dataset here) or an int (at most that many; 2048 gives ~3 tasks per dataset)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the median is shown")
    parser.add_argument(
        "--dir",
        default=None,
        help="Where the survey and stores go (default: a temporary folder; "
        "/dev/shm takes the disk out of the measurement)",
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="lenspipe-bench-", dir=args.dir))
    try:
        simulate_survey(folder, args.n, seed=100, shape_range=(64, 100), psf_shapes=(11, 21))
        warm_folder = folder / "warmup"
        simulate_survey(
            warm_folder, WARMUP_DATASETS, seed=1, shape_range=(64, 100), psf_shapes=(11, 21)
        )
        # a warm-up pass so that imports, JIT compilation and the page cache favour no one
        _measured(folder, "warmup.zarr", args.batch_size, serial)
        runs: dict[str, list[dict]] = {"serial": [], "pair": [], "dask1": [], "dask2": []}
        # rounds of every row: the machine's load drifts over minutes, so each efficiency is a
        # ratio within one round, and the median round is reported
        for _ in range(args.repeat):
            runs["serial"].append(_measured(folder, "serial.zarr", args.batch_size, serial))
            runs["pair"].append(plain_pair(folder, args.batch_size, warm_folder))
            for workers in (1, 2):
                warmup = _config(warm_folder, f"warm{workers}.zarr", args.batch_size)
                run = functools.partial(parallel, n_workers=workers, warmup=warmup)
                result = _measured(folder, f"dask{workers}.zarr", args.batch_size, run)
                runs[f"dask{workers}"].append(result)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print(
        f"{args.n} mock datasets (64-100 px, 11x11 and 21x21 PSFs), batch_size {args.batch_size}, "
        f"{os.cpu_count()} cores; median of {args.repeat} rounds\n"
    )
    print(
        "| run | processes | wall s | datasets/s | efficiency | kernels | store writes | load "
        "| other | outside kernels and writes |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    # (label, processes, surveys of work done)
    rows = {
        "serial": ("serial in-process", 1, 1),
        "pair": ("2 plain processes, no Dask (ceiling)", 2, 2),
        "dask1": ("LocalCluster, 1 worker", 1, 1),
        "dask2": ("LocalCluster, 2 workers", 2, 1),
    }
    efficiencies: dict[str, float] = {}
    for key, (label, processes, surveys) in rows.items():
        # per round: efficiency against that round's serial time, shares of processes x wall
        rounds = []
        for r, base in zip(runs[key], runs["serial"], strict=True):
            budget = processes * r["wall"]
            shares = [r[k] / budget for k in ("kernel", "write", "prepare")]
            efficiency = surveys * base["wall"] / budget
            outside = 1.0 - shares[0] - shares[1]
            rounds.append([r["wall"], efficiency, *shares, 1.0 - sum(shares), outside])
        median = np.median(np.array(rounds), axis=0)
        wall, efficiency, kernel, write, prepare, other, outside = median
        efficiencies[key] = efficiency
        print(
            f"| {label} | {processes} | {wall:.2f} | {surveys * args.n / wall:.1f} | "
            f"{efficiency:.0%} | {kernel:.0%} | {write:.0%} | {prepare:.0%} | {other:.0%} | "
            f"{outside:.0%} |"
        )
    print(
        f"\n2 workers against the ceiling (LocalCluster efficiency / plain pair's): "
        f"{efficiencies['dask2'] / efficiencies['pair']:.0%}"
    )
    for key in ("dask1", "dask2"):
        driver = float(np.median([r["driver_cpu"] for r in runs[key]])) / args.n
        workers = float(np.median([r["workers_outside_cpu"] for r in runs[key]])) / args.n
        print(
            f"{rows[key][0]}, CPU per dataset: driver and scheduler {1000 * driver:.2f} ms, "
            f"workers outside tasks {1000 * workers:.2f} ms, total {1000 * (driver + workers):.2f} ms"
        )
    cost = dask_cpu_per_task(2)
    print(
        f"Dask's CPU per empty task, 2 workers: driver and scheduler {cost['driver_ms']:.2f} ms, "
        f"workers {cost['workers_ms']:.2f} ms, total {cost['driver_ms'] + cost['workers_ms']:.2f} ms"
    )


if __name__ == "__main__":
    main()
