"""One entry point for the batch unit: rows ``[start, stop)`` of W with a chosen backend, and all
rows of a dataset on the threads it is given."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from pipeline.exc import OperatorError
from pipeline.operators.batching import BatchGeometry
from pipeline.operators.inputs import OperatorInputs
from pipeline.operators.precision import storage_values_from

__all__ = ["BACKENDS", "compute_rows", "compute_values", "threads_from"]

BACKENDS = ("numba", "jax", "numpy")


def compute_rows(
    inputs: OperatorInputs,
    start: int,
    stop: int,
    backend: str = "numpy",
    *,
    dtype: np.dtype | type = np.float64,
    batch_size: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Rows ``[start, stop)`` of the band values, computed in float64 and returned as ``dtype``
    (float64 or float32); float64 rows of the numpy and numba backends are written into ``out``
    when given. float32 rows are cast by :func:`~pipeline.operators.precision.storage_values_from`,
    which raises :class:`OperatorError` where float32 cannot hold them within its error bound.

    Every backend gives the same rows (to ~1e-15 of the largest |W|) whatever the batch
    boundaries: a row depends only on the inverse variances within the kernel reach of its pixel.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise OperatorError(f"operator dtype must be float64 or float32, got {dtype}")
    if backend == "numpy":
        from pipeline.operators.numpy_rows import rows_numpy

        values = rows_numpy(inputs, start, stop, out if dtype == np.float64 else None)
    elif backend == "numba":
        from pipeline.operators.numba_rows import rows_numba

        values = rows_numba(inputs, start, stop, out if dtype == np.float64 else None)
    elif backend == "jax":
        from pipeline.operators.jax_rows import rows_jax

        values = rows_jax(inputs, start, stop, batch_size, out if dtype == np.float64 else None)
    else:
        raise OperatorError(f"unknown operator backend {backend!r}; choose one of {BACKENDS}")
    if dtype == np.float64:
        return values
    # the checked cast: finite, no overflow, every diagonal in float32's normal range
    return storage_values_from(values, dtype)


def threads_from(n_threads: int | None) -> int:
    """The thread count to use: ``n_threads``, or for ``None`` the cores this process may run on
    (its CPU affinity, as a SLURM or taskset allocation sets it)."""
    if n_threads is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # no affinity API (macOS, Windows)
            return max(1, os.cpu_count() or 1)
    if isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer)) or n_threads < 1:
        raise OperatorError(
            f"n_threads must be a positive integer or None (all cores), got {n_threads!r}"
        )
    return int(n_threads)


def compute_values(
    inputs: OperatorInputs,
    backend: str = "numpy",
    *,
    batch_size: int = 1024,
    dtype: np.dtype | type = np.float64,
    n_threads: int | None = 1,
) -> np.ndarray:
    """All rows, computed batch by batch (``batch_size`` rows at a time, bounding temporaries).

    ``n_threads`` (``None``: every core this process may use) threads share the batches of the
    numpy and numba backends, each running BLAS single-threaded (threadpoolctl; the limit is
    lifted afterwards): the rows are the same bits whatever ``n_threads``. The JAX backend runs on
    XLA's own thread pool, which is sized when JAX first loads (``XLA_FLAGS``), so ``n_threads``
    does not apply to it.
    """
    threads = threads_from(n_threads)
    layout = inputs.layout
    out = np.empty((layout.n_pixels, layout.n_offsets), dtype=np.dtype(dtype))
    batches = list(BatchGeometry(layout.n_pixels, batch_size))

    def one(batch: tuple[int, int]) -> None:
        start, stop = batch
        block = out[start:stop]
        rows = compute_rows(
            inputs, start, stop, backend, dtype=dtype, batch_size=batch_size, out=block
        )
        if rows is not block:
            block[...] = rows

    if backend == "jax":  # one call: rows_jax runs the batches (the arrays go to the device once)
        one((0, layout.n_pixels))
        return out
    with single_threaded_blas():
        if threads == 1 or len(batches) == 1:
            for batch in batches:
                one(batch)
        else:
            with ThreadPoolExecutor(threads, thread_name_prefix="lenspipe-rows") as pool:
                for _ in pool.map(one, batches):  # in order; the first error is raised here
                    pass
    return out


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS limited to one thread inside (threadpoolctl, about 0.4 ms), as it was afterwards."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield
