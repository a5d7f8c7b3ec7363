"""Driver writes: dataset groups and statuses, failures, run records; and :func:`write_imaging`,
which writes a dataset built in Python through the same path as a run's prepare task.

Concurrency contract: only the driver creates the store and dataset groups and writes status
attributes (:func:`begin_dataset`, :func:`record_prepared`, :func:`finalize_dataset`,
:func:`reopen_dataset`, :func:`mark_failed`, :func:`record_run_summary`), while no task writes in
that group. ``status`` moves ``prepared`` -> ``complete`` (or ``failed``, with the error).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import zarr

from pipeline.exc import DatasetExistsError, StoreError
from pipeline.imaging import Imaging
from pipeline.io.store._zarr import StoreLike, group_document, sync
from pipeline.io.store.codecs import DEFAULT_STORAGE, OperatorStorage
from pipeline.io.store.location import create_store
from pipeline.io.store.nodes import (
    batches_done,
    check_replaceable,
    dataset_group,
    dataset_path,
    datasets_group,
    has_operator,
)
from pipeline.io.store.schema import (
    COMPLETE,
    FAILED,
    LAST_RUN_ATTR,
    PREPARED,
    RUNS,
    SUMMARY_ATTR,
    jsonable,
    now,
    validate_dataset_name,
)
from pipeline.io.store.sources import Source
from pipeline.io.store.writers import (
    dataset_metadata,
    prepared_attributes,
    write_dataset_arrays,
    write_operator_batch,
)
from pipeline.operators import BatchGeometry

__all__ = [
    "begin_dataset",
    "finalize_dataset",
    "mark_failed",
    "prepare_dataset",
    "record_prepared",
    "record_run_summary",
    "reopen_dataset",
    "write_imaging",
]


def begin_dataset(root: zarr.Group, name: str, *, overwrite: bool = False) -> None:
    """Create the empty group of a dataset (no status yet). Driver only.

    An existing dataset of that name (or a torn one) is refused (:class:`DatasetExistsError`)
    unless ``overwrite``, which deletes it. Whatever is not a lenspipe dataset group (an array, a
    foreign file) is never deleted: :class:`UnsafeStoreError`."""
    validate_dataset_name(name)
    datasets = datasets_group(root)
    node = check_replaceable(root, name)
    if node.kind != "absent":
        if not overwrite:
            raise DatasetExistsError(
                f"dataset {name!r} already exists in the store; pass overwrite=True to replace it"
            )
        sync(root.store.delete_dir(dataset_path(root, name)))
    datasets.create_group(name)


def record_prepared(
    root: zarr.Group,
    name: str,
    metadata: Mapping[str, Any],
    *,
    sources: Iterable[Source] = (),
    settings: Mapping[str, Any] | None = None,
    complete: bool = False,
    timings: Mapping[str, float] | None = None,
) -> None:
    """Write a dataset's attributes (:func:`prepared_attributes`) in one metadata write.

    ``complete=True`` records it ``complete`` in that same write, for a dataset with nothing left
    to compute (no operator, or every operator batch written)."""
    group = dataset_group(root, name)
    if "has_operator" not in metadata:
        # what the group holds now is what this status vouches for
        metadata = {**metadata, "has_operator": has_operator(group)}
    attrs = prepared_attributes(
        metadata, sources=sources, settings=settings, complete=complete, timings=timings
    )
    group.update_attributes(attrs)


def prepare_dataset(
    root: zarr.Group,
    name: str,
    imaging: Imaging,
    *,
    batch_size: int | None = None,
    operator_storage: OperatorStorage = DEFAULT_STORAGE,
    sources: Iterable[Source] = (),
    settings: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    first_batch: np.ndarray | None = None,
) -> zarr.Group:
    """Write a prepared (masked, over-sampled) dataset and, if ``batch_size`` is given, create its
    operator arrays chunked by ``batch_size`` rows, holding ``first_batch`` (the rows of batch 0)
    if given; status ``prepared`` is written last, so a dataset interrupted half-way has no
    status. In one process: :func:`begin_dataset`, then the prepare task's write
    (:func:`~pipeline.io.store.write_dataset_arrays` with its attributes)."""
    begin_dataset(root, name, overwrite=overwrite)
    attributes = prepared_attributes(dataset_metadata(imaging), sources=sources, settings=settings)
    write_dataset_arrays(
        root,
        name,
        imaging,
        batch_size=batch_size,
        operator_storage=operator_storage,
        first_batch=first_batch,
        attributes=attributes,
    )
    return dataset_group(root, name)


def finalize_dataset(
    root: zarr.Group,
    name: str,
    *,
    timings: Mapping[str, float] | None = None,
    verify_markers: bool = True,
) -> str:
    """Mark a dataset ``complete`` if every operator batch has its marker; raise
    :class:`StoreError` listing the missing batches otherwise. Driver only.

    ``verify_markers=False`` skips reading the markers, for a driver that has seen every batch's
    task return (a task returns only after its marker is written)."""
    group = dataset_group(root, name)
    if verify_markers and has_operator(group):
        done = batches_done(root, name)
        if not done.all():
            missing = np.flatnonzero(~done)
            raise StoreError(
                f"dataset {name!r}: {missing.size} of {done.size} operator batches have no "
                f"completion marker (first: {missing[:10].tolist()}); resume the run"
            )
    attrs: dict[str, Any] = {"status": COMPLETE.value, "error": None, "completed": now()}
    if timings:
        attrs["timings"] = {**group.attrs.get("timings", {}), **jsonable(dict(timings))}  # type: ignore[dict-item]
    group.update_attributes(attrs)
    return COMPLETE.value


def reopen_dataset(root: zarr.Group, name: str, batches: Iterable[int]) -> None:
    """Set a complete dataset back to ``prepared`` because ``batches`` were found damaged (they
    are about to be recomputed); the repair is recorded in its ``repairs`` attribute. Driver
    only."""
    group = dataset_group(root, name)
    repairs = list(group.attrs.get("repairs", []))  # type: ignore[arg-type]
    repairs.append({"batches": [int(i) for i in batches], "found": now()})
    group.update_attributes({"status": PREPARED.value, "repairs": repairs})


def mark_failed(root: zarr.Group, name: str, error: str, *, error_type: str | None = None) -> None:
    """Record that a dataset failed, with its error message and, if known, the class name of
    the exception (``error_type``, e.g. ``"FitsReadError"``; ``lenspipe status`` shows both).
    Creates a bare group if the dataset was never prepared, and rewrites the group document of
    a torn one. Driver only.

    Raises :class:`UnsafeStoreError` if the dataset's path holds something that is not a
    lenspipe dataset group (left untouched), and :class:`StoreError` if the store cannot be
    written (e.g. no space left), both naming the dataset."""
    validate_dataset_name(name)
    datasets_group(root)
    node = check_replaceable(root, name)
    attrs = {"status": FAILED.value, "error": str(error), "error_type": error_type, "failed": now()}
    path = dataset_path(root, name)
    try:
        if node.kind == "group" and node.doc is not None:
            document = {**node.doc.get("attributes", {}), **attrs}
        else:
            document = attrs
        sync(root.store.set(f"{path}/zarr.json", group_document(document)))
    except Exception as err:  # noqa: BLE001 - ENOSPC, a read-only store: the caller reports it
        raise StoreError(
            f"dataset {name!r}: its failure could not be recorded in the store "
            f"({type(err).__name__}: {err}); the error was: {error}"
        ) from err


def record_run_summary(root: zarr.Group, run_id: str, summary: Mapping[str, Any]) -> None:
    """Record a run's summary under ``runs/<run_id>`` and as the store's last run. Driver only;
    errors of the store (a full disk) pass through."""
    runs = root.require_group(RUNS)
    group = runs.create_group(run_id)
    group.attrs[SUMMARY_ATTR] = dict(summary)
    root.attrs[LAST_RUN_ATTR] = dict(summary)


def write_imaging(
    location: StoreLike,
    name: str,
    imaging: Imaging,
    *,
    batch_size: int = 1024,
    operator_storage: OperatorStorage = DEFAULT_STORAGE,
    sources: Iterable[Source] = (),
    settings: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    storage_options: dict | None = None,
) -> None:
    """Write a dataset built in Python (arrays, and its operator if it carries one) as a complete
    dataset, in one process: the writes of a run's prepare task (arrays, operator batch 0, then
    the attributes), then of its operator tasks (the other batches), then of the driver
    (finalize)."""
    root = create_store(location, storage_options=storage_options)
    operator = imaging.sparse_operator
    values = None if operator is None else operator.values
    prepare_dataset(
        root,
        name,
        imaging,
        batch_size=batch_size if operator is not None else None,
        operator_storage=operator_storage,
        sources=sources,
        settings=settings,
        overwrite=overwrite,
        first_batch=None if values is None else values[:batch_size],
    )
    if operator is not None:
        for index, (start, stop) in enumerate(BatchGeometry(operator.n_pixels, batch_size)):
            if index:  # batch 0 was written with the arrays
                write_operator_batch(root, name, index, values[start:stop])  # type: ignore[index]
    finalize_dataset(root, name)
