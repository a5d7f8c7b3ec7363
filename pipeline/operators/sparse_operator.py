"""``ImagingSparseOperator``: the band values of W = H^T N^-1 H with its layout, and what
pixelized inversions compute from it.

* ``apply(x)`` = W x;
* ``psf_weighted_data`` = H^T N^-1 d at the unmasked pixels;
* ``curvature_matrix_from(A)`` = A^T W A and ``data_vector_from(A)`` = A^T H^T N^-1 d for a
  ``(N, S)`` mapping matrix A in any form of :mod:`pipeline.operators.mappings` (scipy.sparse,
  dense, COO triplets ``(slim rows, source columns, weights[, S])``, :class:`MapperLayout` or a
  PyAutoArray mapper).

All three work straight from the band values (:mod:`pipeline.operators.curvature`): no copy of W
is made; ``to_scipy_sparse()`` builds the full matrix only when asked.

``values`` may be a numpy array or any lazily indexable array (a Zarr array, a dask array): it is
read in full on first use.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp

from pipeline.exc import OperatorError
from pipeline.operators.curvature import Band, apply_band, curvature_matrix_band
from pipeline.operators.inputs import OperatorInputs
from pipeline.operators.layout import OperatorLayout
from pipeline.operators.mappings import sparse_mapping_from
from pipeline.operators.precision import inverse_variance_from
from pipeline.operators.rows import compute_values

__all__ = ["ImagingSparseOperator", "psf_weighted_data_from"]


def psf_weighted_data_from(data_native: np.ndarray, inputs: OperatorInputs) -> np.ndarray:
    """``(H^T N^-1 d)_i = sum_u K(u) (d / sigma**2)(p_i + u - c)``: a correlation of the weighted
    data with the kernel, at the unmasked pixels (slim order)."""
    from numpy.lib.stride_tricks import sliding_window_view

    ky, kx = inputs.kernel.shape
    cy, cx = ky // 2, kx // 2
    weighted = np.asarray(data_native, dtype=np.float64) * inputs.inverse_variance
    padded = np.pad(weighted, ((cy, cy), (cx, cx)))
    rows = inputs.layout.native_for_slim
    windows = sliding_window_view(padded, (ky, kx))[rows[:, 0], rows[:, 1]]
    return windows.reshape(len(rows), ky * kx) @ inputs.kernel.ravel()


class ImagingSparseOperator:
    """W in band layout (DESIGN §4) for one dataset.

    Parameters
    ----------
    values
        ``(N, n_offsets)`` band values (float64 or float32), or a lazily indexable array of them.
    layout
        The mask and kernel shape defining the band.
    psf_weighted_data
        ``(N,)`` H^T N^-1 d, if the data were known when the operator was built.
    """

    def __init__(
        self,
        values: Any,
        layout: OperatorLayout,
        psf_weighted_data: np.ndarray | None = None,
    ):
        shape = tuple(getattr(values, "shape", ()))
        if shape != (layout.n_pixels, layout.n_offsets):
            raise OperatorError(
                f"operator values of shape {shape} do not fit the layout "
                f"({layout.n_pixels}, {layout.n_offsets})"
            )
        self._values = values
        self.layout = layout
        if psf_weighted_data is not None:
            psf_weighted_data = np.asarray(psf_weighted_data, dtype=np.float64)
            if psf_weighted_data.shape != (layout.n_pixels,):
                raise OperatorError(
                    f"psf_weighted_data has shape {psf_weighted_data.shape}, expected "
                    f"({layout.n_pixels},)"
                )
        self._psf_weighted_data = psf_weighted_data

    @classmethod
    def from_stored_values(
        cls,
        values: Any,
        layout: OperatorLayout,
        *,
        kernel: np.ndarray,
        noise_map_native: np.ndarray,
        data_native: np.ndarray,
    ) -> ImagingSparseOperator:
        """An operator around band ``values`` computed before (e.g. read from a store, possibly
        lazily), with D = H^T N^-1 d computed from the dataset it belongs to.

        ``kernel``: the ``(ky, kx)`` PSF; ``noise_map_native`` and ``data_native``: the
        dataset's native arrays (same shape as ``layout.mask``)."""
        inputs = OperatorInputs(
            layout, kernel, inverse_variance_from(noise_map_native, np.asarray(layout.mask))
        )
        return cls(values, layout, psf_weighted_data_from(data_native, inputs))

    @classmethod
    def from_noise_map_and_psf(
        cls,
        noise_map_native: np.ndarray,
        kernel: np.ndarray,
        mask: np.ndarray,
        data_native: np.ndarray | None = None,
        *,
        backend: str = "numpy",
        batch_size: int = 1024,
        dtype: np.dtype | type = np.float64,
        n_threads: int | None = 1,
    ) -> ImagingSparseOperator:
        """Compute W for a dataset (rows in batches of ``batch_size``, on ``n_threads`` threads:
        see :func:`~pipeline.operators.rows.compute_values`)."""
        inputs = OperatorInputs.from_noise_map(noise_map_native, mask, kernel)
        values = compute_values(
            inputs, backend, batch_size=batch_size, dtype=dtype, n_threads=n_threads
        )
        pwd = None if data_native is None else psf_weighted_data_from(data_native, inputs)
        return cls(values, inputs.layout, pwd)

    def __repr__(self) -> str:
        return (
            f"ImagingSparseOperator(n_pixels={self.n_pixels}, kernel_shape={self.kernel_shape}, "
            f"n_offsets={self.layout.n_offsets}, dtype={self.dtype})"
        )

    # ------------------------------------------------------------------ layout
    @property
    def n_pixels(self) -> int:
        return self.layout.n_pixels

    @property
    def kernel_shape(self) -> tuple[int, int]:
        return self.layout.kernel_shape

    @property
    def offsets(self) -> np.ndarray:
        return self.layout.offsets

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._values.dtype)

    @cached_property
    def values(self) -> np.ndarray:
        """The ``(N, n_offsets)`` band values as a numpy array (read on first access)."""
        values = np.asarray(
            self._values[...] if not isinstance(self._values, np.ndarray) else self._values
        )
        return values

    @property
    def psf_weighted_data(self) -> np.ndarray:
        """``H^T N^-1 d`` at the unmasked pixels (slim order)."""
        if self._psf_weighted_data is None:
            raise OperatorError(
                "this operator was built without the data: psf_weighted_data is unknown"
            )
        return self._psf_weighted_data

    @cached_property
    def _band(self) -> Band:
        return Band.from_layout(self.values, self.layout)

    # ------------------------------------------------------------------ conversions
    def to_scipy_sparse(self) -> sp.csr_matrix:
        """The full symmetric ``(N, N)`` W (float64 CSR, a new matrix on every call: about three
        times the memory of the band)."""
        return self.layout.to_scipy_sparse(self.values)

    def to_dense(self) -> np.ndarray:
        """The full symmetric ``(N, N)`` W as a dense array (small N)."""
        return self.layout.to_dense(self.values)

    def to_autoarray_layout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(values, indexes, lengths)`` in PyAutoArray's layout (diagonal halved, W = U + U^T)."""
        return self.layout.to_autoarray_layout(self.values)

    # ------------------------------------------------------------------ algebra
    def apply(self, x: np.ndarray) -> np.ndarray:
        """``W x`` (float64) for ``x`` of shape ``(N,)`` or ``(N, k)``, slim order."""
        return apply_band(self._band, x)

    def curvature_matrix_from(self, mapping: Any) -> np.ndarray:
        """``F = A^T W A`` as a dense, exactly symmetric ``(S, S)`` float64 array.

        ``mapping``: the ``(N, S)`` mapping matrix A in any accepted form (scipy.sparse, dense,
        COO triplets, :class:`~pipeline.operators.mappings.MapperLayout`, a PyAutoArray mapper).
        Peak extra memory: the result, a padded image buffer and A by rows, columns and buffer
        cells (O(nnz + N))."""
        return curvature_matrix_band(self._band, sparse_mapping_from(mapping, self.n_pixels))

    def data_vector_from(self, mapping: Any) -> np.ndarray:
        """``D = A^T (H^T N^-1 d)`` as a ``(S,)`` float64 array (same mapping forms as
        :meth:`curvature_matrix_from`)."""
        pwd = self.psf_weighted_data
        return sparse_mapping_from(mapping, self.n_pixels).transpose_dot(pwd)
