"""Rows of W with JAX (jit, float64; CPU or GPU): the algorithms of the numpy backend compiled by
XLA, chosen the same way (:func:`~pipeline.operators.numpy_rows.rows_method`): the per-row-offset
band products of :mod:`pipeline.operators.numpy_rows` for small kernels, the DFT along x of
:mod:`pipeline.operators.dft_rows` from 17x17 on.

Shapes are static per (kernel shape, batch size): the last batch of a dataset is padded to the
batch size, so one compilation serves every batch of every dataset with that kernel shape
(PITFALLS: first calls compile for seconds).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from pipeline.exc import OperatorError
from pipeline.operators.dft_rows import dft_factors
from pipeline.operators.inputs import OperatorInputs
from pipeline.operators.numpy_rows import _band_matrices_cached, rows_method

__all__ = ["rows_jax", "enable_float64"]


def enable_float64():
    """Import JAX with 64-bit floats enabled (whatever imported it first) and return it."""
    import jax

    # jax_enable_x64 must be set before arrays are created; importing jax elsewhere first would
    # otherwise leave us computing in float32 (PITFALLS).
    jax.config.update("jax_enable_x64", True)
    return jax


@lru_cache(maxsize=16)
def _compiled(kernel_shape: tuple[int, int], batch: int, method: str):
    jax = enable_float64()
    import jax.numpy as jnp

    ky, kx = kernel_shape
    length = 2 * kx - 1
    a_index = np.arange(ky)[None, :, None]
    u_index = np.arange(kx)[None, None, :]
    highest = jax.lax.Precision.HIGHEST  # no TF32 or bf16 passes on GPUs

    def windows(padded_w, pixel_rows):
        # (batch, ky, kx): each pixel's window of w
        return padded_w[
            pixel_rows[:, 0, None, None] + a_index, pixel_rows[:, 1, None, None] + u_index
        ]

    def band_rows(padded_w, factors, pixel_rows, valid):
        patches = windows(padded_w, pixel_rows).reshape(batch, ky * kx)
        blocks = [
            jnp.dot(patches[:, dy * kx :], factors[dy], precision=highest) for dy in range(ky)
        ]
        return jnp.where(valid, jnp.concatenate(blocks, axis=1), 0.0)

    def dft_rows(padded_w, factors, pixel_rows, valid):
        kernel, forward, blocks, inverse = factors
        weighted = (windows(padded_w, pixel_rows) * kernel).transpose(1, 0, 2)  # [a, p, ux]
        spectra = jnp.matmul(forward, weighted.reshape(ky * batch, kx).T, precision=highest)
        products = jnp.matmul(blocks, spectra.reshape(kx, 2 * ky, batch), precision=highest)
        correlations = jnp.matmul(
            products.reshape(2 * kx, ky * batch).T, inverse, precision=highest
        ).reshape(ky, batch, length)
        values = jnp.concatenate(
            [
                correlations[0, :, kx - 1 :],
                correlations[1:].transpose(1, 0, 2).reshape(batch, (ky - 1) * length),
            ],
            axis=1,
        )
        return jnp.where(valid, values, 0.0)

    return jax.jit(dft_rows if method == "dft" else band_rows)


def _device_factors(kernel: np.ndarray, method: str):
    """The fixed arrays of ``method`` on the default device (cached per kernel)."""
    kernel = np.ascontiguousarray(kernel, dtype=np.float64)
    return _device_factors_cached(kernel.tobytes(), kernel.shape, method)


@lru_cache(maxsize=8)
def _device_factors_cached(kernel_bytes: bytes, shape: tuple[int, int], method: str):
    jax = enable_float64()
    kernel = np.frombuffer(kernel_bytes, dtype=np.float64).reshape(shape)
    if method == "dft":
        factors = dft_factors(kernel)
        arrays = (kernel, factors.forward, factors.blocks, factors.inverse)
        return tuple(jax.device_put(np.asarray(array)) for array in arrays)
    return [jax.device_put(g) for g in _band_matrices_cached(kernel.tobytes(), kernel.shape)]


def rows_jax(
    inputs: OperatorInputs,
    start: int,
    stop: int,
    batch_size: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Rows ``[start, stop)`` of the band ``values`` (float64, ``(stop - start, n_offsets)``),
    written into ``out`` if given.

    ``batch_size`` (default ``stop - start``) fixes the compiled shape: rows are computed in
    chunks of that many, the last one padded. Call it once for many batches where possible: the
    inverse variances go to the device once per call.
    """
    inputs.check_range(start, stop)
    jax = enable_float64()
    layout = inputs.layout
    n_rows = stop - start
    if out is None:
        out = np.empty((n_rows, layout.n_offsets), dtype=np.float64)
    if n_rows == 0:
        return out
    batch = n_rows if batch_size is None else int(batch_size)
    if batch < 1:
        raise OperatorError(f"batch_size must be >= 1, got {batch_size}")
    method = rows_method(inputs.kernel.shape)
    compiled = _compiled(inputs.kernel.shape, batch, method)
    factors = _device_factors(inputs.kernel, method)
    padded_w = jax.device_put(inputs.padded_inverse_variance)
    for s in range(start, stop, batch):
        e = min(s + batch, stop)
        pixel_rows = np.zeros((batch, 2), dtype=np.int64)
        pixel_rows[: e - s] = layout.native_for_slim[s:e]
        valid = np.zeros((batch, layout.n_offsets), dtype=bool)
        valid[: e - s] = layout.valid(s, e)
        result = compiled(padded_w, factors, pixel_rows, valid)
        out[s - start : e - start] = np.asarray(result)[: e - s]
    return out
