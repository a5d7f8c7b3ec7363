"""The driver loop of a survey run: submit, track, retry, record.

:class:`Driver` takes the plan of :func:`~pipeline.flow.plan.plan_run` and keeps at most
``run.max_tasks_in_flight`` tasks submitted, so a survey of 100,000 datasets never becomes one
giant graph. Operator batches of prepared datasets go before new prepares, so few datasets are
half-done at any time. Small datasets are prepared several to a task (``run.datasets_per_task``,
:mod:`pipeline.flow.grouping`); a group whose task fails, times out or cannot hand its result over
is split into one task per dataset, which then meet the rules below on their own. Each task has
a deterministic key and ``run.retries`` retries (a lost worker's tasks are recomputed; writes are
idempotent). It alone writes store metadata for the run
(DESIGN §1, §5): finalize, failures, repairs and the run record.

* isolation (:mod:`pipeline.flow.outcomes`, the ledger of what tasks came to): a store error
  while recording one dataset's outcome is reported for that dataset and the run goes on;
* no endless wait (:mod:`pipeline.flow.watch`): a task running longer than ``run.task_timeout``
  is cancelled, its worker removed from the cluster, and the task retried (``run.retries``) or its
  dataset failed; no worker alive for ``cluster.start_timeout`` ends the run (exit 1, store
  consistent);
* signals (:mod:`pipeline.flow.signals`): a stop signal is checked between results; the run
  stops submitting, cancels what is in flight and records the partial summary.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import signal
import threading
import time
from typing import Any, cast

from pipeline.exc import StoreError
from pipeline.flow.outcomes import Outcomes
from pipeline.flow.plan import RunPlan, RunSettings
from pipeline.flow.progress import Progress
from pipeline.flow.queue import PrepareTask, TaskQueue
from pipeline.flow.signals import StopSignals
from pipeline.flow.summary import RunSummary
from pipeline.flow.tasks import (
    BatchResult,
    PrepareResult,
    TaskFailure,
    operator_batch_task,
    prepare_group_task,
    prepare_task,
)
from pipeline.flow.watch import (
    LOST,
    UNREACHABLE,
    Watchdog,
    cluster_clock,
    drop_worker,
    fetch_result,
)
from pipeline.io.store import DatasetRecord, reopen_dataset, reset_batches

__all__ = ["Driver"]

logger = logging.getLogger(__name__)


class _Stop(Exception):
    """Ends the driver loop early: ``reason`` for the summary, ``code`` the exit status."""

    def __init__(self, reason: str, code: int):
        super().__init__(reason)
        self.reason, self.code = reason, code


class Driver:
    """Runs a plan on a connected Dask ``client`` (``None``: nothing to submit) and writes the
    outcomes to the open store ``root``, holding the run ``lock``; :meth:`run` returns the
    summary."""

    def __init__(
        self,
        settings: RunSettings,
        client: Any,
        root: Any,
        plan: RunPlan,
        run_id: str,
        lock: Any,
    ) -> None:
        self.settings, self.client, self.root = settings, client, root
        self.plan, self.lock = plan, lock
        self.hash = settings.settings_hash[:12]
        self.summary = RunSummary(
            run_id=run_id,
            store=settings.store.location,
            started=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            datasets_total=plan.n_datasets,
            skipped_complete=len(plan.skipped_complete),
            resumed=len(plan.to_resume) + len(plan.to_finalize),
            changed_inputs=len(plan.changed),
            rebuilt=len(plan.rebuilt),
            shards_skipped=plan.batches_already_done,
            shards_damaged=sum(len(v) for v in plan.damaged.values()),
        )
        self.progress = Progress(settings.progress, plan.n_datasets)
        self.outcomes = Outcomes(self.summary, self.progress, root)
        self.failed = self.outcomes.failed  # the same set: datasets failed so far
        self.queue = TaskQueue(plan.to_prepare, settings.datasets_per_task, self.hash)
        self.workers = 1  # able to run tasks, as last seen (the watchdog's clock)
        self.in_flight = 0
        self.futures: dict[str, Any] = {}
        self.tokens: dict[str, str | None] = dict(plan.tokens)
        self.watchdog = Watchdog(
            task_timeout=settings.task_timeout,
            start_timeout=settings.start_timeout,
            retries=settings.retries,
        )
        self.signals: StopSignals | None = None

    def _queue_batches(self, name: str, indexes: list[int]) -> None:
        """Queue operator batches of a prepared dataset."""
        self.outcomes.expect_batches(name, indexes)
        self.queue.add_batches(name, indexes)

    # -------------------------------------------------------------------------------- submission
    def _fill(self, pending: Any) -> None:
        """Top up the submitted tasks to ``run.max_tasks_in_flight``, in groups: one
        ``client.map`` per kind of task is one graph update for the scheduler, where a submit per
        task costs one each (measured: ~0.5 ms of the driver's CPU per task)."""
        limit = self.settings.max_tasks_in_flight
        free = limit - self.in_flight
        if free < max(1, limit // 8) and self.in_flight > 0:
            return  # enough queued on the workers: wait for a larger group of free slots
        batches, prepares = self.queue.take(
            free, in_flight=self.in_flight, workers=self.workers, failed=self.failed
        )
        settings = self.settings
        futures = []
        if batches:
            n = len(batches)
            futures += self.client.map(
                operator_batch_task,
                [settings.store] * n,
                [task.name for task in batches],
                [task.index for task in batches],
                [settings.backend] * n,
                [self.tokens.get(task.name) for task in batches],
                key=[task.key for task in batches],
                retries=settings.retries,
                pure=False,
            )
        singles = [task for task in prepares if not task.is_group]
        if singles:
            specs = [task.specs[0] for task in singles]
            futures += self._map_prepares(prepare_task, specs, singles, settings.retries)
        groups = [task for task in prepares if task.is_group]
        if groups:
            # no retries: a group that raises is split, and each dataset retried on its own
            lists = [task.specs for task in groups]
            futures += self._map_prepares(prepare_group_task, lists, groups, 0)
        pending.update(futures)
        self.futures.update((future.key, future) for future in futures)
        self.in_flight += len(futures)

    def _map_prepares(
        self, function: Any, items: list, tasks: list[PrepareTask], retries: int
    ) -> list:
        """``client.map`` of a prepare task (one dataset or a group) over ``items``."""
        settings, n = self.settings, len(items)
        return self.client.map(
            function,
            items,
            [settings.prepare] * n,
            [settings.store] * n,
            [settings.batch_size] * n,
            [settings.storage] * n,
            [settings.backend] * n,
            key=[task.key for task in tasks],
            retries=retries,
            pure=False,
        )

    def _split(self, key: str, reason: str) -> None:
        """Run the datasets of group task ``key`` one per task (its task failed, timed out or
        lost its result): a bad dataset then fails alone, after its own retries."""
        specs = self.queue.split(key, self.failed)
        logger.warning(
            "task %s %s: running each of its %d datasets as a task of its own",
            key,
            reason,
            len(specs),
        )

    # -------------------------------------------------------------------------------- results
    def _on_prepared(self, result: PrepareResult) -> None:
        self.queue.grouping.observe(result.wall_seconds)
        indexes = self.outcomes.prepared(result)
        if indexes is not None:
            self.tokens[result.name] = DatasetRecord.from_attrs(result.metadata).token
            self.queue.add_batches(result.name, indexes)

    def _fetch(self, future: Any) -> Any:
        """:func:`fetch_result` within ``run.task_timeout``, capped at a minute (a result is a
        few hundred bytes); :data:`LOST` for a future whose result was lost before it was
        handled."""
        if future.status == "lost":
            return LOST
        if future.status != "finished":
            return None
        return fetch_result(future, min(self.settings.task_timeout, 60.0))

    def _recompute(self, future: Any, pending: Any) -> None:
        """Remove the workers holding an unreachable result; Dask then computes the task again
        (a client still wants it), and the future comes back through ``pending``."""
        self.summary.tasks_timed_out += 1
        holders = self.client.who_has([future]).get(future.key, ())
        logger.warning(
            "the result of task %s is held by unresponsive worker(s) %s: removing them and "
            "computing it again",
            future.key,
            list(holders),
        )
        for address in holders:
            self._drop_worker(address)
        pending.add(future)
        self.in_flight += 1

    def _on_done(self, future: Any, pending: Any = None) -> bool:
        """Handle a task that ended; False if its result could not be fetched (it is being
        computed again, and the future is pending again)."""
        result = self._fetch(future)
        if result is UNREACHABLE and pending is not None:
            self._recompute(future, pending)
            return False
        if result is LOST and pending is not None:
            logger.info(
                "the result of task %s was lost with its worker: computing it again", future.key
            )
            pending.add(future)  # back through `pending` once computed again
            self.in_flight += 1
            return False
        key = future.key
        self.futures.pop(key, None)
        if key not in self.queue.names:  # a group split by the watchdog: its datasets run alone
            return True
        name = self.queue.name_of(key)
        if key in self.queue.groups and (result is UNREACHABLE or future.status != "finished"):
            status = "an unreachable result" if result is UNREACHABLE else future.status
            self._split(key, f"ended with {status!r}")
            return True
        self.queue.done(key)
        if result is UNREACHABLE:
            self.outcomes.fail(
                name, f"dataset {name!r}: the result of task {future.key} is unreachable"
            )
            return True
        if future.status != "finished":
            # an exception raised after its retries, or cancelled
            error_type = None
            if future.status == "error":
                error = future.exception()
                error_type = type(error).__name__
                reason = f"failed: {error_type}: {error}"
            else:
                reason = f"ended with status {future.status!r}"
            self.outcomes.fail(name, f"dataset {name!r}: task {future.key} {reason}", error_type)
            return True
        for each in result if isinstance(result, list) else [result]:
            if isinstance(each, TaskFailure):
                self.outcomes.fail(each.name, each.message, each.error_type)
            elif isinstance(each, PrepareResult):
                self._on_prepared(each)
            else:
                self.outcomes.batch_done(cast(BatchResult, each))
        return True

    # -------------------------------------------------------------------------------- the run
    def run(self, signals: StopSignals | None = None) -> RunSummary:
        self.signals = signals
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        try:
            for name, message in self.plan.problems:
                # unsafe or duplicate names cannot (or must not) be written under that name; a
                # duplicate's name is also that of the entry kept, which must still run: the
                # problem is reported without marking that name failed
                self.summary.failed += 1
                self.summary.failures.append({"name": name, "message": message})
                self.progress.dataset_done(failed=True)
            for _ in self.plan.skipped_complete:
                self.progress.dataset_done()
            for name in self.plan.to_finalize:
                self.outcomes.complete(name, verify_markers=True)
            for name, damaged in self.plan.damaged.items():
                try:
                    # status first: a driver dying in between leaves a 'prepared' dataset,
                    # whose batches the next resume checks again
                    if name in self.plan.reopen:
                        reopen_dataset(self.root, name, damaged)
                    # the store must not claim them done while they are recomputed
                    reset_batches(self.root, name, damaged)
                except (OSError, StoreError) as err:
                    self.outcomes.fail(
                        name, f"dataset {name!r}: cannot reopen it for repair: {err}"
                    )
            for name, missing in self.plan.to_resume.items():
                if name not in self.failed:
                    self._queue_batches(name, missing)
            # nothing to submit (a plain resume of a complete store): no client was started
            if self.client is not None:
                self.progress.start()  # datasets finished from now on measure the ETA
                self._loop()
        except _Stop as stop:
            self.summary.stopped, self.summary.stop_code = stop.reason, stop.code
            self._cancel_in_flight()
        finally:
            self.progress.close()
        self.summary.cpu_seconds += time.process_time() - start_cpu
        self.summary.wall_seconds = time.perf_counter() - start_wall
        self.outcomes.record()
        return self.summary

    def _loop(self) -> None:
        from distributed import as_completed

        # the loop is this client's: without it, as_completed takes the default client's,
        # which need not be ours
        pending = as_completed([], loop=self.client.loop)
        with contextlib.suppress(Exception):  # the watchdog's clock counts them from now on
            self.workers = max(1, len(self.client.nthreads()))
        self._fill(pending)
        while True:
            self._check()
            # every task that finished while the previous ones were handled
            ready = self._ready(pending)
            if ready is None:
                return
            self.in_flight -= len(ready)
            for future in ready:
                if self._on_done(future, pending):
                    future.release()
            self._fill(pending)

    def _ready(self, pending: Any) -> list | None:
        """Finished futures (``[]`` after the watchdog's period without any, or as soon as a
        stop signal arrived), ``None`` when nothing is pending."""
        deadline = time.monotonic() + self.watchdog.every
        # notified by as_completed on every result (the condition its own iterator waits on)
        condition = getattr(pending, "thread_condition", None) or threading.Condition()
        while not pending.has_ready():
            if pending.is_empty():
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.signals and self.signals.received):
                return []
            with condition:
                condition.wait(timeout=min(remaining, 0.1))
        return pending.next_batch(block=False)

    def _check(self) -> None:
        """Between results: a stop signal, the lock, and (every few seconds) the workers and
        the tasks' deadlines."""
        if self.signals is not None and self.signals.received is not None:
            name = signal.Signals(self.signals.received).name
            raise _Stop(f"interrupted by {name}", 128 + self.signals.received)
        if self.lock.lost:
            raise StoreError(
                f"run {self.summary.run_id} lost the store's run lock to another run (this "
                "driver stalled longer than the stale-lock time); stopping. The store is "
                "consistent: re-run once the other run has finished"
            )
        now = time.monotonic()
        if self.watchdog.due(now):
            self._watch(now)

    def _watch(self, now: float) -> None:
        """Workers able to run tasks (none for ``cluster.start_timeout`` ends the run) and the
        tasks' deadlines: a task held past ``run.task_timeout`` is taken from its worker (the
        worker is removed, so Dask retries the task elsewhere), at most ``run.retries`` times;
        then its dataset fails."""
        try:
            clock = self.client.run_on_scheduler(cluster_clock)
        except Exception:  # noqa: BLE001 - a scheduler without lenspipe: count workers only
            clock = {"running": len(self.client.nthreads()), "held": {}}
        self.workers = max(1, clock["running"])
        if self.watchdog.no_worker_for_too_long(clock["running"], now):
            raise _Stop(
                f"no Dask worker was alive for {self.settings.start_timeout:g} s "
                "(cluster.start_timeout): the workers could not start or all died (a "
                "memory_limit below what a worker needs? batch jobs still queued, cancelled "
                "(scancel, qdel), preempted or past their walltime? see the jobs' logs, "
                "cluster.options.log_directory). The store is consistent: fix the cluster and "
                "re-run to resume",
                1,
            )
        timeout = self.settings.task_timeout
        sizes = self.queue.group_sizes()
        for late in self.watchdog.overdue(clock["held"], self.futures, sizes):
            self.summary.tasks_timed_out += 1
            name = self.queue.name_of(late.key)
            if late.key in sizes:
                # a group is not retried whole: its datasets go on one per task, elsewhere
                self.client.cancel([self.futures.pop(late.key)])
                self._split(late.key, f"was held {late.seconds:.0f} s by worker {late.address}")
                self._drop_worker(late.address)
                continue
            logger.warning(
                "task %s was held %.0f s by worker %s (run.task_timeout %g s): removing that "
                "worker",
                late.key,
                late.seconds,
                late.address,
                timeout,
            )
            if late.give_up:
                self.client.cancel([self.futures[late.key]])
                self.outcomes.fail(
                    name,
                    f"dataset {name!r}: task {late.key} was held longer than run.task_timeout "
                    f"({timeout:g} s) by a worker {late.count} time(s) (a stopped or stuck "
                    "worker, or a task that needs more time: raise run.task_timeout)",
                )
            self._drop_worker(late.address)

    def _drop_worker(self, address: str) -> None:
        with contextlib.suppress(Exception):  # already gone: nothing to remove
            self.client.run_on_scheduler(drop_worker, address)

    def _cancel_in_flight(self) -> None:
        """Cancel every submitted task (a run stopped early); writes already made stay valid:
        markers and statuses are written last."""
        futures = list(self.futures.values())
        self.futures.clear()
        if futures and self.client is not None:
            with contextlib.suppress(Exception):
                self.client.cancel(futures)
