"""The driver of a survey run: plan, submit, track, resume, summarise.

The driver alone touches store metadata (DESIGN §1, §5). It walks the datasets of a config, skips
complete ones (same settings hash), resumes prepared ones at their unfinished operator batches,
and keeps at most ``run.max_tasks_in_flight`` tasks submitted, so a survey of 100,000 datasets
never becomes one giant graph. Operator shards of prepared datasets go before new prepares, so few
datasets are half-done at any time. Each task has a deterministic key and ``run.retries`` retries
(a lost worker's tasks are recomputed; writes are idempotent).

Resume trusts a batch only if its completion marker is set *and*, for datasets left ``prepared``
by an interrupted run, its values chunk decodes (crc32c): damaged batches are recomputed and
counted. Complete datasets are not re-read by default (reading every chunk of 100,000 datasets
on every re-run would cost as much as writing them); ``run.verify: true`` (or
``run_survey(..., verify=True)``) decodes them too and recomputes what is damaged.

Trust rules added by the reliability work (docs/reliability.md):

* inputs: every run compares the size and mtime recorded for each input file of a prepared or
  complete dataset with the file on disk (its sha256 when those differ); a dataset whose inputs
  changed is prepared again and counted under ``changed inputs``;
* isolation: a dataset group that cannot be read (torn ``zarr.json``, missing nodes) is prepared
  again; a store error while recording one dataset's outcome is reported for that dataset and
  the run goes on;
* no endless wait: a task running longer than ``run.task_timeout`` is cancelled, its worker
  removed from the cluster, and the task retried (``run.retries``) or its dataset failed; no
  worker alive for ``cluster.start_timeout`` ends the run (exit 1, store consistent);
* signals: SIGINT, SIGTERM and SIGHUP stop submitting, cancel what is in flight, record the
  partial summary, release the lock and end with exit 128 + the signal number.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.exc import ConfigError, RunInterrupted, StoreError
from pipeline.flow.config import Config
from pipeline.flow.discover import DatasetSpec, Discovery, discover
from pipeline.flow.tasks import (
    AutoBatchSize,
    PrepareResult,
    PrepareSettings,
    ShardResult,
    StoreRecipe,
    TaskFailure,
    operator_shard_task,
    prepare_task,
)
from pipeline.io.lock import acquire_run_lock
from pipeline.io.store import (
    COMPLETE,
    FAILED,
    PREPARED,
    OperatorStorage,
    Source,
    batches_done,
    check_dataset,
    create_store,
    finalize_dataset,
    mark_failed,
    reopen_dataset,
    reset_batches,
    scan_datasets,
    settings_hash,
    source_changed,
    store_overlaps,
)

__all__ = [
    "RunInterrupted",
    "RunPlan",
    "RunSummary",
    "check_store_location",
    "plan_run",
    "run_survey",
]

logger = logging.getLogger(__name__)

# exit status of a run stopped by a signal: 128 + its number, as a shell reports it
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@dataclass
class RunPlan:
    """What a run will do, decided from the config and the store before anything is submitted.

    ``changed``: datasets prepared again because an input file changed (name -> what changed);
    ``rebuilt``: datasets prepared again because their group is damaged beyond its operator
    batches (unreadable attributes, a missing or undecodable array: name -> why)."""

    to_prepare: list[DatasetSpec] = field(default_factory=list)
    to_resume: dict[str, list[int]] = field(default_factory=dict)
    tokens: dict[str, str | None] = field(default_factory=dict)
    to_finalize: list[str] = field(default_factory=list)
    skipped_complete: list[str] = field(default_factory=list)
    batches_already_done: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    damaged: dict[str, list[int]] = field(default_factory=dict)
    reopen: list[str] = field(default_factory=list)
    changed: dict[str, str] = field(default_factory=dict)
    rebuilt: dict[str, str] = field(default_factory=dict)


@dataclass
class RunSummary:
    """Counts, failures and times of one run (stored as JSON in the store under ``runs/``).

    ``stopped``: why the run ended before its work was done (a signal, no worker alive, the lock
    lost), ``None`` for a run that finished; ``stop_code``: its exit status."""

    run_id: str
    store: str
    started: str
    datasets_total: int = 0
    complete: int = 0
    failed: int = 0
    skipped_complete: int = 0
    resumed: int = 0
    changed_inputs: int = 0
    rebuilt: int = 0
    shards_computed: int = 0
    shards_skipped: int = 0
    shards_damaged: int = 0
    tasks_timed_out: int = 0
    cpu_seconds: float = 0.0  # CPU time of all tasks
    prepare_seconds: float = 0.0  # wall seconds in tasks: FITS, checks, masks, over-sampling
    kernel_seconds: float = 0.0  # wall seconds in tasks: operator rows
    write_seconds: float = 0.0  # wall seconds in tasks: store writes (groups and batches)
    wall_seconds: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)
    stopped: str | None = None
    stop_code: int | None = None

    @property
    def exit_code(self) -> int:
        """0 if every dataset is complete, 3 if the run finished with failed datasets; for a run
        stopped early, 128 + the signal number (130 SIGINT, 143 SIGTERM, 129 SIGHUP) or 1."""
        if self.stop_code is not None:
            return self.stop_code
        return 0 if self.failed == 0 else 3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        rows = [
            ("datasets", self.datasets_total),
            ("complete (this run)", self.complete),
            ("skipped (already complete)", self.skipped_complete),
            ("resumed (prepared before)", self.resumed),
            ("changed inputs (prepared again)", self.changed_inputs),
            ("damaged (prepared again)", self.rebuilt),
            ("failed", self.failed),
            ("operator batches computed", self.shards_computed),
            ("operator batches skipped (done before)", self.shards_skipped),
            ("operator batches found damaged (redone)", self.shards_damaged),
            ("tasks past run.task_timeout", self.tasks_timed_out),
            ("task CPU time [s]", f"{self.cpu_seconds:.1f}"),
            (
                "task wall time [s]",
                f"{self.prepare_seconds + self.kernel_seconds + self.write_seconds:.1f}",
            ),
            ("  loading and preparing [s]", f"{self.prepare_seconds:.1f}"),
            ("  operator kernels [s]", f"{self.kernel_seconds:.1f}"),
            ("  store writes [s]", f"{self.write_seconds:.1f}"),
            ("wall time [s]", f"{self.wall_seconds:.1f}"),
        ]
        width = max(len(r[0]) for r in rows)
        lines = [f"Run {self.run_id} -> {self.store}"]
        lines += [f"  {name:<{width}}  {value}" for name, value in rows]
        if self.failures:
            lines.append("Failures:")
            lines += [f"  {f['name']}: {f['message']}" for f in self.failures]
        if self.stopped:
            lines.append(f"Stopped early: {self.stopped}")
        return "\n".join(lines)


def check_store_location(config: Config, found: Discovery) -> None:
    """Refuse (:class:`ConfigError`) a local store inside an input folder or file, or holding
    one: writing datasets there could delete inputs (``output.store: .`` beside a ``datasets/``
    folder of lenses)."""
    inputs = config.inputs
    paths: list[str] = []
    for key in ("root", "path"):
        value = getattr(inputs, key, None)
        if value is not None:
            paths.append(str(config.path(value)))
    for spec in found.specs:
        paths += [ref.path for _, ref in spec.files()]
    overlap = store_overlaps(config.store_location, paths)
    if overlap is not None:
        raise ConfigError(
            f"output.store {config.store_location!r} overlaps the input '{overlap}': a store must "
            "never be inside an input folder nor hold an input file (writing it could delete "
            "inputs). Choose a path outside the inputs, e.g. a sibling folder"
        )


def _changed_input(spec: DatasetSpec, attrs: dict) -> str | None:
    """Why the inputs of a recorded dataset differ from ``spec``'s files on disk (other files,
    or a file whose size/mtime and then sha256 changed), or ``None``."""
    recorded = attrs.get("sources") or []
    want = sorted((role, ref.path, str(ref.hdu)) for role, ref in spec.files())
    have = sorted((s.get("role"), s.get("path"), str(s.get("hdu"))) for s in recorded)
    if want != have:
        return "the dataset's input files are not the ones it was prepared from"
    known = set(Source.__dataclass_fields__)
    for entry in recorded:
        source = Source(**{k: v for k, v in entry.items() if k in known})
        reason = source_changed(source)
        if reason is not None:
            return f"{source.role} '{source.path}': {reason}"
    return None


def plan_run(
    config: Config,
    root,
    *,
    overwrite: bool | Collection[str] = False,
    verify: bool = False,
    found: Discovery | None = None,
) -> RunPlan:
    """Decide per dataset: prepare, resume missing batches, finalize, or skip (reads, never
    writes, the store).

    ``overwrite``: True for every dataset, or the names of the datasets to prepare again. A
    batch of a ``prepared`` dataset is done if its marker is set and its values chunk decodes;
    ``verify`` also checks every node and chunk of ``complete`` datasets: damaged operator
    batches are recomputed, any other damage prepares the dataset again."""
    found = discover(config) if found is None else found
    plan = RunPlan(problems=list(found.problems))
    names = {spec.name for spec in found.specs}
    if not isinstance(overwrite, bool):
        unknown = sorted(set(overwrite) - names)
        if unknown:
            raise ConfigError(
                f"--overwrite-dataset names dataset(s) {unknown[:10]} that the config does not "
                f"describe (it has {len(names)}: see lenspipe validate CONFIG)"
            )
    expected = settings_hash(config.dataset_settings())
    existing = scan_datasets(root)
    for spec in found.specs:
        attrs = existing.get(spec.name)
        again = overwrite is True or (not isinstance(overwrite, bool) and spec.name in overwrite)
        if isinstance(attrs, Exception):
            plan.rebuilt[spec.name] = str(attrs)
            plan.to_prepare.append(spec)
            continue
        if attrs is None or again or attrs.get("status") in (None, FAILED):
            # no status: the driver died while writing it; failed: inputs may have been fixed
            plan.to_prepare.append(spec)
            continue
        if attrs.get("settings_hash") != expected:
            plan.conflicts.append(spec.name)
            continue
        changed = _changed_input(spec, attrs)
        if changed is not None:
            plan.changed[spec.name] = changed
            plan.to_prepare.append(spec)
            continue
        status = attrs.get("status")
        if status == COMPLETE and not verify:
            plan.skipped_complete.append(spec.name)
            continue
        if status not in (COMPLETE, PREPARED):
            plan.to_prepare.append(spec)
            continue
        check = check_dataset(root, spec.name)
        if check.needs_prepare:
            plan.rebuilt[spec.name] = _describe_check(check)
            plan.to_prepare.append(spec)
            continue
        bad = sorted(int(i) for i in check.damaged_batches)
        n_batches = int(attrs.get("n_batches") or _n_batches(root, spec.name))
        if status == COMPLETE:
            if bad:
                plan.to_resume[spec.name] = bad
                plan.tokens[spec.name] = attrs.get("token")
                plan.damaged[spec.name] = bad
                plan.reopen.append(spec.name)
                plan.batches_already_done += n_batches - len(bad)
            else:
                plan.skipped_complete.append(spec.name)
            continue
        # prepared: batches without marker are missing; marked ones that fail to decode are
        # damaged (counted, their markers cleared before they are recomputed)
        if n_batches:
            done = batches_done(root, spec.name)
            damaged = [i for i in bad if done[i]]
            if damaged:
                plan.damaged[spec.name] = damaged
        plan.batches_already_done += n_batches - len(bad)
        if bad:
            plan.to_resume[spec.name] = bad
            plan.tokens[spec.name] = attrs.get("token")
        else:
            plan.to_finalize.append(spec.name)
    return plan


def _n_batches(root, name: str) -> int:
    group = root["datasets"][name]
    return int(group["sparse_operator"].attrs["n_batches"]) if "sparse_operator" in group else 0


def _describe_check(check) -> str:
    parts = []
    if check.missing_nodes:
        parts.append(f"missing {', '.join(check.missing_nodes[:5])}")
    parts += [f"{node}: {why}" for node, why in list(check.damaged_arrays.items())[:3]]
    return "; ".join(parts) or "damaged"


class _Progress:
    """Two bars (datasets, operator batches) on stderr, or nothing."""

    def __init__(self, enabled: bool, n_datasets: int):
        self.bars = None
        if enabled:
            from tqdm import tqdm

            self.bars = (
                tqdm(total=n_datasets, desc="datasets", unit="ds", position=0, file=sys.stderr),
                tqdm(total=0, desc="batches ", unit="batch", position=1, file=sys.stderr),
            )

    def add_batches(self, n: int) -> None:
        if self.bars:
            self.bars[1].total += n
            self.bars[1].refresh()

    def dataset_done(self) -> None:
        if self.bars:
            self.bars[0].update(1)

    def batch_done(self) -> None:
        if self.bars:
            self.bars[1].update(1)

    def close(self) -> None:
        if self.bars:
            for bar in self.bars:
                bar.close()


class _StopSignals:
    """Catches SIGINT, SIGTERM and SIGHUP for the duration of a run (main thread only).

    The first signal is recorded in ``received``; while ``raising`` (planning, before any task
    exists) the handler also raises :class:`RunInterrupted` at once. Once tasks run, the driver
    checks ``received`` between results (at least every 0.1 s) and stops cleanly."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.raising = True
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.received is None:
            self.received = signum
        if self.raising:
            raise RunInterrupted(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Record, never raise, inside the block (cluster start: half-built objects)."""
        raising, self.raising = self.raising, False
        try:
            yield
        finally:
            self.raising = raising


def run_survey(
    config: Config,
    *,
    client: Any = None,
    overwrite: bool | Collection[str] = False,
    progress: bool | None = None,
    verify: bool | None = None,
) -> RunSummary:
    """Run (or resume) the survey described by ``config``; returns the summary.

    ``overwrite``: True to prepare every dataset again, or the names of datasets to prepare
    again. ``verify`` (default ``config.run.verify``): also check every node and chunk of
    complete datasets and repair what is damaged. Raises :class:`ConfigError` before submitting
    anything if datasets in the store were made with different settings (unless ``overwrite``)
    or the store overlaps the inputs, :class:`StoreError` if another run holds the store's lock,
    and :class:`RunInterrupted` for a stop signal received before any task was submitted. A
    signal received later, or no worker alive for ``cluster.start_timeout``, ends the run early:
    the summary says why (``stopped``) and carries the exit code.
    """
    with _StopSignals() as signals:
        found = discover(config)
        check_store_location(config, found)
        store = StoreRecipe(config.store_location, dict(config.output.storage_options))
        root = create_store(store.location, storage_options=store.storage_options or None)
        run_id = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
        lock = acquire_run_lock(root, run_id).start_heartbeat()
        try:
            verify = config.run.verify if verify is None else verify
            plan = plan_run(config, root, overwrite=overwrite, verify=verify, found=found)
            if plan.conflicts:
                raise ConfigError(
                    f"{len(plan.conflicts)} dataset(s) in {store.location} were prepared with "
                    f"different settings (first: {plan.conflicts[:5]}); rerun with --overwrite "
                    "to replace them, or choose another output.store"
                )
            with contextlib.ExitStack() as stack:
                with signals.deferred():
                    if client is None and (plan.to_prepare or plan.to_resume):
                        from pipeline.flow.cluster import cluster_client

                        client = stack.enter_context(cluster_client(config.cluster))
                    if config.run.performance_report and client is not None:
                        from distributed import performance_report

                        path = str(config.path(config.run.performance_report))
                        stack.enter_context(performance_report(filename=path))
                    driver = _Driver(config, client, root, store, plan, progress, run_id, lock)
                    return driver.run(signals)
        finally:
            signals.raising = False  # the lock is always released
            lock.release()


_UNREACHABLE = object()  # a finished task whose worker does not hand its result over


class _Stop(Exception):
    """Ends the driver loop early: ``reason`` for the summary, ``code`` the exit status."""

    def __init__(self, reason: str, code: int):
        super().__init__(reason)
        self.reason, self.code = reason, code


def _cluster_clock(dask_scheduler=None) -> dict[str, Any]:
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


async def _drop_worker(address: str, dask_scheduler=None) -> str:
    """Run on the scheduler: remove a worker that holds a task past its deadline (stopped or
    stuck in I/O while keeping its connection, which ``worker-ttl`` never notices). Its tasks go
    back to the others, as for a lost worker; if it comes back it is a new worker."""
    return await dask_scheduler.remove_worker(
        address=address, stimulus_id=f"lenspipe-task-timeout-{time.time()}", close=True
    )


class _Driver:
    def __init__(
        self,
        config: Config,
        client,
        root,
        store: StoreRecipe,
        plan: RunPlan,
        progress,
        run_id,
        lock,
    ):
        self.config, self.client, self.root, self.store = config, client, root, store
        self.plan, self.lock = plan, lock
        self.prepare_settings = PrepareSettings.from_config(config)
        self.hash = settings_hash(self.prepare_settings.recorded)[:12]
        op = config.sparse_operator
        self.operator = op if op.enabled else None
        self.batch_size: int | AutoBatchSize | None = None
        if self.operator is not None:
            self.batch_size = (
                AutoBatchSize(config.operator_memory_budget())
                if op.batch_size == "auto"
                else op.batch_size
            )
        self.storage = OperatorStorage(op.dtype, op.codec, op.level, op.keep_bits, op.shuffle)
        n_datasets = (
            len(plan.to_prepare)
            + len(plan.to_resume)
            + len(plan.to_finalize)
            + len(plan.skipped_complete)
            + len(plan.problems)
        )
        self.summary = RunSummary(
            run_id=run_id,
            store=store.location,
            started=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            datasets_total=n_datasets,
            skipped_complete=len(plan.skipped_complete),
            resumed=len(plan.to_resume) + len(plan.to_finalize),
            changed_inputs=len(plan.changed),
            rebuilt=len(plan.rebuilt),
            shards_skipped=plan.batches_already_done,
            shards_damaged=sum(len(v) for v in plan.damaged.values()),
        )
        show = config.run.progress if progress is None else progress
        self.progress = _Progress(show, n_datasets)
        self.remaining: dict[str, set[int]] = {}
        self.timings: dict[str, dict[str, float]] = {}
        self.failed: set[str] = set()
        self.prepare_queue: deque[DatasetSpec] = deque(plan.to_prepare)
        self.shard_queue: deque[tuple[str, int]] = deque()
        self.in_flight = 0
        self.task_names: dict[str, str] = {}
        self.futures: dict[str, Any] = {}
        self.tokens: dict[str, str | None] = dict(plan.tokens)
        # deadlines: when each task was first seen processing, and on which worker
        self.task_timeout = float(config.run.task_timeout)
        self.start_timeout = float(config.cluster.start_timeout)
        self.timed_out_on: dict[str, str] = {}
        self.timeouts: dict[str, int] = {}
        self.no_worker_since: float | None = None
        self.next_watch = 0.0
        self.watch_every = min(2.0, max(0.2, self.task_timeout / 5))
        self.signals: _StopSignals | None = None

    # -------------------------------------------------------------------------------- outcomes
    def _fail(self, name: str, message: str) -> None:
        if name in self.failed:
            return
        self.failed.add(name)
        self.remaining.pop(name, None)
        self.summary.failed += 1
        try:
            mark_failed(self.root, name, message)
        except (OSError, StoreError) as err:  # a full disk, a torn group: this dataset only
            message += f" [not recorded in the store: {type(err).__name__}: {err}]"
        self.summary.failures.append({"name": name, "message": message})
        self.progress.dataset_done()

    def _complete(self, name: str, *, verify_markers: bool = False) -> None:
        try:
            finalize_dataset(
                self.root, name, timings=self.timings.get(name), verify_markers=verify_markers
            )
        except (OSError, StoreError) as err:  # StoreError is an OSError; ENOSPC too
            self._fail(name, f"dataset {name!r}: could not be recorded complete: {err}")
            return
        self.summary.complete += 1
        self.progress.dataset_done()

    def _queue_shards(self, name: str, indexes: list[int]) -> None:
        """Queue operator batches of a prepared dataset."""
        self.remaining[name] = set(indexes)
        self.progress.add_batches(len(indexes))
        # depth first: this dataset's shards run before further prepares
        self.shard_queue.extendleft((name, i) for i in reversed(indexes))

    # -------------------------------------------------------------------------------- submission
    def _next_tasks(self, n: int) -> tuple[list[tuple[str, int]], list[DatasetSpec]]:
        """Up to ``n`` tasks to submit: operator shards of prepared datasets first (so few
        datasets are half-done at any time), then prepares of new datasets."""
        shards: list[tuple[str, int]] = []
        prepares: list[DatasetSpec] = []
        while len(shards) + len(prepares) < n and (self.shard_queue or self.prepare_queue):
            if self.shard_queue:
                name, index = self.shard_queue.popleft()
                if name not in self.failed:
                    shards.append((name, index))
                continue
            prepares.append(self.prepare_queue.popleft())
        return shards, prepares

    def _fill(self, pending) -> None:
        """Top up the submitted tasks to ``run.max_tasks_in_flight``, in groups: one
        ``client.map`` per kind of task is one graph update for the scheduler, where a submit per
        task costs one each (measured: ~0.5 ms of the driver's CPU per task)."""
        limit = self.config.run.max_tasks_in_flight
        free = limit - self.in_flight
        if free < max(1, limit // 8) and self.in_flight > 0:
            return  # enough queued on the workers: wait for a larger group of free slots
        shards, prepares = self._next_tasks(free)
        retries = self.config.run.retries
        futures = []
        if shards:
            keys = [f"op-{name}-{self.hash}-{index}" for name, index in shards]
            n = len(shards)
            futures += self.client.map(
                operator_shard_task,
                [self.store] * n,
                [name for name, _ in shards],
                [index for _, index in shards],
                [self.operator.backend] * n,
                [self.tokens.get(name) for name, _ in shards],
                key=keys,
                retries=retries,
                pure=False,
            )
            self.task_names.update(zip(keys, (name for name, _ in shards), strict=True))
        if prepares:
            keys = [f"prepare-{spec.name}-{self.hash}" for spec in prepares]
            n = len(prepares)
            futures += self.client.map(
                prepare_task,
                prepares,
                [self.prepare_settings] * n,
                [self.store] * n,
                [self.batch_size] * n,
                [self.storage] * n,
                [self.operator.backend if self.operator else None] * n,
                key=keys,
                retries=retries,
                pure=False,
            )
            self.task_names.update(zip(keys, (spec.name for spec in prepares), strict=True))
        pending.update(futures)
        self.futures.update((future.key, future) for future in futures)
        self.in_flight += len(futures)

    # -------------------------------------------------------------------------------- results
    def _on_prepared(self, result: PrepareResult) -> None:
        name = result.name
        first = result.first_batch
        self.summary.cpu_seconds += result.cpu_seconds
        self.summary.prepare_seconds += result.load_seconds
        self.summary.write_seconds += result.write_seconds
        # the same meaning as the task's own record: loading and preparing (not the group write,
        # which the summary counts under store writes); finalize writes this over it
        self.timings[name] = {"prepare_seconds": result.load_seconds}
        if first is not None:
            self.summary.cpu_seconds -= first.cpu_seconds  # counted once, as a shard
            self.progress.add_batches(1)
            self._account_shard(first)
        if result.complete:
            # nothing was left to compute (no operator, or its only batch came with the prepare
            # task): the task recorded the dataset complete
            self.summary.complete += 1
            self.progress.dataset_done()
            return
        self.tokens[name] = result.metadata.get("token")
        if first is None:
            self._queue_shards(name, list(range(result.n_batches)))
        else:
            self._queue_shards(name, list(range(1, result.n_batches)))

    def _account_shard(self, result: ShardResult) -> None:
        self.summary.shards_computed += 1
        self.summary.cpu_seconds += result.cpu_seconds
        self.summary.kernel_seconds += result.kernel_seconds
        self.summary.write_seconds += result.write_seconds
        timing = self.timings.setdefault(result.name, {})
        timing["operator_seconds"] = timing.get("operator_seconds", 0.0) + result.wall_seconds
        self.progress.batch_done()

    def _on_shard(self, result: ShardResult) -> None:
        self._account_shard(result)
        left = self.remaining.get(result.name)
        if left is None:
            return
        left.discard(result.batch_index)
        if not left:
            del self.remaining[result.name]
            self._complete(result.name)

    def _fetch(self, future) -> Any:
        """A finished task's result, or :data:`_UNREACHABLE` if the worker holding it does not
        answer within ``run.task_timeout`` (capped at a minute: a result is a few hundred
        bytes). A result lives on the worker that computed it: without a deadline, a worker
        stopped right after its task finished would hold the driver forever."""
        try:
            return future.result(timeout=min(self.task_timeout, 60.0))
        except TimeoutError:
            return _UNREACHABLE

    def _recompute(self, future, pending) -> None:
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
            with contextlib.suppress(Exception):  # already gone
                self.client.run_on_scheduler(_drop_worker, address)
        pending.add(future)
        self.in_flight += 1

    def _on_done(self, future, pending=None) -> bool:
        """Handle a task that ended; False if its result could not be fetched (it is being
        computed again, and the future is pending again)."""
        result = self._fetch(future) if future.status == "finished" else None
        if result is _UNREACHABLE and pending is not None:
            self._recompute(future, pending)
            return False
        name = self.task_names.pop(future.key)
        self.futures.pop(future.key, None)
        if result is _UNREACHABLE:
            self._fail(name, f"dataset {name!r}: the result of task {future.key} is unreachable")
            return True
        if future.status != "finished":
            # an exception raised after its retries, or cancelled
            if future.status == "error":
                error = future.exception()
                reason = f"failed: {type(error).__name__}: {error}"
            else:
                reason = f"ended with status {future.status!r}"
            self._fail(name, f"dataset {name!r}: task {future.key} {reason}")
            return True
        if isinstance(result, TaskFailure):
            self._fail(result.name, result.message)
        elif isinstance(result, PrepareResult):
            self._on_prepared(result)
        else:
            self._on_shard(result)
        return True

    def run(self, signals: _StopSignals | None = None) -> RunSummary:
        self.signals = signals
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        try:
            for name, message in self.plan.problems:
                # unsafe or duplicate names cannot (or must not) be written under that name; a
                # duplicate's name is also that of the entry kept, which must still run: the
                # problem is reported without marking that name failed
                self.summary.failed += 1
                self.summary.failures.append({"name": name, "message": message})
                self.progress.dataset_done()
            for _ in self.plan.skipped_complete:
                self.progress.dataset_done()
            for name in self.plan.to_finalize:
                self._complete(name, verify_markers=True)
            for name, damaged in self.plan.damaged.items():
                try:
                    # status first: a driver dying in between leaves a 'prepared' dataset,
                    # whose batches the next resume checks again
                    if name in self.plan.reopen:
                        reopen_dataset(self.root, name, damaged)
                    # the store must not claim them done while they are recomputed
                    reset_batches(self.root, name, damaged)
                except (OSError, StoreError) as err:
                    self._fail(name, f"dataset {name!r}: cannot reopen it for repair: {err}")
            for name, missing in self.plan.to_resume.items():
                if name not in self.failed:
                    self._queue_shards(name, missing)
            # nothing to submit (a plain resume of a complete store): no client was started
            if self.client is not None:
                self._loop()
        except _Stop as stop:
            self.summary.stopped, self.summary.stop_code = stop.reason, stop.code
            self._cancel_in_flight()
        finally:
            self.progress.close()
        self.summary.cpu_seconds += time.process_time() - start_cpu
        self.summary.wall_seconds = time.perf_counter() - start_wall
        self._record()
        return self.summary

    def _loop(self) -> None:
        from distributed import as_completed

        # the loop is this client's: without it, as_completed takes the default client's,
        # which need not be ours
        pending = as_completed([], loop=self.client.loop)
        self._fill(pending)
        while True:
            self._check()
            # every task that finished while the previous ones were handled
            batch = self._ready(pending)
            if batch is None:
                return
            self.in_flight -= len(batch)
            for future in batch:
                if self._on_done(future, pending):
                    future.release()
            self._fill(pending)

    def _ready(self, pending) -> list | None:
        """Finished futures (``[]`` after ``watch_every`` seconds without any, or as soon as a
        stop signal arrived), ``None`` when nothing is pending."""
        deadline = time.monotonic() + self.watch_every
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
        """Between results: a stop signal, the lock, and (every ``watch_every`` seconds) the
        workers and the tasks' deadlines."""
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
        if now < self.next_watch:
            return
        self.next_watch = now + self.watch_every
        self._watch(now)

    def _watch(self, now: float) -> None:
        """Workers able to run tasks (none for ``cluster.start_timeout`` ends the run) and the
        tasks' deadlines."""
        try:
            clock = self.client.run_on_scheduler(_cluster_clock)
        except Exception:  # noqa: BLE001 - a scheduler without lenspipe: count workers only
            clock = {"running": len(self.client.nthreads()), "held": {}}
        if clock["running"]:
            self.no_worker_since = None
        elif self.no_worker_since is None:
            self.no_worker_since = now
        elif now - self.no_worker_since > self.start_timeout:
            raise _Stop(
                f"no Dask worker was alive for {self.start_timeout:g} s (cluster.start_timeout): "
                "the workers could not start or all died (a memory_limit below what a worker "
                "needs? batch jobs that never start, or a failing job submission: see the "
                "scheduler's log). The store is consistent: fix the cluster and re-run to resume",
                1,
            )
        self._enforce_deadlines(clock["held"])

    def _enforce_deadlines(self, held: dict[str, tuple[str, float]]) -> None:
        """A task held by one worker for longer than ``run.task_timeout`` is taken from it: the
        worker is removed, so Dask sends its tasks to the others as for a lost worker (a retry),
        at most ``run.retries`` times per task; then its dataset fails."""
        for key, (address, seconds) in held.items():
            if key not in self.futures or seconds <= self.task_timeout:
                continue
            if self.timed_out_on.get(key) == address:
                continue  # already taken from that worker; the scheduler has not caught up
            self.timed_out_on[key] = address
            self.summary.tasks_timed_out += 1
            count = self.timeouts[key] = self.timeouts.get(key, 0) + 1
            name = self.task_names[key]
            logger.warning(
                "task %s was held %.0f s by worker %s (run.task_timeout %g s): removing that "
                "worker",
                key,
                seconds,
                address,
                self.task_timeout,
            )
            if count > self.config.run.retries:
                self.client.cancel([self.futures[key]])
                self._fail(
                    name,
                    f"dataset {name!r}: task {key} was held longer than run.task_timeout "
                    f"({self.task_timeout:g} s) by a worker {count} time(s) (a stopped or "
                    "stuck worker, or a task that needs more time: raise run.task_timeout)",
                )
            with contextlib.suppress(Exception):  # already gone: nothing to remove
                self.client.run_on_scheduler(_drop_worker, address)

    def _cancel_in_flight(self) -> None:
        """Cancel every submitted task (a run stopped early); writes already made stay valid:
        markers and statuses are written last."""
        futures = list(self.futures.values())
        self.futures.clear()
        if futures and self.client is not None:
            with contextlib.suppress(Exception):
                self.client.cancel(futures)

    def _record(self) -> None:
        try:
            runs = self.root.require_group("runs")
            group = runs.create_group(self.summary.run_id)
            group.attrs["summary"] = self.summary.to_dict()
            self.root.attrs["last_run"] = self.summary.to_dict()
        except (OSError, StoreError) as err:  # a full disk must not hide the summary
            logger.error("could not record run %s in the store: %s", self.summary.run_id, err)
            print(
                f"warning: the run record could not be written to the store ({err})",
                file=sys.stderr,
            )
