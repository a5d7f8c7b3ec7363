"""The consumers of W straight from its band values (DESIGN §4), with numba CPU kernels.

With ``U`` the stored upper band (``U[i, j] = values[i, o]`` for ``j = native(i) + offsets[o]``)
and ``d = values[:, 0]``, ``W = U + U^T - diag(d)``, so

* ``F = A^T W A = G + G^T - A^T diag(d) A`` with ``G = A^T U A``;
* ``W x = U x + U^T x - d * x``.

Both walk the band through a zero-padded native image: pixel ``i`` sits at flat position
``start[i]`` of a ``(ny + ry) x (nx + 2 rx)`` buffer (``ry = 2 (ky // 2)`` rows below, ``rx =
2 (kx // 2)`` columns each side), and for each ``dy`` the ``dx`` run of band row ``i`` is one
contiguous run of the buffer row ``dy`` below: dense, vectorisable work, never pair-by-pair.

**G, one source pixel p at a time.** ``buf += A[i, p] * U[i, :]`` placed at ``native(i)`` for
every image pixel ``i`` mapped to ``p`` (dense runs), then ``G[p, q] += buf[native(j)] A[j, q]``
over the cells ``j`` of the touched region (per buffer row, the column span touched), which are
zeroed as they are read. Source pixels are visited in Morton (Z) order of the centroid of their
image pixels, and ``G[p, :]`` is accumulated in a small dense vector indexed by that rank: the
``q`` met around ``p`` are its neighbours, so the accumulation stays in a few cache lines instead
of scattering over a row of ``G``, which is then written in one sequential pass. Work:
``nnz(A) * n_offsets`` contiguous multiply-adds plus the touched region times the mappings per
pixel; memory: the ``(S, S)`` result, one small image-sized buffer and A by columns and by
buffer cell (``O(nnz(A) + N)``) — no copy of W. Sums are plain (no fast-math reassociation): the
result is the same bits on every run. Float32 band values are accumulated in float64.

Kernels are compiled on first use with ``cache=True`` (once per machine, loaded from the cache in
later processes); importing this module does not import numba.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from pipeline.exc import OperatorError
from pipeline.operators.layout import OperatorLayout
from pipeline.operators.mappings import SparseMapping

__all__ = ["Band", "apply_band", "curvature_matrix_band"]


@dataclass(frozen=True, eq=False)
class Band:
    """Band values with the padded-native geometry the kernels walk.

    ``values``: ``(N, n_offsets)`` C-contiguous float32 or float64; ``start``: ``(N,)`` int64
    flat position of each pixel in the padded buffer; ``slim``: flat int32 padded native → slim
    index map, -1 where masked or padding; ``width``: padded row length ``nx + 2 rx``; ``ry``,
    ``rx``: band radii in pixels.
    """

    values: np.ndarray
    start: np.ndarray
    slim: np.ndarray
    width: int
    ry: int
    rx: int

    @classmethod
    def from_layout(cls, values: Any, layout: OperatorLayout) -> Band:
        values = np.asarray(values)
        if values.shape != (layout.n_pixels, layout.n_offsets):
            raise OperatorError(
                f"band values of shape {values.shape} do not fit the layout "
                f"({layout.n_pixels}, {layout.n_offsets})"
            )
        if values.dtype not in (np.float32, np.float64):
            values = values.astype(np.float64)
        ry, rx = 2 * (layout.kernel_shape[0] // 2), 2 * (layout.kernel_shape[1] // 2)
        slim = np.pad(layout.slim_for_native, ((0, ry), (rx, rx)), constant_values=-1)
        width = int(slim.shape[1])
        native = layout.native_for_slim
        start = native[:, 0] * width + native[:, 1] + rx
        return cls(
            np.ascontiguousarray(values),
            np.ascontiguousarray(start, dtype=np.int64),
            np.ascontiguousarray(slim.ravel(), dtype=np.int32),
            width,
            ry,
            rx,
        )

    @property
    def n_pixels(self) -> int:
        return int(self.values.shape[0])


@lru_cache(maxsize=1)
def _compiled() -> tuple[Any, Any]:
    # numba is imported on first use: importing pipeline must stay fast and numba-free.
    import numba

    @numba.njit(cache=True, nogil=True)
    def curvature_kernel(values, start, width, ry, rx, n_cells, indptr, idx, w, g):
        # g = A^T W A for the CSR mapping (indptr, idx, w); one function (one cache entry to
        # load on a process's first call) that also builds the mapping's other forms
        n = indptr.size - 1
        nnz = idx.size
        n_source = g.shape[0]
        n_rows = n_cells // width
        # A by columns: a stable counting sort (ascending image pixel within a column)
        col_ptr = np.zeros(n_source + 1, np.int64)
        for f in range(nnz):
            col_ptr[idx[f] + 1] += 1
        for p in range(n_source):
            col_ptr[p + 1] += col_ptr[p]
        fill = col_ptr[:n_source].copy()
        col_rows = np.empty(nnz, np.int32)
        col_w = np.empty(nnz)
        for i in range(n):
            for f in range(indptr[i], indptr[i + 1]):
                e = fill[idx[f]]
                col_rows[e] = i
                col_w[e] = w[f]
                fill[idx[f]] = e + 1
        # the source pixels that receive image pixels, in Morton order of their centroid
        n_used = 0
        for p in range(n_source):
            if col_ptr[p + 1] > col_ptr[p]:
                n_used += 1
        used = np.empty(n_used, np.int64)
        keys = np.empty(n_used, np.int64)
        u = 0
        for p in range(n_source):
            c0 = col_ptr[p]
            c1 = col_ptr[p + 1]
            if c1 == c0:
                continue
            sum_row = 0.0
            sum_col = 0.0
            for e in range(c0, c1):
                s = start[col_rows[e]]
                r = s // width
                sum_row += r
                sum_col += s - r * width
            centroid_row = np.int64(sum_row / (c1 - c0))
            centroid_col = np.int64(sum_col / (c1 - c0))
            key = np.int64(0)
            for bit in range(24):
                key |= ((centroid_row >> bit) & 1) << (2 * bit + 1)
                key |= ((centroid_col >> bit) & 1) << (2 * bit)
            used[u] = p
            keys[u] = key
            u += 1
        order = used[np.argsort(keys, kind="mergesort")]
        rank = np.full(n_source, n_used, np.int64)  # unused source pixels: an always-zero slot
        for t in range(n_used):
            rank[order[t]] = t
        # A by padded-buffer cell: cells follow slim order, so cell c's entries are the CSR
        # entries from cell_ptr[c] (none for masked and padding cells); source pixels as ranks
        cell_ptr = np.empty(n_cells + 1, np.int64)
        c = 0
        for i in range(n):
            while c <= start[i]:
                cell_ptr[c] = indptr[i]
                c += 1
        while c <= n_cells:
            cell_ptr[c] = nnz
            c += 1
        cell_rank = np.empty(nnz, np.int32)
        for f in range(nnz):
            cell_rank[f] = rank[idx[f]]
        # g[p, :] = (A^T U A)[p, :], one source pixel p at a time, in Morton order
        run = 2 * rx + 1
        buf = np.zeros(n_cells)
        row_sum = np.zeros(n_used + 1)  # G[p, order[t]] accumulates in row_sum[t]
        lo = np.full(n_rows, width, dtype=np.int64)
        hi = np.full(n_rows, -1, dtype=np.int64)
        for p in order:
            top = n_rows
            bottom = -1
            for e in range(col_ptr[p], col_ptr[p + 1]):
                i = col_rows[e]
                a = col_w[e]
                s = start[i]
                # slices, so that the runs are indexed from 0 and vectorise (no wraparound test)
                target = buf[s : s + rx + 1]
                source = values[i, : rx + 1]
                for m in range(rx + 1):
                    target[m] += a * source[m]
                o = rx + 1
                for dy in range(1, ry + 1):
                    b = s + dy * width - rx
                    target = buf[b : b + run]
                    source = values[i, o : o + run]
                    for m in range(run):
                        target[m] += a * source[m]
                    o += run
                row = s // width
                col = s - row * width
                for r in range(row, row + ry + 1):
                    lo[r] = min(lo[r], col - rx)
                    hi[r] = max(hi[r], col + rx)
                top = min(top, row)
                bottom = max(bottom, row + ry)
            first = n_source
            last = -1
            for r in range(top, bottom + 1):
                base = r * width
                for c in range(base + lo[r], base + hi[r] + 1):
                    v = buf[c]
                    buf[c] = 0.0
                    for e in range(cell_ptr[c], cell_ptr[c + 1]):
                        t = cell_rank[e]
                        row_sum[t] += v * w[e]
                        first = min(first, t)
                        last = max(last, t)
                lo[r] = width
                hi[r] = -1
            # the whole row, in order: sequential writes (scattered ones miss the cache)
            gp = g[p]
            for q in range(n_source):
                gp[q] = row_sum[rank[q]]
            row_sum[first : last + 1] = 0.0

        # g <- g + g^T - A^T diag(values[:, 0]) A, in place, blocked for the transposed reads
        block = 64
        for ib in range(0, n_source, block):
            for jb in range(ib, n_source, block):
                for i in range(ib, min(ib + block, n_source)):
                    for j in range(max(jb, i), min(jb + block, n_source)):
                        t2 = g[i, j] + g[j, i]
                        g[i, j] = t2
                        g[j, i] = t2
        for i in range(n):
            d = np.float64(values[i, 0])
            for e in range(indptr[i], indptr[i + 1]):
                g[idx[e], idx[e]] -= d * (w[e] * w[e])
                for f in range(e + 1, indptr[i + 1]):
                    # the same term at (p, q) and (q, p), in the same order: exactly symmetric
                    t2 = d * (w[e] * w[f])
                    g[idx[e], idx[f]] -= t2
                    g[idx[f], idx[e]] -= t2

    @numba.njit(cache=True, nogil=True)
    def band_apply(values, start, slim, width, ry, rx, x, out):
        # out[:, c] = U x + U^T x - d * x for every column c of x
        run = 2 * rx + 1
        xbuf = np.zeros(slim.size)
        ybuf = np.zeros(slim.size)
        n = values.shape[0]
        for c in range(x.shape[1]):
            for i in range(n):
                xbuf[start[i]] = x[i, c]
            for i in range(n):
                s = start[i]
                vi = values[i]
                xi = x[i, c]
                acc = 0.0
                for m in range(rx + 1):
                    acc += vi[m] * xbuf[s + m]
                    ybuf[s + m] += vi[m] * xi
                o = rx + 1
                for dy in range(1, ry + 1):
                    b = s + dy * width - rx
                    for m in range(run):
                        acc += vi[o + m] * xbuf[b + m]
                        ybuf[b + m] += vi[o + m] * xi
                    o += run
                out[i, c] = acc - vi[0] * xi
            for i in range(n):
                out[i, c] += ybuf[start[i]]
            ybuf[:] = 0.0

    def curvature(band: Band, mapping: SparseMapping) -> np.ndarray:
        # numpy's zeros (calloc): pages are zeroed on first touch, not all up front
        g = np.zeros((mapping.n_source, mapping.n_source))
        curvature_kernel(
            band.values, band.start, band.width, band.ry, band.rx, band.slim.size,
            mapping.indptr, mapping.indices, mapping.weights, g,
        )  # fmt: skip
        return g

    def apply(band: Band, x: np.ndarray) -> np.ndarray:
        out = np.empty_like(x)
        band_apply(band.values, band.start, band.slim, band.width, band.ry, band.rx, x, out)
        return out

    return curvature, apply


def curvature_matrix_band(band: Band, mapping: SparseMapping) -> np.ndarray:
    """``F = A^T W A`` as a dense, exactly symmetric ``(S, S)`` float64 array (units of W times
    the squared mapping weights)."""
    if mapping.n_pixels != band.n_pixels:
        raise OperatorError(
            f"the mapping has {mapping.n_pixels} rows, the operator {band.n_pixels} pixels"
        )
    curvature, _ = _compiled()
    result: np.ndarray = curvature(band, mapping)
    return result


def apply_band(band: Band, x: np.ndarray) -> np.ndarray:
    """``W x`` for ``x`` of shape ``(N,)`` or ``(N, k)`` (float64, same shape)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim not in (1, 2) or x.shape[0] != band.n_pixels:
        raise OperatorError(
            f"apply: x must have shape ({band.n_pixels},) or ({band.n_pixels}, k), got {x.shape}"
        )
    _, apply = _compiled()
    result: np.ndarray = apply(band, np.ascontiguousarray(x.reshape(band.n_pixels, -1)))
    return result.reshape(x.shape)
