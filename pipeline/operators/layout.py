"""The band layout of the sparse operator W = H^T N^-1 H (DESIGN §4).

``offsets`` lists every pixel displacement ``(dy, dx)`` with ``|dy| <= 2 (ky // 2)``,
``|dx| <= 2 (kx // 2)`` in the half-plane ``dy > 0 or (dy == 0 and dx >= 0)``, ordered by dy then
dx, so ``offsets[0] = (0, 0)``. Row ``i`` of ``values`` (slim order) holds ``W[i, j]`` for
``j = native(i) + offsets[o]``, 0 where that pixel is masked or off the array. Because slim order
is row-major, the half-plane is exactly ``j >= i``: ``W = U + U^T - diag(values[:, 0])``.

This module is pure index bookkeeping: no kernel arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.exc import OperatorError

__all__ = ["OperatorLayout", "offsets_for_kernel", "n_offsets_for_kernel"]


def offsets_for_kernel(kernel_shape: tuple[int, int]) -> np.ndarray:
    """``(n_offsets, 2)`` int32 ``(dy, dx)`` of the half-plane band of a ``(ky, kx)`` kernel."""
    ky, kx = (int(k) for k in kernel_shape)
    if ky < 1 or kx < 1 or ky % 2 == 0 or kx % 2 == 0:
        raise OperatorError(f"kernel shape {kernel_shape} must be odd and positive in both axes")
    ry, rx = 2 * (ky // 2), 2 * (kx // 2)
    rows = [(0, dx) for dx in range(0, rx + 1)]
    rows += [(dy, dx) for dy in range(1, ry + 1) for dx in range(-rx, rx + 1)]
    return np.array(rows, dtype=np.int32)


def n_offsets_for_kernel(kernel_shape: tuple[int, int]) -> int:
    """``((2 ky - 1)(2 kx - 1) + 1) / 2``."""
    ky, kx = kernel_shape
    return ((2 * ky - 1) * (2 * kx - 1) + 1) // 2


@dataclass(frozen=True, eq=False)
class OperatorLayout:
    """Where each stored value of W lives.

    Parameters
    ----------
    mask
        ``(ny, nx)`` bool, True = masked; the operator's rows are its unmasked pixels, slim order.
    kernel_shape
        ``(ky, kx)`` odd PSF shape.
    """

    mask: np.ndarray
    kernel_shape: tuple[int, int]

    def __post_init__(self) -> None:
        mask = np.array(self.mask, dtype=bool)
        if mask.ndim != 2:
            raise OperatorError(f"the operator mask must be 2-D, got shape {mask.shape}")
        mask.flags.writeable = False
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "kernel_shape", tuple(int(k) for k in self.kernel_shape))

    @cached_property
    def offsets(self) -> np.ndarray:
        return offsets_for_kernel(self.kernel_shape)

    @property
    def n_offsets(self) -> int:
        return int(self.offsets.shape[0])

    @property
    def shape_native(self) -> tuple[int, int]:
        return (int(self.mask.shape[0]), int(self.mask.shape[1]))

    @cached_property
    def native_for_slim(self) -> np.ndarray:
        """``(N, 2)`` int64 ``(row, col)`` of each operator row."""
        return np.argwhere(~self.mask).astype(np.int64)

    @property
    def n_pixels(self) -> int:
        return int(self.native_for_slim.shape[0])

    @cached_property
    def slim_for_native(self) -> np.ndarray:
        index = np.full(self.shape_native, -1, dtype=np.int64)
        index[~self.mask] = np.arange(self.n_pixels)
        return index

    @cached_property
    def _padded_slim_index(self) -> np.ndarray:
        ry, rx = 2 * (self.kernel_shape[0] // 2), 2 * (self.kernel_shape[1] // 2)
        return np.pad(self.slim_for_native, ((0, ry), (rx, rx)), constant_values=-1)

    @cached_property
    def _padded_unmasked(self) -> np.ndarray:
        return self._padded_slim_index >= 0

    def _band_windows(self, array: np.ndarray, start: int, stop: int) -> np.ndarray:
        # The window below-right of a pixel, (ry + 1) x (2 rx + 1), flattened row-major, starts
        # with the dx < 0 part of its first row; dropping those rx entries leaves exactly the
        # half-plane offsets in band order.
        ry, rx = 2 * (self.kernel_shape[0] // 2), 2 * (self.kernel_shape[1] // 2)
        windows = sliding_window_view(array, (ry + 1, 2 * rx + 1))
        rows = self.native_for_slim[start:stop]
        return windows[rows[:, 0], rows[:, 1]].reshape(stop - start, -1)[:, rx:]

    def neighbours(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """``(stop - start, n_offsets)`` slim index of pixel ``native(i) + offsets[o]`` for rows
        ``[start, stop)``, -1 where that pixel is masked or off the array."""
        stop = self.n_pixels if stop is None else stop
        return self._band_windows(self._padded_slim_index, start, stop)

    @cached_property
    def _complete_rows(self) -> np.ndarray:
        """``(ny, nx)`` bool: True where every offset of the pixel's row is an unmasked pixel
        (its whole band window is unmasked), from a summed-area table of the padded mask."""
        ry, rx = 2 * (self.kernel_shape[0] // 2), 2 * (self.kernel_shape[1] // 2)
        unmasked = self._padded_unmasked.astype(np.int64)
        table = np.zeros((unmasked.shape[0] + 1, unmasked.shape[1] + 1), dtype=np.int64)
        table[1:, 1:] = unmasked.cumsum(axis=0).cumsum(axis=1)
        ny, nx = self.mask.shape
        h, w = ry + 1, 2 * rx + 1
        counts = table[h : h + ny, w : w + nx] - table[:ny, w : w + nx] - table[h : h + ny, :nx]
        counts += table[:ny, :nx]
        return counts == h * w

    def zero_invalid(self, values: np.ndarray, start: int, stop: int) -> None:
        """Set ``values[i, o] = 0`` where offset ``o`` of row ``start + i`` is not an unmasked
        pixel (the same entries as ``~valid(start, stop)``); rows whose whole band window is
        unmasked, most of a mask's interior, are not looked at."""
        rows = self.native_for_slim[start:stop]
        edge = np.flatnonzero(~self._complete_rows[rows[:, 0], rows[:, 1]])
        if edge.size == 0:
            return
        ry, rx = 2 * (self.kernel_shape[0] // 2), 2 * (self.kernel_shape[1] // 2)
        windows = sliding_window_view(self._padded_unmasked, (ry + 1, 2 * rx + 1))
        at = rows[edge]
        valid = windows[at[:, 0], at[:, 1]].reshape(edge.size, -1)[:, rx:]
        block = values[edge]
        block[~valid] = 0.0
        values[edge] = block

    def valid(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """``(stop - start, n_offsets)`` bool: True where ``native(i) + offsets[o]`` is an
        unmasked pixel (1 byte per entry: cheap enough for every batch)."""
        stop = self.n_pixels if stop is None else stop
        return self._band_windows(self._padded_unmasked, start, stop)

    # ------------------------------------------------------------------ conversions
    def to_scipy_sparse(self, values: np.ndarray) -> sp.csr_matrix:
        """The full symmetric ``(N, N)`` W from band ``values``."""
        values = self._checked(values)
        j = self.neighbours()
        valid = j >= 0
        i = np.broadcast_to(np.arange(self.n_pixels)[:, None], j.shape)
        upper = sp.coo_matrix(
            (values[valid].astype(np.float64), (i[valid], j[valid])),
            shape=(self.n_pixels, self.n_pixels),
        ).tocsr()
        diagonal = sp.diags(np.asarray(values[:, 0], dtype=np.float64))
        return (upper + upper.T - diagonal).tocsr()

    def to_dense(self, values: np.ndarray) -> np.ndarray:
        """The full symmetric ``(N, N)`` W as a dense array (small N only)."""
        if self.n_pixels > 20_000:
            raise OperatorError(
                f"to_dense of a {self.n_pixels}-pixel operator would need "
                f"{8 * self.n_pixels**2 / 2**30:.1f} GiB; use to_scipy_sparse"
            )
        return self.to_scipy_sparse(values).toarray()

    def to_autoarray_layout(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """PyAutoArray's sparse layout ``(values, indexes, lengths)``.

        Row ``i`` lists ``(j, W_ij)`` for ``j >= i`` in ascending ``j`` with the diagonal halved,
        so that ``U[i, indexes] = values`` rebuilds ``W = U + U^T``. Exact zeros are omitted (as
        the reference does); negative entries are kept (the reference drops them, a bug).
        """
        values = self._checked(values).astype(np.float64)
        j = self.neighbours()
        stored = values.copy()
        stored[:, 0] *= 0.5
        keep = (j >= 0) & (stored != 0.0)
        # offsets are ordered by (dy, dx) and slim order is row-major, so j increases along a row
        return stored[keep], j[keep], keep.sum(axis=1).astype(np.int64)

    def from_autoarray_layout(
        self, values: np.ndarray, indexes: np.ndarray, lengths: np.ndarray
    ) -> np.ndarray:
        """Band values ``(N, n_offsets)`` float64 from PyAutoArray's ``(values, indexes, lengths)``.

        The inverse of :meth:`to_autoarray_layout`: row ``i`` (slim order) lists
        ``lengths[i]`` pairs ``(j, W_ij)`` with ``j >= i`` and the diagonal halved; pairs absent from
        the layout are 0. Exact (the halved diagonal is doubled). Raises
        :class:`~pipeline.exc.OperatorError` for lengths that do not add up, an index that is not an
        unmasked pixel, a pair outside the band of ``kernel_shape`` or a pair listed twice.
        """
        values = np.asarray(values, dtype=np.float64).ravel()
        columns = np.asarray(indexes).ravel()
        counts = np.asarray(lengths).ravel()
        n = self.n_pixels
        if counts.shape != (n,) or np.any(counts < 0) or int(counts.sum()) != values.size:
            raise OperatorError(
                f"autoarray layout: lengths of shape {counts.shape} summing to {int(counts.sum())} "
                f"do not describe {values.size} values over the {n} unmasked pixels"
            )
        if columns.shape != values.shape or np.any(columns != np.round(columns)):
            raise OperatorError("autoarray layout: indexes must be integers, one per value")
        columns = columns.astype(np.int64)
        if columns.size and (columns.min() < 0 or columns.max() >= n):
            raise OperatorError(f"autoarray layout: an index is not one of the {n} unmasked pixels")
        rows = np.repeat(np.arange(n), counts.astype(np.int64))
        step = self.native_for_slim[columns] - self.native_for_slim[rows]
        ry, rx = 2 * (self.kernel_shape[0] // 2), 2 * (self.kernel_shape[1] // 2)
        lookup = np.full((ry + 1, 2 * rx + 1), -1, dtype=np.int64)
        offsets = self.offsets
        lookup[offsets[:, 0], offsets[:, 1] + rx] = np.arange(self.n_offsets)
        inside = (step[:, 0] >= 0) & (step[:, 0] <= ry) & (np.abs(step[:, 1]) <= rx)
        where = np.full(values.size, -1, dtype=np.int64)
        where[inside] = lookup[step[inside, 0], step[inside, 1] + rx]
        if np.any(where < 0):
            first = int(np.argmax(where < 0))
            raise OperatorError(
                f"autoarray layout: pair ({rows[first]}, {columns[first]}) is not in the upper band "
                f"of a {self.kernel_shape} kernel (j >= i within 2 * (k // 2) pixels)"
            )
        flat = rows * self.n_offsets + where
        if np.unique(flat).size != flat.size:
            raise OperatorError("autoarray layout: a pair (i, j) is listed twice")
        band = np.zeros((n, self.n_offsets), dtype=np.float64)
        band.flat[flat] = values
        band[:, 0] *= 2.0  # the diagonal is stored halved
        return band

    def _checked(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values)
        if values.shape != (self.n_pixels, self.n_offsets):
            raise OperatorError(
                f"operator values have shape {values.shape}; this layout needs "
                f"({self.n_pixels}, {self.n_offsets})"
            )
        return values
