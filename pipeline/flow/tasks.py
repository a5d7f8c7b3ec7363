"""What the tasks of a survey run compute. Each function runs in a Dask worker (or in-process),
receives a recipe (paths, names, indexes, settings), never large arrays, and is idempotent.

* :func:`prepare_task` — load a dataset's FITS files, validate, mask, over-sample, write the
  dataset's group (arrays, empty operator arrays, operator batch 0, then its attributes) and
  return a small summary to the driver.
* :func:`operator_shard_task` — compute rows ``[start, stop)`` of W for one batch, reading the
  dataset's mask, noise map and PSF from the store, and write them as one whole chunk followed by
  the batch's completion marker.

Bad input is reported as a :class:`TaskFailure` result (deterministic: retrying cannot help);
anything unexpected raises, so Dask retries it (worker loss) and then reports it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np

from pipeline.exc import (
    DatasetError,
    InvalidValueError,
    KernelError,
    OperatorError,
    PipelineError,
)
from pipeline.flow.config import (
    AdaptiveOverSampling,
    AnnularMask,
    CircularMask,
    Config,
    EllipticalMask,
    FileMask,
    RadialOverSampling,
)
from pipeline.flow.discover import DatasetSpec
from pipeline.imaging import (
    Array2D,
    Convolver,
    Imaging,
    Mask2D,
    over_sample_size_via_adapt_from,
    over_sample_size_via_radial_bins_from,
)
from pipeline.imaging.geometry import as_pixel_scales
from pipeline.io.store import (
    OperatorStorage,
    Source,
    dataset_metadata,
    prepared_attributes,
    write_dataset_arrays,
)
from pipeline.operators.batching import BatchGeometry

__all__ = [
    "AutoBatchSize",
    "PrepareResult",
    "PrepareSettings",
    "ShardResult",
    "StoreRecipe",
    "TaskFailure",
    "operator_shard_task",
    "prepare_imaging",
    "prepare_task",
]

# Libraries size their thread pools at import: set before numba/JAX load in a worker process.
WORKER_ENVIRONMENT = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
    # for workers started by a job script (SLURM/PBS); see WORKER_DASK_CONFIG
    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
    "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON__MALLOC_TRIM_THRESHOLD_": "None",
}

WORKER_DASK_CONFIG = {
    # Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in every worker. Setting it switches off
    # glibc's dynamic mmap threshold, so every multi-MB buffer (kernel outputs, compression
    # buffers) is mmapped, page-faulted and unmapped on each use: measured here, the operator
    # kernels ran 20% and the Zarr writes 60% slower in workers than in a plain process (the
    # "writes are 2-3.7x slower inside Dask workers" of the pipeline issue). Our allocations are
    # few and same-sized, so glibc's defaults are right.
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    # The statistical profiler samples every thread's stack every 10 ms under the GIL; tasks of
    # tens of milliseconds do not need it (the dashboard's profile tab stays empty).
    "distributed.worker.profile.enabled": False,
}


@dataclass(frozen=True)
class StoreRecipe:
    """How to open the store in any process: a path or URL and fsspec options."""

    location: str
    storage_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PrepareSettings:
    """The parts of the config a prepare task needs (picklable, small); ``recorded``: the
    settings written with each dataset (their hash tells a resume whether they changed)."""

    pixel_scales: Any
    mask: Any
    over_sampling: Any
    recorded: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Config) -> PrepareSettings:
        return cls(
            config.pixel_scales, config.mask, config.over_sampling, config.dataset_settings()
        )


@dataclass(frozen=True)
class AutoBatchSize:
    """``sparse_operator.batch_size: auto``: rows per operator batch chosen by the prepare task,
    once the PSF shape and pixel count are known, so that one batch fits ``budget_bytes``
    (:func:`pipeline.flow.config.operator_batch_rows`)."""

    budget_bytes: int

    def rows(self, kernel_shape: tuple[int, int], n_pixels: int) -> int:
        from pipeline.flow.config import operator_batch_rows

        return operator_batch_rows(kernel_shape, n_pixels, self.budget_bytes)


@dataclass
class TaskFailure:
    """A dataset that cannot be prepared or computed, with a message naming file and problem."""

    name: str
    message: str
    batch_index: int | None = None


@dataclass
class ShardResult:
    name: str
    batch_index: int
    n_rows: int
    cpu_seconds: float
    kernel_seconds: float
    write_seconds: float
    wall_seconds: float


@dataclass
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
    first_batch: ShardResult | None = None
    complete: bool = False
    load_seconds: float = 0.0
    write_seconds: float = 0.0


def configure_worker() -> None:
    """Thread limits (if the libraries are not loaded yet) and a zarr config fit for one task per
    process: zarr's own thread pool would multiply with Dask's (PITFALLS)."""
    for key, value in WORKER_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    _configure_zarr()


@lru_cache(maxsize=1)
def _configure_zarr() -> None:
    import numcodecs
    import zarr

    zarr.config.set({"async.concurrency": 8, "threading.max_workers": 1})
    # Blosc starts one thread per core in every worker process: with one worker per core they
    # only contend (measured: worker writes 2-3x slower than the same writes in one process)
    numcodecs.blosc.set_nthreads(1)


# ---------------------------------------------------------------------------------------- prepare
def _mask_for(
    spec: DatasetSpec,
    settings: PrepareSettings,
    shape: tuple[int, int],
    scales: tuple[float, float],
) -> Mask2D:
    config = settings.mask
    if isinstance(config, FileMask):
        if spec.mask is None:
            raise DatasetError(
                f"mask.kind is 'file' but the dataset of data '{spec.data.path}' has no mask file "
                "(folders: mask:, manifest: mask column, MEF: band mask EXTNAME)"
            )
        mask = Mask2D.from_fits(spec.mask.path, scales, hdu=spec.mask.hdu)
        if mask.shape_native != shape:
            raise DatasetError(
                f"mask file '{spec.mask.path}' HDU {spec.mask.hdu!r} has shape {mask.shape_native} "
                f"but the data are {shape}"
            )
        return mask
    centre = spec.mask_centre or config.centre
    if isinstance(config, CircularMask):
        return Mask2D.circular(shape, scales, spec.mask_radius or config.radius, centre=centre)
    if isinstance(config, AnnularMask):
        outer = spec.mask_radius or config.outer_radius
        return Mask2D.circular_annular(shape, scales, config.inner_radius, outer, centre=centre)
    if isinstance(config, EllipticalMask):
        return Mask2D.elliptical(
            shape,
            scales,
            spec.mask_radius or config.major_axis_radius,
            config.axis_ratio,
            config.angle,
            centre=centre,
        )
    raise DatasetError(f"unsupported mask settings {config!r}")


def _describe_mask(spec: DatasetSpec, settings: PrepareSettings) -> str:
    """The mask as the user specified it: its file, or its kind and parameters (with the
    dataset's manifest overrides)."""
    config = settings.mask
    if isinstance(config, FileMask):
        return f"file '{spec.mask.path}' HDU {spec.mask.hdu!r}"
    params = config.model_dump(exclude={"kind"})
    if spec.mask_centre:
        params["centre"] = tuple(spec.mask_centre)
    if spec.mask_radius:
        key = {"circular": "radius", "annular": "outer_radius"}.get(
            config.kind, "major_axis_radius"
        )
        params[key] = spec.mask_radius
    return f"{config.kind} ({', '.join(f'{k}={v}' for k, v in params.items())}; arcsec)"


def prepare_imaging(spec: DatasetSpec, settings: PrepareSettings) -> Imaging:
    """Load, validate, mask and over-sample one dataset (a pure function of its files).

    Only unmasked pixels are validated (NaN borders outside the mask are fine), noise included
    for the operator: ``1/sigma**2`` must be a finite normal float64
    (:func:`~pipeline.operators.precision.inverse_variance_from`); every error names the dataset
    and, where it comes from a file, the file and HDU.
    """
    from pipeline.io.fits import pixel_scales_from_header, read_fits_array
    from pipeline.operators.precision import inverse_variance_from

    name = spec.name
    data = read_fits_array(spec.data.path, spec.data.hdu, dataset=name)
    noise = read_fits_array(spec.noise_map.path, spec.noise_map.hdu, dataset=name)
    kernel = read_fits_array(spec.psf.path, spec.psf.hdu, dataset=name)
    if data.shape != noise.shape:
        raise DatasetError(
            f"data '{spec.data.path}' HDU {spec.data.hdu!r} is {data.shape} but noise map "
            f"'{spec.noise_map.path}' HDU {spec.noise_map.hdu!r} is {noise.shape}"
        )
    pixel_scales = spec.pixel_scales or settings.pixel_scales
    if pixel_scales == "header":
        pixel_scales = pixel_scales_from_header(spec.data.path, spec.data.hdu, dataset=name)
    scales = as_pixel_scales(
        tuple(pixel_scales) if isinstance(pixel_scales, list) else pixel_scales
    )
    mask = _mask_for(spec, settings, data.shape, scales)
    if mask.pixels_in_mask == 0:
        raise DatasetError(
            f"the mask {_describe_mask(spec, settings)} leaves no unmasked pixel of data "
            f"'{spec.data.path}' HDU {spec.data.hdu!r} ({data.shape[0]}x{data.shape[1]} pixels "
            f"of {scales[0]:g}x{scales[1]:g} arcsec)"
        )
    try:
        psf = Convolver(kernel, pixel_scales=scales)
    except KernelError as err:
        raise DatasetError(f"PSF '{spec.psf.path}' HDU {spec.psf.hdu!r}: {err}") from None
    try:
        masked = Imaging(
            Array2D(data, mask),
            Array2D(noise, mask),
            psf,
            over_sample_size_lp=1,
            over_sample_size_pixelization=1,
            name=name,
        )
        # W needs 1/sigma**2 as a finite normal float64 at every unmasked pixel: refuse here,
        # naming the files, rather than compute inf/0 weights (issue 11)
        inverse_variance_from(
            masked.noise_map.native, np.asarray(mask), label=f"dataset {name!r}: the noise map"
        )
    except KernelError as err:
        raise DatasetError(f"PSF '{spec.psf.path}' HDU {spec.psf.hdu!r}: {err}") from None
    except InvalidValueError as err:
        files = f"data '{spec.data.path}', noise map '{spec.noise_map.path}'"
        raise DatasetError(f"{err} ({files})") from None
    over = settings.over_sampling
    if isinstance(over, RadialOverSampling):
        lp = over_sample_size_via_radial_bins_from(
            masked.grid, over.sub_size_list, over.radial_list, centre_list=[mask.mask_centre]
        )
    elif isinstance(over, AdaptiveOverSampling):
        lp = over_sample_size_via_adapt_from(
            masked.data,
            masked.noise_map,
            over.signal_to_noise_cut,
            over.sub_size_lower,
            over.sub_size_upper,
        )
    else:
        lp = over.lp
    return masked.apply_over_sampling(
        over_sample_size_lp=lp, over_sample_size_pixelization=over.pixelization
    )


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
            sources = None  # prepare_imaging's error names the missing file and its HDU
        imaging = prepare_imaging(spec, settings)
        if sources is None:
            sources = _sources(spec)
        if isinstance(batch_size, AutoBatchSize):
            batch_size = batch_size.rows(imaging.psf.shape_native, imaging.shape_slim)
        if batch_size:
            # evenly sized batches, none mostly padding: the store records these rows
            batch_size = BatchGeometry.balanced(imaging.shape_slim, batch_size).batch_size
    except (PipelineError, OSError) as err:
        return _failure(spec.name, err)
    load_seconds = time.perf_counter() - wall
    n_batches = -(-imaging.shape_slim // batch_size) if batch_size else 0
    first, values = None, None
    if n_batches and backend is not None:
        kernel_wall, kernel_cpu = time.perf_counter(), time.process_time()
        try:
            values = _first_batch_values(imaging, batch_size, backend)
        except PipelineError as err:
            return TaskFailure(spec.name, f"dataset {spec.name!r}, operator batch 0: {err}", 0)
        kernel_seconds = time.perf_counter() - kernel_wall
        first = ShardResult(
            spec.name,
            0,
            values.shape[0],
            time.process_time() - kernel_cpu,
            kernel_seconds,
            0.0,  # written with the dataset: counted in the prepare result's write_seconds
            kernel_seconds,
        )
    metadata = dataset_metadata(imaging)
    complete = n_batches == 0 or (first is not None and n_batches == 1)
    timings = {"prepare_seconds": load_seconds}
    if first is not None:
        timings["operator_seconds"] = first.kernel_seconds
    write_start = time.perf_counter()
    try:
        write_dataset_arrays(
            _root(store),
            spec.name,
            imaging,
            batch_size=batch_size,
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
        return TaskFailure(spec.name, f"dataset {spec.name!r}, operator batch 0: {err}", 0)
    except (PipelineError, OSError) as err:
        return _failure(spec.name, err)
    write_seconds = time.perf_counter() - write_start
    return PrepareResult(
        spec.name,
        metadata,
        n_batches,
        sources,
        time.process_time() - cpu,
        time.perf_counter() - wall,
        first,
        complete,
        load_seconds,
        write_seconds,
    )


def _failure(name: str, err: Exception) -> TaskFailure:
    message = str(err)
    if name not in message:
        message = f"dataset {name!r}: {message}"
    return TaskFailure(name, message)


def _first_batch_values(imaging: Imaging, batch_size: int, backend: str) -> np.ndarray:
    from pipeline.operators import OperatorInputs, compute_rows

    inputs = OperatorInputs.from_noise_map(
        imaging.noise_map.native, np.asarray(imaging.mask), imaging.psf.kernel.native
    )
    stop = min(batch_size, inputs.layout.n_pixels)
    return compute_rows(inputs, 0, stop, backend, batch_size=batch_size)


# ---------------------------------------------------------------------------------------- operator
@lru_cache(maxsize=4)
def _open_root(location: str, options_json: str):
    from pipeline.io.store import open_store

    return open_store(location, mode="r+", storage_options=json.loads(options_json) or None)


def _root(store: StoreRecipe):
    return _open_root(
        store.location, json.dumps(store.storage_options, sort_keys=True, default=str)
    )


@lru_cache(maxsize=4)
def _cached_inputs(location: str, options_json: str, name: str, token: str | None):
    # token: a dataset prepared again (--overwrite) gets a new one, so no stale inputs are used
    from pipeline.operators import OperatorInputs

    group = _open_root(location, options_json)["datasets"][name]
    mask = np.asarray(group["mask"][...], dtype=bool)
    inputs = OperatorInputs.from_noise_map(group["noise_map"][...], mask, group["psf"][...])
    return inputs, int(group["sparse_operator"].attrs["batch_size"])


def _operator_inputs(store: StoreRecipe, name: str, token: str | None):
    """The dataset's operator inputs, read once per worker process and dataset."""
    options = json.dumps(store.storage_options, sort_keys=True, default=str)
    return _cached_inputs(store.location, options, name, token)


def operator_shard_task(
    store: StoreRecipe,
    name: str,
    batch_index: int,
    backend: str = "numpy",
    token: str | None = None,
) -> ShardResult | TaskFailure:
    """Task: compute one batch of W's rows and write it (chunk, then marker)."""
    from pipeline.io.store import write_operator_batch
    from pipeline.operators import compute_rows

    configure_worker()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        inputs, batch_size = _operator_inputs(store, name, token)
        start = batch_index * batch_size
        stop = min(start + batch_size, inputs.layout.n_pixels)
        t0 = time.perf_counter()
        values = compute_rows(inputs, start, stop, backend, batch_size=batch_size)
        t1 = time.perf_counter()
        write_operator_batch(_root(store), name, batch_index, values)
        t2 = time.perf_counter()
    except (PipelineError, OSError) as err:  # OSError: a full disk, a read-only store
        return TaskFailure(
            name, f"dataset {name!r}, operator batch {batch_index}: {err}", batch_index
        )
    return ShardResult(
        name,
        batch_index,
        stop - start,
        time.process_time() - cpu,
        t1 - t0,
        t2 - t1,
        time.perf_counter() - wall,
    )
