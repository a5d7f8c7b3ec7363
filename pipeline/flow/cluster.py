"""Dask clusters for a survey run: the embedded ``LocalCluster``, an existing scheduler, or
SLURM/PBS through dask-jobqueue, with worker processes of one thread that also keep numba, JAX and
BLAS to one thread each.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import dask

from pipeline.exc import ClusterError, ConfigError
from pipeline.flow.config import AddressCluster, JobqueueCluster, LocalClusterConfig
from pipeline.flow.tasks import WORKER_DASK_CONFIG, WORKER_ENVIRONMENT

__all__ = ["cluster_client", "job_script", "default_n_workers"]


def default_n_workers() -> int:
    """One worker per core available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _jobqueue_cluster(config: JobqueueCluster):
    try:
        import dask_jobqueue
    except ImportError:
        raise ConfigError(
            f"cluster.kind {config.kind!r} needs dask-jobqueue: pip install dask-jobqueue"
        ) from None
    cls = dask_jobqueue.SLURMCluster if config.kind == "slurm" else dask_jobqueue.PBSCluster
    options = dict(config.options)
    prologue = [f"export {k}='{v}'" for k, v in WORKER_ENVIRONMENT.items()]
    options["job_script_prologue"] = [*prologue, *options.get("job_script_prologue", [])]
    options.setdefault("processes", options.get("cores", 1))
    # a free port for the scheduler's dashboard: never collide with another cluster on 8787
    options.setdefault("scheduler_options", {}).setdefault("dashboard_address", ":0")
    try:
        return cls(**options)
    except TypeError as err:
        raise ConfigError(f"cluster.options: {err}") from None


def job_script(config: JobqueueCluster) -> str:
    """The batch script one job of a SLURM/PBS cluster would run (nothing is submitted)."""
    cluster = _jobqueue_cluster(config)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


@contextmanager
def cluster_client(
    config: LocalClusterConfig | AddressCluster | JobqueueCluster,
) -> Iterator[object]:
    """A connected ``distributed.Client`` for the configured cluster, closed on exit (the cluster
    too, unless it was an existing scheduler)."""
    from distributed import Client, LocalCluster

    if isinstance(config, AddressCluster):
        try:
            client = Client(config.address, timeout=config.timeout)
        except (OSError, TimeoutError) as err:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {config.address} within "
                f"{config.timeout:g} s ({type(err).__name__}: {err}); check cluster.address"
            ) from None
        try:
            yield client
        finally:
            client.close()
        return

    if isinstance(config, LocalClusterConfig):
        # the nannies live in this process and hand their config to the workers they start
        with dask.config.set(WORKER_DASK_CONFIG):
            cluster = LocalCluster(
                n_workers=config.n_workers or default_n_workers(),
                threads_per_worker=1,
                processes=True,
                memory_limit=config.memory_limit,
                dashboard_address=":0",  # a free port: concurrent clusters never collide
                env=WORKER_ENVIRONMENT,
            )
    else:
        cluster = _jobqueue_cluster(config)
        cluster.scale(jobs=config.jobs)
    try:
        client = Client(cluster)
        if getattr(config, "dashboard", False):
            print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()
