"""Rows of W by dense matrix products, one per row offset (vectorised numpy, BLAS).

For pixel ``p`` and offset ``d = (dy, dx)`` with ``dy >= 0``::

    W(p, d) = sum_{a, ux} w(p + (a, ux) - c) K(a, ux) K(a - dy, ux - dx)

Gathering each pixel's window of ``w = 1/sigma**2`` as a row ``patch_p[(a, ux)]`` (im2col), all
``dx`` of one ``dy`` are one product ``patches[:, a >= dy] @ G_dy`` with
``G_dy[(a, ux), dx] = K(a, ux) K(a - dy, ux - dx)``. Restricting to ``a >= dy`` (a suffix of the
patch columns) leaves half of ``G_dy``'s entries zero (the ``ux - dx`` band): about twice the useful
multiply-adds, at BLAS speed.

Wide kernels take :mod:`pipeline.operators.dft_rows` instead (``method="auto"``): the same rows
through a DFT along x, with far fewer multiply-adds (:func:`rows_method`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.exc import OperatorError
from pipeline.operators.inputs import OperatorInputs

__all__ = [
    "DFT_CROSSOVER",
    "band_matrices",
    "dft_advantage",
    "patches_from",
    "rows_method",
    "rows_numpy",
]

#: The DFT's advantage in multiply-adds per row, ``ky kx / (6 kx + 4 ky)`` (the band products'
#: ``(ky kx)**2`` over the DFT's ``ky kx (6 kx + 4 ky)``, up to constants), from which ``"auto"``
#: takes the DFT: where it was faster on one core in ``benchmarks/operator.py`` (square kernels
#: from 17x17 on; docs/operator.md).
DFT_CROSSOVER = 1.6

RowsMethod = Literal["auto", "band", "dft"]


def dft_advantage(kernel_shape: tuple[int, int]) -> float:
    """``ky kx / (6 kx + 4 ky)``: grows with the kernel; the DFT wins above :data:`DFT_CROSSOVER`."""
    ky, kx = kernel_shape
    return ky * kx / (6 * kx + 4 * ky)


def rows_method(kernel_shape: tuple[int, int], method: RowsMethod = "auto") -> str:
    """``"band"`` (products with the band matrices) or ``"dft"``: ``method`` itself, or for
    ``"auto"`` the faster for this kernel shape (:func:`dft_advantage` at least
    :data:`DFT_CROSSOVER`)."""
    if method not in ("auto", "band", "dft"):
        raise OperatorError(f"rows method must be 'auto', 'band' or 'dft', got {method!r}")
    if method != "auto":
        return method
    return "dft" if dft_advantage(kernel_shape) >= DFT_CROSSOVER else "band"


def band_matrices(kernel: np.ndarray) -> list[np.ndarray]:
    """``G_dy`` for ``dy = 0 .. ky - 1``: shape ``((ky - dy) kx, n_dx)`` with ``dx`` from 0 (for
    ``dy = 0``) or ``-(kx - 1)`` up to ``kx - 1``, in the band layout's column order."""
    return [g.copy() for g in _band_matrices_cached(kernel.tobytes(), kernel.shape)]


@lru_cache(maxsize=8)
def _band_matrices_cached(kernel_bytes: bytes, shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    kernel = np.frombuffer(kernel_bytes, dtype=np.float64).reshape(shape)
    ky, kx = shape
    out = []
    ux = np.arange(kx)
    for dy in range(ky):
        dxs = np.arange(0 if dy == 0 else -(kx - 1), kx)
        shifted = ux[:, None] - dxs[None, :]  # (kx, n_dx) column index into the second factor
        inside = (shifted >= 0) & (shifted < kx)
        g = np.zeros((ky - dy, kx, dxs.size))
        for a in range(dy, ky):
            second = np.where(inside, kernel[a - dy][np.clip(shifted, 0, kx - 1)], 0.0)
            g[a - dy] = kernel[a][:, None] * second
        factors = g.reshape((ky - dy) * kx, dxs.size)
        factors.flags.writeable = False
        out.append(factors)
    return tuple(out)


def _output(out: np.ndarray | None, n_rows: int, n_offsets: int) -> np.ndarray:
    if out is None:
        return np.empty((n_rows, n_offsets), dtype=np.float64)
    if out.shape != (n_rows, n_offsets) or out.dtype != np.float64 or not out.flags.c_contiguous:
        raise OperatorError(
            f"out must be a C-contiguous float64 array of shape {(n_rows, n_offsets)}, got "
            f"{out.dtype} {out.shape}"
        )
    return out


def patches_from(inputs: OperatorInputs, start: int, stop: int) -> np.ndarray:
    """``(stop - start, ky * kx)`` windows of ``1/sigma**2`` around rows ``[start, stop)``."""
    ky, kx = inputs.kernel.shape
    windows = sliding_window_view(inputs.padded_inverse_variance, (ky, kx))
    rows = inputs.layout.native_for_slim[start:stop]
    return windows[rows[:, 0], rows[:, 1]].reshape(stop - start, ky * kx)


def rows_numpy(
    inputs: OperatorInputs,
    start: int,
    stop: int,
    out: np.ndarray | None = None,
    *,
    method: RowsMethod = "auto",
) -> np.ndarray:
    """Rows ``[start, stop)`` of the band ``values`` (float64, ``(stop - start, n_offsets)``),
    written into ``out`` if given (a C-contiguous float64 block of that shape); ``method``: see
    :func:`rows_method` (every method gives the same rows to ~1e-15 of max |W|)."""
    inputs.check_range(start, stop)
    ky, kx = inputs.kernel.shape
    layout = inputs.layout
    out = _output(out, stop - start, layout.n_offsets)
    if stop == start:
        return out
    if rows_method(inputs.kernel.shape, method) == "dft":
        from pipeline.operators.dft_rows import rows_dft

        rows_dft(inputs, start, stop, out)
        layout.zero_invalid(out, start, stop)
        return out
    patches = patches_from(inputs, start, stop)
    column = 0
    for dy, g in enumerate(_band_matrices_cached(inputs.kernel.tobytes(), inputs.kernel.shape)):
        width = g.shape[1]
        np.matmul(patches[:, dy * kx :], g, out=out[:, column : column + width])
        column += width
    layout.zero_invalid(out, start, stop)
    return out
