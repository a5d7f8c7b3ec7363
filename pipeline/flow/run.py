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
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import sys
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pipeline.exc import ConfigError, StoreError
from pipeline.flow.config import Config
from pipeline.flow.discover import DatasetSpec, discover
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
    batches_done,
    create_store,
    damaged_batches,
    finalize_dataset,
    mark_failed,
    reopen_dataset,
    reset_batches,
    settings_hash,
    verify_dataset,
)

__all__ = ["RunPlan", "RunSummary", "plan_run", "run_survey"]


@dataclass
class RunPlan:
    """What a run will do, decided from the config and the store before anything is submitted."""

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


@dataclass
class RunSummary:
    """Counts, failures and times of one run (stored as JSON in the store under ``runs/``)."""

    run_id: str
    store: str
    started: str
    datasets_total: int = 0
    complete: int = 0
    failed: int = 0
    skipped_complete: int = 0
    resumed: int = 0
    shards_computed: int = 0
    shards_skipped: int = 0
    shards_damaged: int = 0
    cpu_seconds: float = 0.0  # CPU time of all tasks
    prepare_seconds: float = 0.0  # wall seconds in tasks: FITS, checks, masks, over-sampling
    kernel_seconds: float = 0.0  # wall seconds in tasks: operator rows
    write_seconds: float = 0.0  # wall seconds in tasks: store writes (groups and batches)
    wall_seconds: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 if every dataset is complete, 3 if the run finished with failed datasets."""
        return 0 if self.failed == 0 else 3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        rows = [
            ("datasets", self.datasets_total),
            ("complete (this run)", self.complete),
            ("skipped (already complete)", self.skipped_complete),
            ("resumed (prepared before)", self.resumed),
            ("failed", self.failed),
            ("operator batches computed", self.shards_computed),
            ("operator batches skipped (done before)", self.shards_skipped),
            ("operator batches found damaged (redone)", self.shards_damaged),
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
        return "\n".join(lines)


def _existing(root) -> dict[str, dict]:
    datasets = root["datasets"]
    return {key: dict(datasets[key].attrs) for key in datasets.group_keys()}


def plan_run(config: Config, root, *, overwrite: bool = False, verify: bool = False) -> RunPlan:
    """Decide per dataset: prepare, resume missing batches, finalize, or skip (reads, never
    writes, the store).

    A batch of a ``prepared`` dataset is done if its marker is set and its values chunk decodes;
    ``verify`` also decodes every chunk of ``complete`` datasets, which are reopened to recompute
    damaged batches."""
    found = discover(config)
    plan = RunPlan(problems=list(found.problems))
    expected = settings_hash(config.dataset_settings())
    existing = _existing(root)
    for spec in found.specs:
        attrs = existing.get(spec.name)
        if attrs is None or overwrite or attrs.get("status") in (None, FAILED):
            # no status: the driver died while writing it; failed: inputs may have been fixed
            plan.to_prepare.append(spec)
            continue
        if attrs.get("settings_hash") != expected:
            plan.conflicts.append(spec.name)
            continue
        status = attrs.get("status")
        has_operator = "sparse_operator" in root["datasets"][spec.name]
        if status == COMPLETE and verify and has_operator:
            bad = verify_dataset(root, spec.name)
            if bad:
                n_batches = int(root["datasets"][spec.name]["sparse_operator"].attrs["n_batches"])
                plan.batches_already_done += n_batches - len(bad)
                plan.to_resume[spec.name] = bad
                plan.tokens[spec.name] = attrs.get("token")
                plan.damaged[spec.name] = bad
                plan.reopen.append(spec.name)
            else:
                plan.skipped_complete.append(spec.name)
        elif status == COMPLETE:
            plan.skipped_complete.append(spec.name)
        elif status == PREPARED and has_operator:
            done = batches_done(root, spec.name)
            # a marker without a decodable chunk (torn or lost write) is not trusted
            damaged = sorted(damaged_batches(root, spec.name, np.flatnonzero(done).tolist()))
            if damaged:
                plan.damaged[spec.name] = damaged
                done[damaged] = False
            plan.batches_already_done += int(done.sum())
            missing = [int(i) for i in (~done).nonzero()[0]]
            if missing:
                plan.to_resume[spec.name] = missing
                plan.tokens[spec.name] = attrs.get("token")
            else:
                plan.to_finalize.append(spec.name)
        elif status == PREPARED:
            plan.to_finalize.append(spec.name)
        else:
            plan.to_prepare.append(spec)
    return plan


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


def run_survey(
    config: Config,
    *,
    client: Any = None,
    overwrite: bool = False,
    progress: bool | None = None,
    verify: bool | None = None,
) -> RunSummary:
    """Run (or resume) the survey described by ``config``; returns the summary.

    ``verify`` (default ``config.run.verify``): also decode every operator chunk of complete
    datasets and recompute damaged batches. Raises :class:`ConfigError` before submitting
    anything if datasets in the store were made with different settings (unless ``overwrite``),
    and :class:`StoreError` if another run holds the store's lock.
    """
    store = StoreRecipe(config.store_location, dict(config.output.storage_options))
    root = create_store(store.location, storage_options=store.storage_options or None)
    run_id = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    lock = acquire_run_lock(root, run_id).start_heartbeat()
    try:
        verify = config.run.verify if verify is None else verify
        plan = plan_run(config, root, overwrite=overwrite, verify=verify)
        if plan.conflicts:
            raise ConfigError(
                f"{len(plan.conflicts)} dataset(s) in {store.location} were prepared with "
                f"different settings (first: {plan.conflicts[:5]}); rerun with --overwrite to "
                "replace them, or choose another output.store"
            )
        with contextlib.ExitStack() as stack:
            if client is None and (plan.to_prepare or plan.to_resume):
                from pipeline.flow.cluster import cluster_client

                client = stack.enter_context(cluster_client(config.cluster))
            if config.run.performance_report and client is not None:
                from distributed import performance_report

                path = str(config.path(config.run.performance_report))
                stack.enter_context(performance_report(filename=path))
            return _Driver(config, client, root, store, plan, progress, run_id, lock).run()
    finally:
        lock.release()


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
        self.tokens: dict[str, str | None] = dict(plan.tokens)

    # -------------------------------------------------------------------------------- outcomes
    def _fail(self, name: str, message: str) -> None:
        if name in self.failed:
            return
        self.failed.add(name)
        self.remaining.pop(name, None)
        self.summary.failed += 1
        self.summary.failures.append({"name": name, "message": message})
        mark_failed(self.root, name, message)
        self.progress.dataset_done()

    def _complete(self, name: str, *, verify_markers: bool = False) -> None:
        try:
            finalize_dataset(
                self.root, name, timings=self.timings.get(name), verify_markers=verify_markers
            )
        except StoreError as err:
            self._fail(name, str(err))
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
        self.in_flight += len(futures)

    # -------------------------------------------------------------------------------- results
    def _on_prepared(self, result: PrepareResult) -> None:
        name = result.name
        first = result.first_batch
        self.summary.cpu_seconds += result.cpu_seconds
        self.summary.prepare_seconds += result.load_seconds
        self.summary.write_seconds += result.write_seconds
        self.timings[name] = {
            "prepare_seconds": result.wall_seconds - (first.wall_seconds if first else 0.0)
        }
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

    def _on_done(self, future) -> None:
        name = self.task_names.pop(future.key)
        if future.status != "finished":
            # an exception raised after its retries, or cancelled
            if future.status == "error":
                error = future.exception()
                reason = f"failed: {type(error).__name__}: {error}"
            else:
                reason = f"ended with status {future.status!r}"
            self._fail(name, f"dataset {name!r}: task {future.key} {reason}")
            return
        result = future.result()
        if isinstance(result, TaskFailure):
            self._fail(result.name, result.message)
        elif isinstance(result, PrepareResult):
            self._on_prepared(result)
        else:
            self._on_shard(result)

    def run(self) -> RunSummary:
        from distributed import as_completed

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
                # status first: a driver dying in between leaves a 'prepared' dataset, whose
                # batches the next resume checks again
                if name in self.plan.reopen:
                    reopen_dataset(self.root, name, damaged)
                # the store must not claim them done while they are recomputed
                reset_batches(self.root, name, damaged)
            for name, missing in self.plan.to_resume.items():
                self._queue_shards(name, missing)
            # nothing to submit (a plain resume of a complete store): no client was started
            if self.client is not None:
                # a batch is every task that finished while the previous batch was handled. The
                # loop is this client's: without it, as_completed takes the default client's,
                # which need not be ours
                pending = as_completed([], loop=self.client.loop)
                self._fill(pending)
                for batch in pending.batches():
                    if self.lock.lost:
                        raise StoreError(
                            f"run {self.summary.run_id} lost the store's run lock to another "
                            "run (this driver stalled longer than the stale-lock time); "
                            "stopping. The store is consistent: re-run once the other run has "
                            "finished"
                        )
                    self.in_flight -= len(batch)
                    for future in batch:
                        self._on_done(future)
                        future.release()
                    self._fill(pending)
        finally:
            self.progress.close()
        self.summary.cpu_seconds += time.process_time() - start_cpu
        self.summary.wall_seconds = time.perf_counter() - start_wall
        self._record()
        return self.summary

    def _record(self) -> None:
        runs = self.root.require_group("runs")
        group = runs.create_group(self.summary.run_id)
        group.attrs["summary"] = self.summary.to_dict()
        self.root.attrs["last_run"] = self.summary.to_dict()
