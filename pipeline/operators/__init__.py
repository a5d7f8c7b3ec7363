"""The sparse operator W = H^T N^-1 H: layout, row kernels (numba, JAX, numpy), consumers.

Pure computation: arrays in, arrays out. Backends (numba, JAX) are imported on first use.
"""

from pipeline.operators.batching import BatchGeometry
from pipeline.operators.inputs import OperatorInputs
from pipeline.operators.layout import OperatorLayout, n_offsets_for_kernel, offsets_for_kernel
from pipeline.operators.mappings import MapperLayout
from pipeline.operators.precision import (
    inverse_variance_from,
    storage_error_bound,
    storage_values_from,
)
from pipeline.operators.rows import BACKENDS, compute_rows, compute_values
from pipeline.operators.sparse_operator import ImagingSparseOperator, psf_weighted_data_from

__all__ = [
    "BACKENDS",
    "BatchGeometry",
    "ImagingSparseOperator",
    "MapperLayout",
    "OperatorInputs",
    "OperatorLayout",
    "compute_rows",
    "compute_values",
    "inverse_variance_from",
    "n_offsets_for_kernel",
    "offsets_for_kernel",
    "psf_weighted_data_from",
    "storage_error_bound",
    "storage_values_from",
]
