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
import threading
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


def _import_jobqueue(kind: str):
    """``dask_jobqueue``, imported without its side effect on this process: its ``runner``
    module replaces the SIGINT handler with ``sys.exit()`` when imported, so a Ctrl-C of the run
    ended the driver with exit status 0 and no summary. The handler in place before (the run's
    :class:`~pipeline.flow.signals.StopSignals`) is put back."""
    previous = signal.getsignal(signal.SIGINT)
    try:
        import dask_jobqueue
    except ImportError:
        raise ConfigError(
            f"cluster.kind {kind!r} needs dask-jobqueue: pip install dask-jobqueue"
        ) from None
    finally:
        if previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)
    return dask_jobqueue


def _check_job_size(config: JobqueueCluster) -> None:
    """``cores`` and ``memory`` per job, from ``cluster.options`` or dask-jobqueue's own config
    (``jobqueue.slurm.cores``, ...); raises :class:`ConfigError` naming the missing one (a
    cluster refusing them half-way through its construction cannot be closed)."""
    for key, example in (("cores", "16"), ("memory", "64GB")):
        if config.options.get(key) is None:
            if dask.config.get(f"jobqueue.{config.kind}.{key}", None) is None:
                raise ConfigError(
                    f"cluster.options.{key}: required for kind {config.kind} (per batch job, "
                    f"e.g. {key}: {example}), or set jobqueue.{config.kind}.{key} in Dask's "
                    "config"
                )


def _jobqueue_cluster(config: JobqueueCluster):
    dask_jobqueue = _import_jobqueue(config.kind)
    cls = dask_jobqueue.SLURMCluster if config.kind == "slurm" else dask_jobqueue.PBSCluster
    _check_job_size(config)
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
    except (TypeError, ValueError) as err:
        # TypeError: an unknown option; ValueError: a value it cannot read
        raise ConfigError(f"cluster.options: {err}") from None
    except RuntimeError as err:
        # the scheduler did not start: an `interface` this machine lacks, a port in use
        cause = f" ({err.__cause__})" if str(err.__cause__ or "") not in str(err) else ""
        raise ConfigError(
            f"cluster.options: the Dask scheduler could not start on this machine: {err}{cause}"
        ) from None


def job_script(config: JobqueueCluster) -> str:
    """The batch script one job of a SLURM/PBS cluster would run (nothing is submitted)."""
    cluster = _jobqueue_cluster(config)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


# seconds the batch system's submit command may take for all the jobs: sbatch or qsub answer
# within a second when the controller does (sbatch retries an unreachable one for a minute)
SUBMIT_TIMEOUT = 300.0


def _submit_jobs(cluster, config: JobqueueCluster) -> None:
    """Submit the first batch jobs of a dask-jobqueue cluster (``config.first_jobs``: ``jobs``,
    or the minimum of ``adapt``, at least one) and wait for the submit commands to return (not
    for the jobs to start).

    Raises
    ------
    ClusterError
        A submission failed (an unknown partition or account, a batch system that is not
        configured, no submit command), quoting the command's error output, or the submissions
        took longer than ``SUBMIT_TIMEOUT`` (at most ``cluster.start_timeout``) seconds.
    """
    # JobQueueCluster.scale(jobs=...) submits in the background and only logs a failed
    # submission: the run then waited cluster.start_timeout for workers that could never come
    while len(cluster.worker_spec) < config.first_jobs:
        cluster.worker_spec.update(cluster.new_worker_spec())
    command = getattr(cluster.job_cls, "submit_command", None) or "the submit command"
    timeout = min(SUBMIT_TIMEOUT, config.start_timeout)
    try:
        cluster.sync(cluster._correct_state, callback_timeout=timeout)
    except (TimeoutError, OSError, RuntimeError, ValueError) as err:
        # dask-jobqueue: RuntimeError for an exit status other than 0, ValueError for an output
        # without a job id; FileNotFoundError for no such command
        _mark_unsubmitted_failed(cluster)
        if isinstance(err, TimeoutError):
            reason = (
                f"{command} did not return within {timeout:g} s: is the batch system's "
                "controller reachable from this machine?"
            )
        elif isinstance(err, OSError):
            reason = (
                f"cannot run {command} ({err}): run lenspipe where the batch system's commands "
                "are installed (a login node)"
            )
        else:
            reason = (
                f"the job submission failed; {command} said:\n{_command_errors(str(err))}\n"
                "check cluster.options (queue, account, memory, walltime) against the batch "
                "system's limits"
            )
        raise ClusterError(f"cluster.kind {config.kind}: {reason}; nothing was computed") from None


def _start_jobs(cluster, config: JobqueueCluster) -> None:
    """The first jobs (:func:`_submit_jobs`: a failing submission ends the run at once), then,
    with ``cluster.adapt``, dask-jobqueue's adaptive scaling between its minimum and maximum
    jobs. Adaptive submissions happen in the background: one that fails later (a limit on
    queued jobs reached) is only logged, and the run goes on with the jobs it has."""
    _submit_jobs(cluster, config)
    if config.adapt is not None:
        cluster.adapt(minimum_jobs=config.adapt.minimum, maximum_jobs=config.adapt.maximum)


def _mark_unsubmitted_failed(cluster) -> None:
    """Mark the jobs whose submission failed (no job id) as failed: a job is never told it did
    not start, and a cluster refuses to close (an assertion) while one still says ``created``.
    The jobs that were submitted are cancelled when the cluster closes."""
    from distributed.core import Status

    # a job is in `workers` once every submission has returned, in `_created` from the start
    for job in {*cluster.workers.values(), *getattr(cluster, "_created", ())}:
        if getattr(job, "job_id", None) is None:
            job.status = Status.failed


def _command_errors(message: str) -> str:
    """The error output of a failed submit command, from dask-jobqueue's message (which also
    gives the exit status, the command line and the standard output), or the message itself."""
    _, found, stderr = message.partition("stderr:\n")
    return stderr.strip() if found and stderr.strip() else message.strip()


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
    try:
        if isinstance(config, JobqueueCluster):
            _start_jobs(cluster, config)
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
