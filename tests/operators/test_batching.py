"""Batch geometry (which rows each operator batch holds) and the ``batch_size: auto`` memory
model, against brute-force enumeration."""

from __future__ import annotations

import pytest

from pipeline.exc import OperatorError
from pipeline.operators.batching import (
    DEFAULT_MEMORY_BUDGET,
    MAX_BATCH_ROWS,
    MIN_BATCH_ROWS,
    BatchGeometry,
    operator_batch_rows,
    operator_row_bytes,
    task_memory_budget,
)


def test_rows_of_every_batch_cover_every_row_once():
    for n_pixels in range(0, 60):
        for batch_size in range(1, 70):
            geometry = BatchGeometry(n_pixels, batch_size)
            ranges = list(geometry)
            assert len(ranges) == len(geometry) == geometry.n_batches
            assert [geometry.rows(i) for i in range(geometry.n_batches)] == ranges
            covered = [row for start, stop in ranges for row in range(start, stop)]
            assert covered == list(range(n_pixels))
            assert all(0 < stop - start <= batch_size for start, stop in ranges)
            assert all(stop - start == batch_size for start, stop in ranges[:-1])


def test_balanced_against_every_split():
    for n_pixels in range(1, 120):
        for most_rows in range(1, 130):
            geometry = BatchGeometry.balanced(n_pixels, most_rows)
            rows = geometry.batch_size
            n_batches = -(-n_pixels // most_rows)
            # brute force: the fewest uniform rows that still give ceil(N / most_rows) batches
            fewest = min(r for r in range(1, most_rows + 1) if -(-n_pixels // r) == n_batches)
            assert rows == fewest <= most_rows
            assert geometry.n_batches == n_batches
            assert n_batches * rows - n_pixels < n_batches  # padding: less than a row per batch
    assert BatchGeometry.balanced(4097, 2048).batch_size == 1366
    assert BatchGeometry.balanced(0, 10).n_batches == 0


def test_bad_geometry_is_refused():
    with pytest.raises(OperatorError, match="batch_size must be >= 1"):
        BatchGeometry.balanced(10, 0)
    with pytest.raises(OperatorError, match="batch_size must be >= 1"):
        BatchGeometry(10, 0)
    with pytest.raises(OperatorError, match=">= 0"):
        BatchGeometry(-1, 4)
    geometry = BatchGeometry(10, 4)
    assert geometry.rows(2) == (8, 10)
    for index in (-1, 3):
        with pytest.raises(OperatorError, match=r"batch index .* outside \[0, 3\)"):
            geometry.rows(index)


def test_memory_model():
    # bytes per row: 4 float64 output-sized buffers + the inverse-variance patch
    assert operator_row_bytes((21, 21)) == 4 * 841 * 8 + 441 * 8 == 30_440
    assert operator_row_bytes((21, 11)) == 4 * 431 * 8 + 231 * 8
    assert operator_batch_rows((21, 21), 10**6, 256 * 2**20) == 256 * 2**20 // 30_440
    assert operator_batch_rows((21, 21), 5_000, 256 * 2**20) == 5_000  # one batch
    assert operator_batch_rows((49, 49), 10**6, 2**20) == MIN_BATCH_ROWS
    assert operator_batch_rows((3, 3), 10**7, 4 * 2**30) == MAX_BATCH_ROWS
    assert operator_batch_rows((3, 3), 10, 4 * 2**30) == 10


def test_for_memory_is_balanced_within_the_budget():
    for n_pixels in (1, 63, 64, 1000, 9000, 123_457):
        for budget in (2**20, 64 * 2**20, 2**30):
            geometry = BatchGeometry.for_memory(n_pixels, (21, 21), budget)
            most = operator_batch_rows((21, 21), n_pixels, budget)
            assert geometry == BatchGeometry.balanced(n_pixels, most)
            assert geometry.batch_size <= most


def test_task_memory_budget():
    assert task_memory_budget(100, 8 * 2**30) == 100 * 2**20  # explicit budget wins
    assert task_memory_budget(0.5, None) == 2**19
    assert task_memory_budget(None, 8 * 2**30) == 2 * 2**30  # a quarter of the worker
    assert task_memory_budget(None, 0) == task_memory_budget(None, None) == DEFAULT_MEMORY_BUDGET
    assert DEFAULT_MEMORY_BUDGET == 512 * 2**20
