"""What a run will do, decided before anything is submitted: the run settings derived once from
the config (:class:`RunSettings`), the store-location check, and per dataset what is left to do
(:func:`plan_run`). Used alike by ``lenspipe validate``, ``lenspipe run --dry-run`` and the driver.

Resume trusts a batch only if its completion marker is set *and*, for datasets left ``prepared``
by an interrupted run, its values chunk decodes (crc32c): damaged batches are recomputed and
counted. Complete datasets are not re-read by default (reading every chunk of 100,000 datasets
on every re-run would cost as much as writing them); ``run.verify: true`` decodes them too. Every
run compares the size and mtime recorded for each input file of a prepared or complete dataset
with the file on disk (its sha256 when those differ): a dataset whose inputs changed is prepared
again; a dataset group that cannot be read (torn ``zarr.json``, missing nodes) is prepared again.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Literal

from pipeline.exc import ConfigError, StoreError
from pipeline.flow.config import AddressCluster, Config, LocalClusterConfig
from pipeline.flow.discover import DatasetSpec, Discovery, discover
from pipeline.flow.prepare import PrepareSettings
from pipeline.flow.tasks import AutoBatchSize
from pipeline.io.store import (
    DatasetRecord,
    DatasetStatus,
    OperatorStorage,
    StoreRecipe,
    batches_done,
    check_dataset,
    dataset_records,
    operator_batch_count,
    settings_hash,
    source_changed,
    store_overlaps,
)

__all__ = ["RunPlan", "RunSettings", "check_store_location", "plan_run", "with_workers"]


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """A run's settings, derived once from the config (and the command line's ``verify`` and
    ``progress``): what planning and the driver share.

    ``settings_hash``: the hash of the settings recorded with each dataset (a dataset made with
    others is a conflict); ``backend``: the operator backend, ``None`` when the operator is off;
    ``batch_size``: most rows per operator batch, :class:`AutoBatchSize` for ``auto``, or
    ``None`` when the operator is off; ``task_timeout``, ``start_timeout`` in seconds."""

    store: StoreRecipe
    prepare: PrepareSettings
    settings_hash: str
    backend: str | None
    batch_size: int | AutoBatchSize | None
    storage: OperatorStorage
    verify: bool
    progress: bool
    retries: int
    max_tasks_in_flight: int
    datasets_per_task: int | Literal["auto"]
    task_timeout: float
    start_timeout: float

    @classmethod
    def from_config(
        cls, config: Config, *, verify: bool | None = None, progress: bool | None = None
    ) -> RunSettings:
        """``verify``, ``progress``: the command line's choice, ``None`` for the config's."""
        op = config.sparse_operator
        batch_size: int | AutoBatchSize | None = None
        if op.enabled:
            batch_size = (
                AutoBatchSize(config.operator_memory_budget())
                if op.batch_size == "auto"
                else op.batch_size
            )
        prepare = PrepareSettings.from_config(config)
        return cls(
            store=StoreRecipe(config.store_location, dict(config.output.storage_options)),
            prepare=prepare,
            settings_hash=settings_hash(prepare.recorded),
            backend=op.backend if op.enabled else None,
            batch_size=batch_size,
            storage=op.storage(),
            verify=config.run.verify if verify is None else verify,
            progress=config.run.progress if progress is None else progress,
            retries=config.run.retries,
            max_tasks_in_flight=config.run.max_tasks_in_flight,
            datasets_per_task=config.run.datasets_per_task,
            task_timeout=float(config.run.task_timeout),
            start_timeout=float(config.cluster.start_timeout),
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

    @property
    def n_datasets(self) -> int:
        """Datasets the run accounts for: to do, done before, and problems."""
        return (
            len(self.to_prepare)
            + len(self.to_resume)
            + len(self.to_finalize)
            + len(self.skipped_complete)
            + len(self.problems)
        )


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


def with_workers(config: Config, n_workers: int | None) -> Config:
    """``config`` with the embedded cluster's worker processes set to ``n_workers`` (``lenspipe
    run --workers``), ``config`` itself for ``None``.

    Raises :class:`ConfigError` for a cluster lenspipe does not start its workers in: an
    existing scheduler (``kind: address``: its workers are started outside lenspipe) or
    SLURM/PBS (workers are ``cluster.jobs`` batch jobs of ``options.processes`` each: set those
    in the config)."""
    if n_workers is None:
        return config
    cluster = config.cluster
    if isinstance(cluster, LocalClusterConfig):
        return config.model_copy(
            update={"cluster": cluster.model_copy(update={"n_workers": n_workers})}
        )
    if isinstance(cluster, AddressCluster):
        raise ConfigError(
            f"--workers {n_workers}: the config joins the scheduler at {cluster.address} "
            "(cluster.kind: address), whose workers are started outside lenspipe; start more "
            "workers there, or drop --workers"
        )
    processes = int(cluster.options.get("processes", cluster.options.get("cores", 1)))
    jobs = cluster.jobs
    raise ConfigError(
        f"--workers {n_workers}: on {cluster.kind.upper()} (cluster.kind: {cluster.kind}) the "
        f"workers are cluster.jobs batch jobs of cluster.options.processes worker processes each "
        f"(now {jobs} x {processes} = {jobs * processes}); set those in the config, or drop "
        "--workers"
    )


def _changed_input(spec: DatasetSpec, record: DatasetRecord) -> str | None:
    """Why the inputs of a recorded dataset differ from ``spec``'s files on disk (other files,
    or a file whose size/mtime and then sha256 changed), or ``None``."""
    want = sorted((role, ref.path, str(ref.hdu)) for role, ref in spec.files())
    have = sorted((s.role, s.path, str(s.hdu)) for s in record.sources)
    if want != have:
        return "the dataset's input files are not the ones it was prepared from"
    for source in record.sources:
        reason = source_changed(source)
        if reason is not None:
            return f"{source.role} '{source.path}': {reason}"
    return None


def _changed_overrides(spec: DatasetSpec, record: DatasetRecord) -> str | None:
    """How the dataset's per-dataset settings (a manifest's ``mask_radius``, ...) differ from
    those it was prepared with, or ``None`` (also for stores that did not record them)."""
    if record.overrides is None:
        return None
    want = json.loads(json.dumps(spec.overrides()))
    have = dict(record.overrides)
    if want == have:
        return None
    keys = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
    what = ", ".join(f"{k} {have.get(k, 'unset')} -> {want.get(k, 'unset')}" for k in keys)
    return f"its per-dataset settings changed ({what})"


def plan_run(
    config: Config,
    root,
    *,
    overwrite: bool | Collection[str] = False,
    verify: bool = False,
    found: Discovery | None = None,
    settings: RunSettings | None = None,
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
    if settings is None:
        settings = RunSettings.from_config(config, verify=verify)
    expected = settings.settings_hash
    existing = dataset_records(root)
    for spec in found.specs:
        record = existing.get(spec.name)
        again = overwrite is True or (not isinstance(overwrite, bool) and spec.name in overwrite)
        if isinstance(record, StoreError):
            plan.rebuilt[spec.name] = str(record)
            plan.to_prepare.append(spec)
            continue
        if record is None or again or record.status in (None, DatasetStatus.FAILED):
            # no status: the driver died while writing it; failed: inputs may have been fixed
            plan.to_prepare.append(spec)
            continue
        if record.settings_hash != expected:
            plan.conflicts.append(spec.name)
            continue
        changed = _changed_input(spec, record) or _changed_overrides(spec, record)
        if changed is not None:
            plan.changed[spec.name] = changed
            plan.to_prepare.append(spec)
            continue
        status = record.status
        if status == DatasetStatus.COMPLETE and not verify:
            plan.skipped_complete.append(spec.name)
            continue
        if status not in (DatasetStatus.COMPLETE, DatasetStatus.PREPARED):
            plan.to_prepare.append(spec)
            continue
        check = check_dataset(root, spec.name)
        if check.needs_prepare:
            plan.rebuilt[spec.name] = _describe_check(check)
            plan.to_prepare.append(spec)
            continue
        bad = sorted(int(i) for i in check.damaged_batches)
        n_batches = int(record.n_batches or operator_batch_count(root, spec.name))
        if status == DatasetStatus.COMPLETE:
            if bad:
                plan.to_resume[spec.name] = bad
                plan.tokens[spec.name] = record.token
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
            plan.tokens[spec.name] = record.token
        else:
            plan.to_finalize.append(spec.name)
    return plan


def _describe_check(check) -> str:
    parts = []
    if check.missing_nodes:
        parts.append(f"missing {', '.join(check.missing_nodes[:5])}")
    parts += [f"{node}: {why}" for node, why in list(check.damaged_arrays.items())[:3]]
    return "; ".join(parts) or "damaged"
