"""Rows of W with a numba CPU kernel: exact kernel-overlap sums, vectorised over ``dx``.

For pixel ``p`` and offset ``(dy, dx)``::

    W(p, dy, dx) = sum_{a >= dy} sum_ux  t_a(ux) K(a - dy, ux - dx),   t_a(ux) = w(p + (a, ux) - c) K(a, ux)

For each kernel row pair ``(a, a - dy)`` and each ``ux`` the inner loop adds ``t_a(ux)`` times a
contiguous (reversed) kernel row into a contiguous run of output columns (all ``dx`` with
``0 <= ux - dx < kx``). There is no reduction in the inner loop, so it vectorises without
reassociating sums: every row gets the same bits whatever the batch, and the work is exactly the
useful ``N (ky kx)**2 / 2`` multiply-adds; windows with ``w = 0`` (masked or off the array) are
skipped.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from pipeline.operators.inputs import OperatorInputs
from pipeline.operators.numpy_rows import _output

__all__ = ["rows_numba"]


@lru_cache(maxsize=1)
def _compiled():
    # numba is imported on first use: importing pipeline must stay fast and numba-free.
    import numba

    @numba.njit(cache=True, nogil=True)
    def kernel_rows(padded_w, kernel, rows, valid, out):
        ky, kx = kernel.shape
        reversed_rows = kernel[:, ::-1].copy()
        acc = np.empty(2 * kx - 1)
        for b in range(rows.shape[0]):
            py = rows[b, 0]
            px = rows[b, 1]
            base = 0
            for dy in range(ky):
                acc[:] = 0.0
                for a in range(dy, ky):
                    second = reversed_rows[a - dy]
                    for ux in range(kx):
                        t = padded_w[py + a, px + ux] * kernel[a, ux]
                        if t != 0.0:
                            # acc[dx + kx - 1] for dx = ux - (kx - 1) + m: a fixed-length run
                            for m in range(kx):
                                acc[ux + m] += t * second[m]
                if dy == 0:
                    out[b, 0:kx] = acc[kx - 1 :]
                    base = kx
                else:
                    out[b, base : base + 2 * kx - 1] = acc
                    base += 2 * kx - 1
            for o in range(out.shape[1]):
                if not valid[b, o]:
                    out[b, o] = 0.0

    return kernel_rows


def rows_numba(
    inputs: OperatorInputs, start: int, stop: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Rows ``[start, stop)`` of the band ``values`` (float64, ``(stop - start, n_offsets)``),
    written into ``out`` if given (a C-contiguous float64 block of that shape)."""
    inputs.check_range(start, stop)
    layout = inputs.layout
    out = _output(out, stop - start, layout.n_offsets)
    if stop == start:
        return out
    _compiled()(
        inputs.padded_inverse_variance,
        inputs.kernel,
        np.ascontiguousarray(layout.native_for_slim[start:stop]),
        np.ascontiguousarray(layout.valid(start, stop)),
        out,
    )
    return out
