"""Batch geometry of the sparse operator: which rows of W each batch (task, Zarr chunk) holds.

A dataset's N operator rows (its unmasked pixels, slim order) are split into ``n_batches``
contiguous batches of ``batch_size`` rows, the last one shorter. The store records
``batch_size``; everything else follows from it and N, here and nowhere else.

The memory model for ``sparse_operator.batch_size: auto`` lives beside it: the rows of one batch
that fit a task's memory budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pipeline.exc import OperatorError

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "MAX_BATCH_ROWS",
    "MIN_BATCH_ROWS",
    "BatchGeometry",
    "operator_batch_rows",
    "operator_row_bytes",
    "task_memory_budget",
]

DEFAULT_MEMORY_BUDGET = 512 * 2**20
"""Bytes one operator task may use when nothing else says (``batch_size: auto``)."""
MIN_BATCH_ROWS, MAX_BATCH_ROWS = 64, 65536


@dataclass(frozen=True)
class BatchGeometry:
    """``n_pixels`` operator rows in batches of ``batch_size`` rows (the last one shorter).

    Parameters
    ----------
    n_pixels
        Rows of W: the dataset's unmasked pixels (0 allowed: no batches).
    batch_size
        Rows per batch, >= 1: the task size and the stored chunk length.
    """

    n_pixels: int
    batch_size: int

    def __post_init__(self) -> None:
        if int(self.batch_size) < 1:
            raise OperatorError(f"batch_size must be >= 1, got {self.batch_size}")
        if int(self.n_pixels) < 0:
            raise OperatorError(f"the number of operator rows must be >= 0, got {self.n_pixels}")
        object.__setattr__(self, "n_pixels", int(self.n_pixels))
        object.__setattr__(self, "batch_size", int(self.batch_size))

    @classmethod
    def balanced(cls, n_pixels: int, most_rows: int) -> BatchGeometry:
        """As many batches as ``most_rows`` rows per batch need (``ceil(N / most_rows)``), of
        (nearly) equal size: ``batch_size = ceil(N / n_batches) <= most_rows``.

        Same number of tasks as plain ``most_rows``, but tasks are evenly sized and the last
        stored chunk is never mostly padding: Zarr encodes an edge chunk at full chunk size, so
        2049 rows in chunks of 2048 compress 4096 rows; balanced, 2 chunks of 1025 (padding is
        always fewer rows than there are batches).
        """
        if int(most_rows) < 1:
            raise OperatorError(f"batch_size must be >= 1, got {most_rows}")
        n = int(n_pixels)
        if n < 1:
            return cls(max(n, 0), 1)
        n_batches = -(-n // int(most_rows))
        return cls(n, -(-n // n_batches))

    @classmethod
    def for_memory(
        cls, n_pixels: int, kernel_shape: tuple[int, int], budget_bytes: int
    ) -> BatchGeometry:
        """Balanced batches of at most :func:`operator_batch_rows` rows (``batch_size: auto``)."""
        return cls.balanced(n_pixels, operator_batch_rows(kernel_shape, n_pixels, budget_bytes))

    @property
    def n_batches(self) -> int:
        """``ceil(n_pixels / batch_size)``; 0 for no rows."""
        return -(-self.n_pixels // self.batch_size)

    def rows(self, index: int) -> tuple[int, int]:
        """Rows ``[start, stop)`` of batch ``index``."""
        if not 0 <= int(index) < self.n_batches:
            raise OperatorError(f"batch index {index} outside [0, {self.n_batches})")
        start = int(index) * self.batch_size
        return start, min(start + self.batch_size, self.n_pixels)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """Every batch's rows ``[start, stop)``, in order."""
        for start in range(0, self.n_pixels, self.batch_size):
            yield start, min(start + self.batch_size, self.n_pixels)

    def __len__(self) -> int:
        return self.n_batches


def operator_row_bytes(kernel_shape: tuple[int, int]) -> int:
    """Peak bytes per operator row of one task (numpy and numba backends): the float64 output
    row (``n_offsets * 8``), the gathered inverse-variance patch (``ky * kx * 8``), and three more
    output-sized buffers while writing (Zarr's chunk buffer, the compressed bytes, the checksummed
    copy). Measured peak for a 21x21 PSF: ~30 kB per row; this gives 37 kB."""
    ky, kx = (int(k) for k in kernel_shape)
    n_offsets = ((2 * ky - 1) * (2 * kx - 1) + 1) // 2
    return 4 * n_offsets * 8 + ky * kx * 8


def operator_batch_rows(kernel_shape: tuple[int, int], n_pixels: int, budget_bytes: int) -> int:
    """Rows per operator batch that fit ``budget_bytes``: ``budget // operator_row_bytes``,
    clamped to [64, 65536] and to the dataset's pixel count (one batch for a small dataset)."""
    rows = int(budget_bytes) // operator_row_bytes(kernel_shape)
    rows = min(max(rows, MIN_BATCH_ROWS), MAX_BATCH_ROWS)
    return max(1, min(rows, int(n_pixels)))


def task_memory_budget(budget_mb: float | None, worker_memory_bytes: int | None) -> int:
    """Bytes one operator task may use (``batch_size: auto``): ``budget_mb`` MiB when given,
    else a quarter of the worker's memory limit when that is known and positive (a worker also
    holds ~150-250 MB of libraries, and Dask's nanny kills it at 95% of the limit), else
    :data:`DEFAULT_MEMORY_BUDGET` (512 MiB)."""
    if budget_mb is not None:
        return int(budget_mb * 2**20)
    if worker_memory_bytes is not None and worker_memory_bytes > 0:
        return int(worker_memory_bytes) // 4
    return DEFAULT_MEMORY_BUDGET
