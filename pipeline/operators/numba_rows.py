"""Rows of W with a numba CPU kernel: a direct sum over each pair's kernel overlap.

``W(p, d) = sum_u w(p + u - c) K(u) K(u - d)`` summed over the ``(ky - dy)(kx - |dx|)`` kernel
positions ``u`` where both factors exist, so the work is exactly the useful
``N (ky kx)**2 / 2`` multiply-adds (no zero padding). The kernel products ``K(u) K(u - d)`` of each
offset are precomputed once per dataset and contiguous, so the inner loop is a dot product of a
window row of ``w`` with a product row.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from pipeline.operators.inputs import OperatorInputs

__all__ = ["rows_numba", "pair_products"]


def pair_products(kernel: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``(n_offsets, ky, kx)``: ``P[o, a, ux] = K(a, ux) K(a - dy, ux - dx)``, 0 outside overlap."""
    ky, kx = kernel.shape
    out = np.zeros((offsets.shape[0], ky, kx))
    for o, (dy, dx) in enumerate(offsets):
        a0, a1 = max(0, dy), min(ky, ky + dy)
        u0, u1 = max(0, dx), min(kx, kx + dx)
        out[o, a0:a1, u0:u1] = kernel[a0:a1, u0:u1] * kernel[a0 - dy : a1 - dy, u0 - dx : u1 - dx]
    return out


@lru_cache(maxsize=1)
def _compiled():
    # numba is imported on first use: importing pipeline must stay fast and numba-free.
    import numba

    # reassoc lets the overlap dot products vectorise; the summation order depends only on the
    # kernel shape and offset, never on the batch, so rows are identical however they are sharded.
    @numba.njit(cache=True, fastmath={"reassoc", "contract"}, nogil=True)
    def kernel_rows(padded_w, products, offsets, rows, valid, out):
        n_rows = rows.shape[0]
        n_off = offsets.shape[0]
        ky = products.shape[1]
        kx = products.shape[2]
        for b in range(n_rows):
            py = rows[b, 0]
            px = rows[b, 1]
            for o in range(n_off):
                if not valid[b, o]:
                    out[b, o] = 0.0
                    continue
                dy = offsets[o, 0]
                dx = offsets[o, 1]
                u0 = max(0, dx)
                u1 = min(kx, kx + dx)
                acc = 0.0
                for a in range(dy, ky):
                    for ux in range(u0, u1):
                        acc += padded_w[py + a, px + ux] * products[o, a, ux]
                out[b, o] = acc

    return kernel_rows


@lru_cache(maxsize=8)
def _products_cached(kernel_bytes: bytes, shape: tuple[int, int]) -> np.ndarray:
    from pipeline.operators.layout import offsets_for_kernel

    kernel = np.frombuffer(kernel_bytes, dtype=np.float64).reshape(shape)
    return pair_products(kernel, offsets_for_kernel(shape).astype(np.int64))


def rows_numba(inputs: OperatorInputs, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` of the band ``values`` (float64, ``(stop - start, n_offsets)``)."""
    inputs.check_range(start, stop)
    layout = inputs.layout
    out = np.empty((stop - start, layout.n_offsets), dtype=np.float64)
    if stop == start:
        return out
    products = _products_cached(inputs.kernel.tobytes(), inputs.kernel.shape)
    _compiled()(
        inputs.padded_inverse_variance,
        products,
        layout.offsets.astype(np.int64),
        np.ascontiguousarray(layout.native_for_slim[start:stop]),
        np.ascontiguousarray(layout.valid(start, stop)),
        out,
    )
    return out
