"""Rows of W with JAX (jit, float64; CPU or GPU): the per-row-offset products of
:mod:`pipeline.operators.numpy_rows` compiled by XLA.

Shapes are static per (kernel shape, batch size): the last batch of a dataset is padded to the
batch size, so one compilation serves every batch of every dataset with that kernel shape
(PITFALLS: first calls compile for seconds).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from pipeline.exc import OperatorError
from pipeline.operators.inputs import OperatorInputs
from pipeline.operators.numpy_rows import _band_matrices_cached

__all__ = ["rows_jax", "enable_float64"]


def enable_float64():
    """Import JAX with 64-bit floats enabled (whatever imported it first) and return it."""
    import jax

    # jax_enable_x64 must be set before arrays are created; importing jax elsewhere first would
    # otherwise leave us computing in float32 (PITFALLS).
    jax.config.update("jax_enable_x64", True)
    return jax


@lru_cache(maxsize=16)
def _compiled(kernel_shape: tuple[int, int], batch: int):
    jax = enable_float64()
    import jax.numpy as jnp

    ky, kx = kernel_shape
    a_index = np.arange(ky)[None, :, None]
    u_index = np.arange(kx)[None, None, :]

    def rows(padded_w, band, pixel_rows, valid):
        # padded_w: (ny + 2cy, nx + 2cx); pixel_rows: (batch, 2); valid: (batch, n_offsets)
        patches = padded_w[
            pixel_rows[:, 0, None, None] + a_index, pixel_rows[:, 1, None, None] + u_index
        ]
        patches = patches.reshape(batch, ky * kx)
        blocks = [
            jnp.dot(patches[:, dy * kx :], band[dy], precision=jax.lax.Precision.HIGHEST)
            for dy in range(ky)
        ]
        return jnp.where(valid, jnp.concatenate(blocks, axis=1), 0.0)

    return jax.jit(rows)


def rows_jax(
    inputs: OperatorInputs, start: int, stop: int, batch_size: int | None = None
) -> np.ndarray:
    """Rows ``[start, stop)`` of the band ``values`` (float64, ``(stop - start, n_offsets)``).

    ``batch_size`` (default ``stop - start``) fixes the compiled shape: rows are computed in
    chunks of that many, the last one padded.
    """
    inputs.check_range(start, stop)
    jax = enable_float64()
    layout = inputs.layout
    n_rows = stop - start
    out = np.empty((n_rows, layout.n_offsets), dtype=np.float64)
    if n_rows == 0:
        return out
    batch = n_rows if batch_size is None else int(batch_size)
    if batch < 1:
        raise OperatorError(f"batch_size must be >= 1, got {batch_size}")
    compiled = _compiled(inputs.kernel.shape, batch)
    band = [
        jax.device_put(g)
        for g in _band_matrices_cached(inputs.kernel.tobytes(), inputs.kernel.shape)
    ]
    padded_w = jax.device_put(inputs.padded_inverse_variance)
    for s in range(start, stop, batch):
        e = min(s + batch, stop)
        pixel_rows = np.zeros((batch, 2), dtype=np.int64)
        pixel_rows[: e - s] = layout.native_for_slim[s:e]
        valid = np.zeros((batch, layout.n_offsets), dtype=bool)
        valid[: e - s] = layout.valid(s, e)
        result = compiled(padded_w, band, pixel_rows, valid)
        out[s - start : e - start] = np.asarray(result)[: e - s]
    return out
