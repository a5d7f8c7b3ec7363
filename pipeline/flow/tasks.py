"""The tasks of a survey run. Each runs in a Dask worker (or in-process), receives a recipe (paths,
names, indexes, settings), never large arrays, returns a small result record, and is idempotent.

* :func:`prepare_task` — prepare one dataset (:func:`~pipeline.flow.prepare.prepare_dataset`),
  write its group (arrays, empty operator arrays, operator batch 0, then its attributes) and
  return a :class:`PrepareResult` to the driver.
* :func:`prepare_group_task` — :func:`prepare_task` for several datasets in turn, one result
  each (``run.datasets_per_task``: one Dask task costs a few ms of CPU, :mod:`pipeline.flow.grouping`).
* :func:`operator_batch_task` — compute rows ``[start, stop)`` of W for one batch, reading the
  dataset's mask, noise map and PSF from the store, and write them as one whole chunk followed by
  the batch's completion marker; returns a :class:`BatchResult`.

Bad input is reported as a :class:`TaskFailure` result (deterministic: retrying cannot help);
anything unexpected raises, so Dask retries it (worker loss) and then reports it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pipeline.exc import DatasetError, OperatorError, PipelineError
from pipeline.flow.discover import DatasetSpec
from pipeline.flow.prepare import PrepareSettings, prepare_dataset
from pipeline.flow.worker import configure_worker
from pipeline.imaging import Convolver, Imaging
from pipeline.io.store import (
    OperatorStorage,
    Source,
    StoreRecipe,
    dataset_metadata,
    prepared_attributes,
    write_dataset_arrays,
)
from pipeline.operators.batching import BatchGeometry

__all__ = [
    "AutoBatchSize",
    "BatchResult",
    "PrepareResult",
    "TaskFailure",
    "operator_batch_task",
    "prepare_group_task",
    "prepare_task",
]


@dataclass(frozen=True)
class AutoBatchSize:
    """``sparse_operator.batch_size: auto``: rows per operator batch chosen by the prepare task,
    once the PSF shape and pixel count are known, so that one batch fits ``budget_bytes``
    (:meth:`~pipeline.operators.batching.BatchGeometry.for_memory`)."""

    budget_bytes: int


# ---------------------------------------------------------------------------------------- results
@dataclass(frozen=True, kw_only=True)
class TaskFailure:
    """A dataset that cannot be prepared or computed, with a message naming file and problem
    and the class name of the error (``error_type``, recorded with the failure)."""

    name: str
    message: str
    batch_index: int | None = None
    error_type: str | None = None


@dataclass(frozen=True, kw_only=True)
class BatchResult:
    """One operator batch computed and written. Seconds: ``cpu_seconds`` process time;
    ``kernel_seconds`` computing rows, ``write_seconds`` storing them, ``wall_seconds`` the
    whole task (wall clock)."""

    name: str
    batch_index: int
    n_rows: int
    cpu_seconds: float
    kernel_seconds: float
    write_seconds: float
    wall_seconds: float


@dataclass(frozen=True, kw_only=True)
class PrepareResult:
    """A prepared dataset, written and recorded in its group by the task: what the driver needs.

    ``first_batch`` is operator batch 0 when the task computed it (with the inputs still in
    memory: one task fewer per dataset, and small datasets need no operator task at all);
    ``complete``: nothing is left to compute, and the task recorded the dataset ``complete``.
    Wall seconds: ``load_seconds`` reading, checking, masking, over-sampling; ``write_seconds``
    the one store write of the whole group (batch 0 included)."""

    name: str
    metadata: dict[str, Any]
    n_batches: int
    sources: list[Source]
    cpu_seconds: float
    wall_seconds: float
    first_batch: BatchResult | None = None
    complete: bool = False
    load_seconds: float = 0.0
    write_seconds: float = 0.0


# ---------------------------------------------------------------------------------------- prepare
def _sources(spec: DatasetSpec) -> list[Source]:
    """The dataset's input files as recorded with it (size, mtime, sha256), each file hashed
    once. Taken before the files are read, so that a file replaced while the task runs is seen
    as changed by the next run rather than recorded with the new file's hash."""
    found: dict[str, Source] = {}
    out = []
    for role, ref in spec.files():
        if ref.path not in found:
            found[ref.path] = Source.from_file(role, ref.path, ref.hdu)
        out.append(replace(found[ref.path], role=role, hdu=ref.hdu))
    return out


def _input_labels(spec: DatasetSpec) -> dict[str, Any]:
    """``band`` and ``lens`` of a multi-extension FITS dataset (absent for other inputs, as in
    older stores), and the dataset's per-dataset ``overrides`` (``{}`` for none; compared by
    the next run's plan)."""
    labels: dict[str, Any] = {
        k: v for k, v in (("band", spec.band), ("lens", spec.lens)) if v is not None
    }
    labels["overrides"] = spec.overrides()
    return labels


def _psf(imaging: Imaging) -> Convolver:
    if imaging.psf is None:  # never: prepare_dataset always gives the dataset its PSF
        raise DatasetError(f"dataset {imaging.name!r} has no PSF")
    return imaging.psf


def _geometry(imaging: Imaging, batch_size: int | AutoBatchSize | None) -> BatchGeometry | None:
    """The dataset's operator batches: balanced, of at most ``batch_size`` rows or as many as
    fit the memory budget; ``None`` without an operator."""
    if isinstance(batch_size, AutoBatchSize):
        kernel_shape = _psf(imaging).shape_native
        return BatchGeometry.for_memory(imaging.shape_slim, kernel_shape, batch_size.budget_bytes)
    if batch_size:
        # evenly sized batches, none mostly padding: the store records these rows
        return BatchGeometry.balanced(imaging.shape_slim, batch_size)
    return None


def prepare_task(
    spec: DatasetSpec,
    settings: PrepareSettings,
    store: StoreRecipe,
    batch_size: int | AutoBatchSize | None = None,
    storage: OperatorStorage | None = None,
    backend: str | None = None,
) -> PrepareResult | TaskFailure:
    """Task: prepare one dataset and write it to its own group, which it (re)creates.

    With ``batch_size`` (most rows per batch, or :class:`AutoBatchSize`) also the empty operator
    arrays, in batches balanced by :meth:`~pipeline.operators.BatchGeometry.balanced`; with a
    ``backend`` also operator batch 0, computed from the inputs in memory. Everything is written
    in one call into Zarr (:func:`~pipeline.io.store.write_dataset_arrays`), the group's
    attributes last: status ``prepared``, or ``complete`` if nothing is left to compute. Bad input
    becomes a :class:`TaskFailure`."""
    configure_worker()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        try:
            sources: list[Source] | None = _sources(spec)
        except FileNotFoundError:
            sources = None  # prepare_dataset's error names the missing file and its HDU
        prepared = prepare_dataset(spec, settings)
        imaging = prepared.imaging
        if sources is None:
            sources = _sources(spec)
        geometry = _geometry(imaging, batch_size)
    except (PipelineError, OSError) as err:
        return _failure(spec.name, err)
    load_seconds = time.perf_counter() - wall
    n_batches = geometry.n_batches if geometry is not None else 0
    first, values = None, None
    if geometry is not None and n_batches and backend is not None:
        kernel_wall, kernel_cpu = time.perf_counter(), time.process_time()
        try:
            values = _first_batch_values(imaging, geometry, backend)
        except PipelineError as err:
            return _batch_failure(spec.name, 0, err)
        kernel_seconds = time.perf_counter() - kernel_wall
        first = BatchResult(
            name=spec.name,
            batch_index=0,
            n_rows=values.shape[0],
            cpu_seconds=time.process_time() - kernel_cpu,
            kernel_seconds=kernel_seconds,
            # written with the dataset: counted in the prepare result's write_seconds
            write_seconds=0.0,
            wall_seconds=kernel_seconds,
        )
    metadata = {**dataset_metadata(imaging), **prepared.metadata(), **_input_labels(spec)}
    complete = n_batches == 0 or (first is not None and n_batches == 1)
    timings = {"prepare_seconds": load_seconds}
    if first is not None:
        timings["operator_seconds"] = first.kernel_seconds
    write_start = time.perf_counter()
    try:
        write_dataset_arrays(
            store.root(),
            spec.name,
            imaging,
            batch_size=geometry.batch_size if geometry is not None else None,
            operator_storage=storage or OperatorStorage(),
            recreate=True,
            first_batch=values,
            attributes=prepared_attributes(
                metadata,
                sources=sources,
                settings=settings.recorded,
                complete=complete,
                timings=timings,
            ),
        )
    except OperatorError as err:  # batch 0's values cannot be stored (range, dtype)
        return _batch_failure(spec.name, 0, err)
    except (PipelineError, OSError) as err:
        return _failure(spec.name, err)
    write_seconds = time.perf_counter() - write_start
    return PrepareResult(
        name=spec.name,
        metadata=metadata,
        n_batches=n_batches,
        sources=sources,
        cpu_seconds=time.process_time() - cpu,
        wall_seconds=time.perf_counter() - wall,
        first_batch=first,
        complete=complete,
        load_seconds=load_seconds,
        write_seconds=write_seconds,
    )


def prepare_group_task(
    specs: list[DatasetSpec],
    settings: PrepareSettings,
    store: StoreRecipe,
    batch_size: int | AutoBatchSize | None = None,
    storage: OperatorStorage | None = None,
    backend: str | None = None,
) -> list[PrepareResult | TaskFailure]:
    """Task: :func:`prepare_task` for each dataset of ``specs`` in turn, their results in that
    order. Bad input fails its own dataset (a :class:`TaskFailure` in the list); anything
    unexpected raises, and the driver then runs each dataset as a task of its own."""
    return [prepare_task(spec, settings, store, batch_size, storage, backend) for spec in specs]


def _failure(name: str, err: Exception) -> TaskFailure:
    message = str(err)
    if name not in message:
        message = f"dataset {name!r}: {message}"
    return TaskFailure(name=name, message=message, error_type=type(err).__name__)


def _batch_failure(name: str, batch_index: int, err: Exception) -> TaskFailure:
    return TaskFailure(
        name=name,
        message=f"dataset {name!r}, operator batch {batch_index}: {err}",
        batch_index=batch_index,
        error_type=type(err).__name__,
    )


def _first_batch_values(imaging: Imaging, geometry: BatchGeometry, backend: str) -> np.ndarray:
    from pipeline.operators import OperatorInputs, compute_rows

    inputs = OperatorInputs.from_noise_map(
        imaging.noise_map.native, np.asarray(imaging.mask), _psf(imaging).kernel.native
    )
    start, stop = geometry.rows(0)
    return compute_rows(inputs, start, stop, backend, batch_size=geometry.batch_size)


# ---------------------------------------------------------------------------------------- operator
def operator_batch_task(
    store: StoreRecipe,
    name: str,
    batch_index: int,
    backend: str = "numpy",
    token: str | None = None,
) -> BatchResult | TaskFailure:
    """Task: compute one batch of W's rows and write it (chunk, then marker). The dataset's
    inputs are read once per worker process and dataset (``token``: a dataset prepared again
    gets a new one, so no stale inputs are used)."""
    from pipeline.io.store import write_operator_batch
    from pipeline.operators import compute_rows

    configure_worker()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        batch = store.operator_batch_inputs(name, token)
        start, stop = batch.geometry.rows(batch_index)
        t0 = time.perf_counter()
        values = compute_rows(
            batch.inputs, start, stop, backend, batch_size=batch.geometry.batch_size
        )
        t1 = time.perf_counter()
        write_operator_batch(store.root(), name, batch_index, values)
        t2 = time.perf_counter()
    except (PipelineError, OSError) as err:  # OSError: a full disk, a read-only store
        return _batch_failure(name, batch_index, err)
    return BatchResult(
        name=name,
        batch_index=batch_index,
        n_rows=stop - start,
        cpu_seconds=time.process_time() - cpu,
        kernel_seconds=t1 - t0,
        write_seconds=t2 - t1,
        wall_seconds=time.perf_counter() - wall,
    )
