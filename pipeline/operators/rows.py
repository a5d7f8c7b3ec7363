"""One entry point for the batch unit: rows ``[start, stop)`` of W with a chosen backend."""

from __future__ import annotations

import numpy as np

from pipeline.exc import OperatorError
from pipeline.operators.batching import BatchGeometry
from pipeline.operators.inputs import OperatorInputs
from pipeline.operators.precision import storage_values_from

__all__ = ["BACKENDS", "compute_rows", "compute_values"]

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

        values = rows_jax(inputs, start, stop, batch_size=batch_size)
    else:
        raise OperatorError(f"unknown operator backend {backend!r}; choose one of {BACKENDS}")
    if dtype == np.float64:
        return values
    # the checked cast: finite, no overflow, every diagonal in float32's normal range
    return storage_values_from(values, dtype)


def compute_values(
    inputs: OperatorInputs,
    backend: str = "numpy",
    *,
    batch_size: int = 1024,
    dtype: np.dtype | type = np.float64,
) -> np.ndarray:
    """All rows, computed batch by batch (``batch_size`` rows at a time, bounding temporaries)."""
    layout = inputs.layout
    out = np.empty((layout.n_pixels, layout.n_offsets), dtype=np.dtype(dtype))
    for start, stop in BatchGeometry(layout.n_pixels, batch_size):
        block = out[start:stop]
        rows = compute_rows(
            inputs, start, stop, backend, dtype=dtype, batch_size=batch_size, out=block
        )
        if rows is not block:
            block[...] = rows
    return out
