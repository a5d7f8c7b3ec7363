"""No endless wait: the driver's view of the cluster's clock.

Every few seconds the driver asks the scheduler (:func:`cluster_clock`, run there) how many
workers can run tasks and how long each task has been held by its worker. :class:`Watchdog`
turns that into decisions: no worker alive for ``cluster.start_timeout`` ends the run; a task
held longer than ``run.task_timeout`` is taken from its worker (:func:`drop_worker`: Dask sends
its tasks to the others, as for a lost worker) and, after ``run.retries`` such retries, its
dataset fails. The driver acts on them (:mod:`pipeline.flow.run`). :func:`fetch_result` takes a
finished task's result within a deadline, or says at once that it was lost with its worker.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LOST",
    "UNREACHABLE",
    "Overdue",
    "Watchdog",
    "cluster_clock",
    "drop_worker",
    "fetch_result",
]


UNREACHABLE = object()
"""A finished task whose worker does not hand its result over (:func:`fetch_result`)."""
LOST = object()
"""A finished task whose result was lost with its worker: Dask computes it again."""


def fetch_result(future: Any, timeout: float) -> Any:
    """A finished task's result, :data:`UNREACHABLE` if the worker holding it does not answer
    within ``timeout`` seconds, or :data:`LOST` as soon as the result is lost with that worker
    (its batch job cancelled, its node gone: Dask computes the task again).

    A result lives on the worker that computed it: without a deadline, a worker stopped right
    after its task finished would hold the driver forever; and waiting for a lost result waits
    for its recomputation, which needs a worker (with none left, it waited the whole ``timeout``
    while ``cluster.start_timeout`` went unchecked)."""
    deadline = time.monotonic() + timeout
    while future.status == "finished":
        left = deadline - time.monotonic()
        if left <= 0:
            return UNREACHABLE
        try:
            return future.result(timeout=min(left, 1.0))
        except TimeoutError:
            continue
    return LOST


def cluster_clock(dask_scheduler: Any = None) -> dict[str, Any]:
    """Run on the scheduler: how many workers can run tasks, and for each task on a worker how
    long it has been held there, in seconds.

    A worker above its memory limit is restarted by its nanny again and again, or registers and
    pauses at once: neither runs a task, so only workers with status ``running`` count. A task
    executing has been held for its execution time as of the worker's last heartbeat plus the
    time since that heartbeat: a stopped (SIGSTOP) or hung worker stops sending heartbeats but
    keeps its connection, so ``worker-ttl`` never removes it, while this clock keeps running. A
    task queued behind others on a worker is held for as long as that worker has been silent."""
    now = time.time()
    running = 0
    held: dict[str, tuple[str, float]] = {}
    for address, ws in dask_scheduler.workers.items():
        running += ws.status.name == "running"
        silent = max(0.0, now - ws.last_seen)
        for ts in ws.processing:
            held[str(ts.key)] = (address, silent)
        for ts, seconds in ws.executing.items():
            held[str(ts.key)] = (address, float(seconds) + silent)
    return {"running": running, "held": held}


async def drop_worker(address: str, dask_scheduler: Any = None) -> Any:
    """Run on the scheduler: remove a worker that holds a task past its deadline (stopped or
    stuck in I/O while keeping its connection, which ``worker-ttl`` never notices). Its tasks go
    back to the others, as for a lost worker; if it comes back it is a new worker."""
    return await dask_scheduler.remove_worker(
        address=address, stimulus_id=f"lenspipe-task-timeout-{time.time()}", close=True
    )


@dataclass(frozen=True, kw_only=True)
class Overdue:
    """A task held by ``address`` for ``seconds`` (past ``run.task_timeout``), the ``count``-th
    time; ``give_up``: more often than ``run.retries`` allows."""

    key: str
    address: str
    seconds: float
    count: int
    give_up: bool


class Watchdog:
    """Workers alive and task deadlines, checked at most every ``every`` seconds (seconds:
    ``task_timeout``, ``start_timeout``; ``retries``: how often one task may be taken from a
    worker before its dataset fails)."""

    def __init__(self, *, task_timeout: float, start_timeout: float, retries: int) -> None:
        self.task_timeout, self.start_timeout, self.retries = task_timeout, start_timeout, retries
        self.every = min(2.0, max(0.2, task_timeout / 5))
        self.next_watch = 0.0
        self.no_worker_since: float | None = None
        self.timed_out_on: dict[str, str] = {}
        self.timeouts: dict[str, int] = {}

    def due(self, now: float) -> bool:
        """True once every ``every`` seconds (then the driver asks for the clock)."""
        if now < self.next_watch:
            return False
        self.next_watch = now + self.every
        return True

    def no_worker_for_too_long(self, running: int, now: float) -> bool:
        """Whether no worker has been able to run tasks for longer than ``start_timeout``."""
        if running:
            self.no_worker_since = None
        elif self.no_worker_since is None:
            self.no_worker_since = now
        elif now - self.no_worker_since > self.start_timeout:
            return True
        return False

    def overdue(
        self,
        held: dict[str, tuple[str, float]],
        ours: Collection[str],
        sizes: Mapping[str, int] | None = None,
    ) -> Iterator[Overdue]:
        """Tasks of ``ours`` held past their deadline, each once per worker holding it: a task
        of ``sizes[key]`` datasets (a prepare group) has that many times ``task_timeout``."""
        for key, (address, seconds) in held.items():
            if key not in ours or seconds <= self.task_timeout * (sizes or {}).get(key, 1):
                continue
            if self.timed_out_on.get(key) == address:
                continue  # already taken from that worker; the scheduler has not caught up
            self.timed_out_on[key] = address
            count = self.timeouts[key] = self.timeouts.get(key, 0) + 1
            yield Overdue(
                key=key,
                address=address,
                seconds=seconds,
                count=count,
                give_up=count > self.retries,
            )
