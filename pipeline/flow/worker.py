"""What a worker process sets up: thread limits, Dask settings and a Zarr config fit for one task
per process, and (embedded cluster) a preload that leaves stop signals to the driver.

:data:`WORKER_ENVIRONMENT` goes to every worker's environment (``LocalCluster(env=...)``, or the
job script's prologue for SLURM/PBS); :data:`WORKER_DASK_CONFIG` is the Dask config the embedded
cluster's nannies hand their workers; each task calls :func:`configure_worker` first.

A Ctrl-C in a terminal sends SIGINT to the whole foreground process group: the driver and every
worker process of its ``LocalCluster``. The driver alone decides how a run ends (it stops
submitting, cancels, records and closes the cluster, which ends the workers); a worker that took
SIGINT itself would print a ``KeyboardInterrupt`` traceback per process and die mid-write
(:func:`dask_setup`, this module being the workers' preload).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

__all__ = [
    "HEARTBEAT_FAILURE",
    "WORKER_DASK_CONFIG",
    "WORKER_ENVIRONMENT",
    "ClosingHeartbeatFilter",
    "configure_worker",
    "dask_setup",
]

# Libraries size their thread pools at import: set before numba/JAX load in a worker process.
WORKER_ENVIRONMENT: dict[str, str] = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
    # for workers started by a job script (SLURM/PBS); see WORKER_DASK_CONFIG
    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
    # Dask lowercases the keys below a DASK_* variable's path (..._MALLOC_TRIM_THRESHOLD_ would set
    # a key "malloc_trim_threshold_" beside Dask's own): the whole mapping is given instead, and
    # Dask merges it into its defaults (OMP/MKL/OPENBLAS = 1 are kept)
    "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON": '{"MALLOC_TRIM_THRESHOLD_": None}',
}

WORKER_DASK_CONFIG: dict[str, Any] = {
    # Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in every worker. Setting it switches off
    # glibc's dynamic mmap threshold, so every multi-MB buffer (kernel outputs, compression
    # buffers) is mmapped, page-faulted and unmapped on each use: measured here, the operator
    # kernels ran 20% and the Zarr writes 60% slower in workers than in a plain process (the
    # "writes are 2-3.7x slower inside Dask workers" of the pipeline issue). Our allocations are
    # few and same-sized, so glibc's defaults are right.
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    # The statistical profiler samples every thread's stack every 10 ms under the GIL; tasks of
    # tens of milliseconds do not need it (the dashboard's profile tab stays empty).
    "distributed.worker.profile.enabled": False,
    # An idle embedded cluster (2 workers) cost ~40 ms of CPU per second, half in the driver's
    # process (scheduler), half in the workers, taken from the tasks on a small machine: the
    # event-loop health check every 20 ms and psutil's system monitor every 0.5 s (for the
    # dashboard's plots) are most of what can go safely; the memory monitor (100 ms) stays, as
    # it guards the memory limit. Measured: ~28 ms/s with these two slower.
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
}


def configure_worker() -> None:
    """Thread limits (if the libraries are not loaded yet) and a zarr config fit for one task per
    process: zarr's own thread pool would multiply with Dask's (PITFALLS)."""
    from pipeline.io.store import configure_zarr_for_tasks

    for key, value in WORKER_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    configure_zarr_for_tasks()


def dask_setup(worker: Any) -> None:
    """Worker preload: ignore SIGINT (runs on the worker's event loop, in its main thread; a
    worker restarted by its nanny runs it again), and keep the traceback of a heartbeat cut off
    by the worker's own closing out of the run's output (:class:`ClosingHeartbeatFilter`)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker_logger = logging.getLogger("distributed.worker")
    if not any(isinstance(f, ClosingHeartbeatFilter) for f in worker_logger.filters):
        worker_logger.addFilter(ClosingHeartbeatFilter(worker))


#: Messages of ``distributed.worker`` that a heartbeat in flight logs, with a traceback, when the
#: worker's own connections close under it (the driver closing the cluster after a stop signal).
HEARTBEAT_FAILURE = "Failed to communicate with scheduler during heartbeat"


class ClosingHeartbeatFilter(logging.Filter):
    """Drops :data:`HEARTBEAT_FAILURE` records while the worker is closing or closed: the
    cluster is being shut down on purpose and the run's output should end with its summary. The
    same failure while the worker runs (a lost scheduler) is still logged."""

    def __init__(self, worker: Any):
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith(HEARTBEAT_FAILURE):
            return True
        status = getattr(getattr(self.worker, "status", None), "name", "")
        return status not in ("closing", "closed", "closing_gracefully", "failed")
