"""Task functions for ``test_concurrency.py``: importable, since spawned processes re-import
the function they run. Each receives a recipe (store path, dataset name, batch indexes), never an
open store, and does what a pipeline task does: open the store ``r+``, compute its rows, write them.
"""

from __future__ import annotations

import numpy as np
import zarr

from pipeline.io.store import open_imaging, open_store, write_operator_batch
from pipeline.operators import OperatorInputs, compute_rows


def write_batches(path: str, name: str, batch_indexes: list[int], start_together=None) -> None:
    """Compute and write the given operator batches of dataset ``name``, in the order given.

    ``start_together``: a ``multiprocessing.Barrier`` passed by every writer, so that all of them
    write at the same time rather than one after another as they finish starting up.
    """
    # one zarr thread per process, as inside a Dask worker (PITFALLS "Zarr v3")
    zarr.config.set({"async.concurrency": 1, "threading.max_workers": 1})
    imaging = open_imaging(path, name, allow_incomplete=True)
    inputs = OperatorInputs.from_noise_map(
        imaging.noise_map.native, np.asarray(imaging.mask), imaging.psf.kernel.native
    )
    root = open_store(path, mode="r+")
    batch_size = int(root[f"datasets/{name}/sparse_operator"].attrs["batch_size"])
    n_pixels = imaging.shape_slim
    for index in batch_indexes:
        start = index * batch_size
        stop = min(start + batch_size, n_pixels)
        rows = compute_rows(inputs, start, stop, "numpy")
        if start_together is not None:
            start_together.wait(timeout=120)
            start_together = None
        write_operator_batch(root, name, index, rows)
