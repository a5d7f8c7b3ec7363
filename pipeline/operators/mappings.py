"""Mapping matrices A (image pixels -> source pixels) in every form a caller hands over, normalised
to one compressed sparse form.

``A`` is ``(N, S)``: row ``i`` is unmasked image pixel ``i`` (slim order), column ``p`` a source
(pixelization) pixel, ``A[i, p]`` the weight with which source pixel ``p`` enters image pixel ``i``
(dimensionless). Accepted forms (:func:`sparse_mapping_from`):

* any ``scipy.sparse`` matrix or array (CSR, CSC, COO, ...) of shape ``(N, S)``;
* a dense ``(N, S)`` array;
* COO triplets ``(rows, cols, weights)`` or ``(rows, cols, weights, n_source)``: equal-length 1-D
  arrays of slim rows, source columns and weights (repeated pairs add up);
* :class:`MapperLayout`, PyAutoArray's fixed-width layout, or any object carrying it as a mapper
  does: ``mapper.unique_mappings.{data_to_pix_unique, data_weights, pix_lengths}`` and
  ``mapper.pixels``.

Every form becomes a :class:`SparseMapping` (CSR) in O(nnz) time, except the
dense form (O(N S)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from pipeline.exc import OperatorError

__all__ = ["MapperLayout", "SparseMapping", "sparse_mapping_from"]


def _index_array(values: Any, name: str) -> np.ndarray:
    """``values`` as int64, refusing non-integral entries (PyAutoArray hands indexes as floats)."""
    array = np.asarray(values)
    if array.dtype.kind in "iu":
        return array.astype(np.int64, copy=False)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise OperatorError(
                f"{name} must hold whole numbers (indexes), got non-integral values"
            )
        return array.astype(np.int64)
    if array.dtype.kind == "b" or array.size == 0:
        return array.astype(np.int64)
    raise OperatorError(f"{name} must be an integer array, got dtype {array.dtype}")


def _weight_array(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise OperatorError(f"{name} must be a real array, got dtype {array.dtype}")
    return array.astype(np.float64, copy=False)


@dataclass(frozen=True, eq=False)
class MapperLayout:
    """PyAutoArray's fixed-width mapping layout (``UniqueMappings``).

    Parameters
    ----------
    pix_indexes
        ``(N, max_k)`` source pixel indexes per image pixel (slim order); entries at or beyond
        ``lengths[i]`` are ignored (PyAutoArray pads them with -1). Floats holding whole numbers
        are accepted.
    weights
        ``(N, max_k)`` mapping weights, same layout.
    lengths
        ``(N,)`` number of used entries of each row, ``0 <= lengths[i] <= max_k``.
    n_source
        S, the number of source pixels.
    """

    pix_indexes: np.ndarray
    weights: np.ndarray
    lengths: np.ndarray
    n_source: int

    def __post_init__(self) -> None:
        index = _index_array(self.pix_indexes, "MapperLayout.pix_indexes")
        weights = _weight_array(self.weights, "MapperLayout.weights")
        lengths = _index_array(self.lengths, "MapperLayout.lengths")
        if index.ndim != 2 or weights.shape != index.shape or lengths.shape != index.shape[:1]:
            raise OperatorError(
                "MapperLayout needs pix_indexes and weights of one shape (N, max_k) and lengths "
                f"(N,); got {index.shape}, {weights.shape} and {lengths.shape}"
            )
        if lengths.size and (lengths.min() < 0 or lengths.max() > index.shape[1]):
            raise OperatorError(
                f"MapperLayout.lengths must lie in [0, {index.shape[1]}] (the width of pix_indexes)"
            )
        if int(self.n_source) != self.n_source or self.n_source < 0:
            raise OperatorError(
                f"MapperLayout.n_source must be a whole number >= 0, got {self.n_source}"
            )
        object.__setattr__(self, "pix_indexes", index)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "lengths", lengths)
        object.__setattr__(self, "n_source", int(self.n_source))

    @classmethod
    def from_mapper(cls, mapper: Any) -> MapperLayout:
        """The layout of a PyAutoArray mapper (``mapper.unique_mappings`` and ``mapper.pixels``)."""
        unique = mapper.unique_mappings
        n_source = getattr(mapper, "pixels", None)
        if n_source is None:
            n_source = mapper.params
        return cls(
            np.asarray(unique.data_to_pix_unique),
            np.asarray(unique.data_weights),
            np.asarray(unique.pix_lengths),
            int(n_source),
        )


@dataclass(frozen=True, eq=False)
class SparseMapping:
    """A mapping matrix A in CSR form.

    ``indptr`` (N + 1,) int64, ``indices`` (nnz,) int32 source pixels, ``weights`` (nnz,)
    float64. Repeated ``(i, p)`` entries may occur: every consumer is linear in each entry, so
    they add up exactly as in A.
    """

    n_pixels: int
    n_source: int
    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray

    @classmethod
    def from_csr(
        cls, indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray, n_source: int
    ) -> SparseMapping:
        return cls(
            len(indptr) - 1,
            int(n_source),
            np.ascontiguousarray(indptr, dtype=np.int64),
            np.ascontiguousarray(indices, dtype=np.int32),
            np.ascontiguousarray(weights, dtype=np.float64),
        )

    def transpose_dot(self, x: np.ndarray) -> np.ndarray:
        """``A^T x`` for ``x`` of shape ``(N,)`` (float64, ``(S,)``)."""
        rows = np.repeat(np.arange(self.n_pixels), np.diff(self.indptr))
        return np.bincount(self.indices, self.weights * x[rows], minlength=self.n_source)


def _from_triplets(mapping: tuple | list, n_pixels: int) -> SparseMapping:
    if len(mapping) not in (3, 4):
        raise OperatorError(
            "a COO mapping is (rows, cols, weights) or (rows, cols, weights, n_source), "
            f"got a sequence of {len(mapping)}"
        )
    rows = _index_array(mapping[0], "mapping rows")
    cols = _index_array(mapping[1], "mapping cols")
    weights = _weight_array(mapping[2], "mapping weights")
    if not (rows.ndim == cols.ndim == weights.ndim == 1) or not (
        rows.size == cols.size == weights.size
    ):
        raise OperatorError(
            "COO mapping rows, cols and weights must be 1-D of one length; got shapes "
            f"{rows.shape}, {cols.shape} and {weights.shape}"
        )
    n_source = int(mapping[3]) if len(mapping) == 4 else (int(cols.max()) + 1 if cols.size else 0)
    if rows.size and (rows.min() < 0 or rows.max() >= n_pixels):
        raise OperatorError(f"mapping rows must be slim indexes in [0, {n_pixels})")
    if cols.size and (cols.min() < 0 or cols.max() >= n_source):
        raise OperatorError(f"mapping cols must be source pixel indexes in [0, {n_source})")
    order = np.argsort(rows, kind="stable")
    indptr = np.zeros(n_pixels + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_pixels), out=indptr[1:])
    return SparseMapping.from_csr(indptr, cols[order], weights[order], n_source)


def _from_layout(layout: MapperLayout, n_pixels: int) -> SparseMapping:
    if layout.lengths.shape[0] != n_pixels:
        raise OperatorError(
            f"the mapper layout has {layout.lengths.shape[0]} image pixels, the operator "
            f"{n_pixels} (one row per unmasked pixel, slim order)"
        )
    width = layout.pix_indexes.shape[1]
    if np.all(layout.lengths == width):  # every row full (fixed k): the arrays as they are
        indices, weights = layout.pix_indexes.reshape(-1), layout.weights.reshape(-1)
    else:
        used = np.arange(width)[None, :] < layout.lengths[:, None]
        indices, weights = layout.pix_indexes[used], layout.weights[used]
    if indices.size and (indices.min() < 0 or indices.max() >= layout.n_source):
        raise OperatorError(
            f"the mapper layout's used pix_indexes must lie in [0, {layout.n_source})"
        )
    indptr = np.zeros(n_pixels + 1, dtype=np.int64)
    np.cumsum(layout.lengths, out=indptr[1:])
    return SparseMapping.from_csr(indptr, indices, weights, layout.n_source)


def sparse_mapping_from(mapping: Any, n_pixels: int) -> SparseMapping:
    """Normalise any accepted form of a mapping matrix A (module docstring) for ``n_pixels``
    image pixels to a :class:`SparseMapping`; raises :class:`OperatorError` naming the problem."""
    if isinstance(mapping, SparseMapping):
        if mapping.n_pixels != n_pixels:
            raise OperatorError(f"the mapping has {mapping.n_pixels} rows, expected {n_pixels}")
        return mapping
    if isinstance(mapping, MapperLayout):
        return _from_layout(mapping, n_pixels)
    if hasattr(mapping, "unique_mappings"):
        return _from_layout(MapperLayout.from_mapper(mapping), n_pixels)
    if isinstance(mapping, tuple):
        return _from_triplets(mapping, n_pixels)
    if sp.issparse(mapping):
        if mapping.ndim != 2 or mapping.shape[0] != n_pixels:
            raise OperatorError(
                f"the mapping matrix must have {n_pixels} rows (one per unmasked pixel), "
                f"got shape {mapping.shape}"
            )
        csr = sp.csr_matrix(mapping)
        return SparseMapping.from_csr(
            csr.indptr, csr.indices, _weight_array(csr.data, "mapping"), csr.shape[1]
        )
    dense = _weight_array(mapping, "the mapping matrix")
    if dense.ndim != 2 or dense.shape[0] != n_pixels:
        raise OperatorError(
            f"the mapping matrix must have {n_pixels} rows (one per unmasked pixel), "
            f"got shape {dense.shape}"
        )
    rows, cols = np.nonzero(dense)
    indptr = np.zeros(n_pixels + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_pixels), out=indptr[1:])
    return SparseMapping.from_csr(indptr, cols, dense[rows, cols], dense.shape[1])
