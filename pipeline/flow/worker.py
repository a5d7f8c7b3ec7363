"""What a worker process of the embedded cluster sets up when it starts (a Dask worker preload).

A Ctrl-C in a terminal sends SIGINT to the whole foreground process group: the driver and every
worker process of its ``LocalCluster``. The driver alone decides how a run ends (it stops
submitting, cancels, records and closes the cluster, which ends the workers); a worker that took
SIGINT itself would print a ``KeyboardInterrupt`` traceback per process and die mid-write.
"""

from __future__ import annotations

import signal
import threading

__all__ = ["dask_setup"]


def dask_setup(worker) -> None:
    """Worker preload: ignore SIGINT (runs on the worker's event loop, in its main thread; a
    worker restarted by its nanny runs it again)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
