"""The store's concurrency contract (``pipeline/io/store/__init__.py`` docstring): operator batches
written
by several processes at once, in random order, give exactly the serial result."""

from __future__ import annotations

import multiprocessing

import numpy as np

from pipeline import Mask2D
from pipeline.io.store import (
    batches_done,
    create_store,
    finalize_dataset,
    list_datasets,
    open_operator,
    prepare_dataset,
    write_imaging,
)
from pipeline.mock import simulate_lens
from tests.io.store._store_workers import write_batches

BATCH = 97
N_WRITERS = 3


def test_concurrent_batch_writes_equal_a_serial_write(tmp_path):
    imaging = simulate_lens((80, 80), 0.1, psf_shape=(11, 11), seed=7).apply_mask(
        Mask2D.circular(shape_native=(80, 80), pixel_scales=0.1, radius=3.5)
    )
    n = imaging.shape_slim
    n_batches = -(-n // BATCH)
    assert 3000 < n < 5000 and n % BATCH != 0  # the last batch is partial

    serial = tmp_path / "serial.zarr"
    expected = imaging.apply_sparse_operator(batch_size=BATCH, backend="numpy")
    write_imaging(serial, "lens", expected, batch_size=BATCH)

    path = tmp_path / "parallel.zarr"
    root = create_store(path)
    prepare_dataset(root, "lens", imaging, batch_size=BATCH)
    order = np.random.default_rng(11).permutation(n_batches).tolist()
    # interleaved shares, so neighbouring chunks are written by different processes at once;
    # the first writer also retries one of its batches (a re-run task)
    shares = [order[i::N_WRITERS] for i in range(N_WRITERS)]
    shares[0].append(shares[0][0])
    context = multiprocessing.get_context("spawn")
    start_together = context.Barrier(N_WRITERS)
    writers = [
        context.Process(target=write_batches, args=(str(path), "lens", share, start_together))
        for share in shares
    ]
    try:
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join(timeout=300)
    finally:
        for writer in writers:
            if writer.is_alive():  # only on timeout or interrupt: leave no writer behind
                writer.kill()
    assert [w.exitcode for w in writers] == [0] * N_WRITERS, "a writer failed (see its stderr)"

    assert batches_done(root, "lens").all()
    assert finalize_dataset(root, "lens") == "complete"
    assert list_datasets(path) == {"lens": "complete"}
    values = open_operator(path, "lens").values
    np.testing.assert_array_equal(values, open_operator(serial, "lens").values)
    np.testing.assert_array_equal(values, expected.sparse_operator.values)
    # and the same chunk files, byte for byte
    chunks = sorted(
        p.relative_to(path)
        for p in (path / "datasets/lens/sparse_operator/values/c").rglob("*")
        if p.is_file()
    )
    assert len(chunks) == n_batches
    for chunk in chunks:
        assert (path / chunk).read_bytes() == (serial / chunk).read_bytes(), chunk
