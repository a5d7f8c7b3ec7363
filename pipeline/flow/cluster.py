"""Dask clusters for a survey run: the embedded ``LocalCluster``, an existing scheduler, or
SLURM/PBS through dask-jobqueue, with worker processes of one thread that also keep numba, JAX and
BLAS to one thread each.

Exposure (docs/clusters.md, "Security and exposure"): the embedded cluster's scheduler, nannies,
workers and dashboard listen on 127.0.0.1 only (``LocalCluster`` serves its dashboard on every
interface unless told otherwise), there is no dashboard server unless ``dashboard: true``, and
``security: tls`` gives every process of the cluster temporary TLS credentials, so that the
scheduler refuses any client or worker without them (other users of a shared machine included).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dask

from pipeline.exc import ClusterError, ConfigError
from pipeline.flow.config import AddressCluster, JobqueueCluster, LocalClusterConfig, TlsFiles
from pipeline.flow.worker import WORKER_DASK_CONFIG, WORKER_ENVIRONMENT

logger = logging.getLogger(__name__)

__all__ = ["cluster_client", "cluster_security", "job_script", "default_n_workers"]


def default_n_workers() -> int:
    """One worker per core available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def cluster_security(config: LocalClusterConfig | AddressCluster | JobqueueCluster):
    """The ``distributed.security.Security`` of a cluster config, or None for ``security:
    none``: temporary credentials for ``tls`` (the embedded cluster), else the configured files,
    used for every role (client, scheduler, worker) and with encryption required. Raises
    :class:`ConfigError` naming the key of a file that is missing or not a regular file."""
    setting = config.security
    if setting == "none":
        return None
    from distributed.security import Security

    if setting == "tls":
        return Security.temporary()  # needs the `cryptography` package (a distributed extra)
    assert isinstance(setting, TlsFiles)
    files = {"ca_file": setting.ca_file, "cert": setting.cert, "key": setting.key}
    for name, path in files.items():
        if path is not None and not Path(path).is_file():
            raise ConfigError(
                f"cluster.security.{name}: no such file '{path}': give the PEM file (relative "
                "paths are resolved against the config file's folder)"
            )
    ca, cert = os.fspath(setting.ca_file), os.fspath(setting.cert)
    key = os.fspath(setting.key) if setting.key is not None else None
    return Security(
        tls_ca_file=ca,
        tls_client_cert=cert,
        tls_client_key=key,
        tls_scheduler_cert=cert,
        tls_scheduler_key=key,
        tls_worker_cert=cert,
        tls_worker_key=key,
        require_encryption=True,
    )


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
    # the dashboard on a free port (never collide with another cluster on 8787) of the loopback
    # interface only: the workers must reach the scheduler, nobody needs to reach its dashboard
    # but through an ssh tunnel (docs/clusters.md)
    scheduler_options = dict(options.get("scheduler_options") or {})
    scheduler_options.setdefault("dashboard_address", "127.0.0.1:0")
    options["scheduler_options"] = scheduler_options
    security = cluster_security(config)
    if security is not None:
        # dask-jobqueue 0.9: the scheduler and the client use it, and the workers get the
        # files' paths on their command line (--tls-ca-file ...); protocol becomes tls://
        options["security"] = security
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


def _local_cluster(config: LocalClusterConfig):
    """The embedded ``LocalCluster``: everything on 127.0.0.1, a dashboard only if asked."""
    from distributed import LocalCluster

    settings = dict(WORKER_DASK_CONFIG)
    scheduler_kwargs: dict = {"dashboard": config.dashboard}
    if not config.dashboard:
        # a Scheduler always starts an HTTP server (dashboard or not): serve nothing on it for
        # the moment it exists, and close it as soon as the scheduler has started, before any
        # worker (dask_setup below, run as a scheduler preload)
        settings["distributed.scheduler.http.routes"] = []
        preloads = dask.config.get("distributed.scheduler.preload", None) or []
        preloads = [preloads] if isinstance(preloads, str) else list(preloads)
        scheduler_kwargs["preload"] = [*preloads, __name__]
    # the nannies live in this process and hand their config to the workers they start
    with dask.config.set(settings):
        return LocalCluster(
            n_workers=config.n_workers or default_n_workers(),
            threads_per_worker=1,
            processes=True,
            memory_limit=config.memory_limit,
            # scheduler, nannies and workers on loopback: an empty host or a bare ":0"
            # dashboard address listens on every interface (PITFALLS, "Found by trying")
            host="127.0.0.1",
            # a free port of the loopback interface: concurrent clusters never collide (None
            # would try 8787, warn when it is taken, and still start an HTTP server)
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs=scheduler_kwargs,
            worker_dashboard_address=None,
            security=cluster_security(config),  # None: tcp://; Security.temporary(): tls://
            env=WORKER_ENVIRONMENT,
            # workers ignore SIGINT: a Ctrl-C reaches them too, and the driver ends the run
            preload=["pipeline.flow.worker"],
        )


def dask_setup(scheduler) -> None:
    """Scheduler preload of the embedded cluster with ``dashboard: false``: stop the scheduler's
    HTTP server (dashboard, /health, /metrics, /info), which ``distributed.Scheduler`` starts even
    with ``dashboard=False``, so that no HTTP port is open at all. Runs on the scheduler's event
    loop once it has started (before any worker joins); its identity then lists no dashboard."""
    server = scheduler.services.pop("dashboard", None)
    if server is not None:
        server.stop()


@contextmanager
def cluster_client(
    config: LocalClusterConfig | AddressCluster | JobqueueCluster,
) -> Iterator[object]:
    """A connected ``distributed.Client`` for the configured cluster, closed on exit (the cluster
    too, unless it was an existing scheduler)."""
    from distributed import Client

    if isinstance(config, AddressCluster):
        security = cluster_security(config)
        try:
            client = Client(config.address, timeout=config.timeout, security=security)
        except (OSError, TimeoutError) as err:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {config.address} within "
                f"{config.timeout:g} s ({type(err).__name__}: {err}); check cluster.address"
                + ("" if security is None else " and the files of cluster.security")
            ) from None
        try:
            yield client
        finally:
            client.close()
        return

    if isinstance(config, LocalClusterConfig):
        cluster = _local_cluster(config)
    else:
        cluster = _jobqueue_cluster(config)
        cluster.scale(jobs=config.jobs)
    try:
        client = Client(cluster)  # takes the cluster's security
        if getattr(config, "dashboard", False):
            print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
        try:
            yield client
        finally:
            client.close()
    finally:
        _close(cluster)


# seconds a cluster may take to close before its worker processes are killed
CLOSE_TIMEOUT = 20.0


def _close(cluster) -> None:
    """Close a cluster we started, in bounded time. A nanny restarting a worker that dies at
    once (a ``memory_limit`` below what a worker needs) never finishes closing: after
    :data:`CLOSE_TIMEOUT` seconds its worker processes are killed (by pid) instead."""
    try:
        cluster.close(timeout=CLOSE_TIMEOUT)
        return
    except Exception as err:  # noqa: BLE001 - TimeoutError, or a close that failed half-way
        logger.warning(
            "the Dask cluster did not close within %g s (%s): killing its worker processes",
            CLOSE_TIMEOUT,
            err,
        )
    for nanny in list(getattr(cluster, "workers", {}).values()):
        pid = getattr(nanny, "pid", None)  # its worker process (None: not running)
        if pid:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
