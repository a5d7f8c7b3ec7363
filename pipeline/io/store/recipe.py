"""What a worker opens: a store recipe (location and fsspec options, picklable and small) and a
per-process cache of what it opens from it (xarray's ``CachingFileManager`` idea).

Tasks receive a :class:`StoreRecipe`, never an open group: each worker process opens the store
once (:func:`cached_root`) and reads a dataset's operator inputs once per dataset
(:func:`operator_batch_inputs`), however many of its batches it computes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import zarr

from pipeline.io.store.location import open_store
from pipeline.io.store.nodes import dataset_group
from pipeline.io.store.schema import OPERATOR_GROUP, PSF_NODE
from pipeline.operators import BatchGeometry, OperatorInputs

__all__ = [
    "OperatorBatchInputs",
    "StoreRecipe",
    "cached_root",
    "configure_zarr_for_tasks",
    "operator_batch_inputs",
]


@lru_cache(maxsize=1)
def configure_zarr_for_tasks() -> None:
    """Zarr and Blosc settings for a process that runs one task at a time (a Dask worker), set
    once per process: zarr's own thread pool would multiply with Dask's (PITFALLS), and Blosc
    starts one thread per core in every worker process, which with one worker per core only
    contend (measured: worker writes 2-3x slower than the same writes in one process)."""
    import numcodecs

    zarr.config.set({"async.concurrency": 8, "threading.max_workers": 1})
    numcodecs.blosc.set_nthreads(1)


@dataclass(frozen=True)
class StoreRecipe:
    """How to open the store in any process: a path or URL and fsspec options."""

    location: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def root(self) -> zarr.Group:
        """The store's root group, opened for writing chunks, once per process."""
        return cached_root(self.location, self.storage_options)

    def operator_batch_inputs(self, name: str, token: str | None = None) -> OperatorBatchInputs:
        """What an operator task of dataset ``name`` needs (see :func:`operator_batch_inputs`)."""
        return operator_batch_inputs(
            self.location, name, storage_options=self.storage_options, token=token
        )


@dataclass(frozen=True)
class OperatorBatchInputs:
    """What an operator-batch task needs: the operator's inputs (layout, PSF, inverse variance)
    and the batch geometry stored with the dataset (``rows(i)``: the rows of batch ``i``)."""

    inputs: OperatorInputs
    geometry: BatchGeometry


def _options_key(storage_options: Mapping[str, Any] | None) -> str:
    return json.dumps(dict(storage_options or {}), sort_keys=True, default=str)


def cached_root(location: str, storage_options: Mapping[str, Any] | None = None) -> zarr.Group:
    """The root group of the store at ``location``, opened ``r+`` once per process and
    ``storage_options`` (the same object for the same location and options)."""
    return _open_root(location, _options_key(storage_options))


@lru_cache(maxsize=4)
def _open_root(location: str, options_json: str) -> zarr.Group:
    return open_store(location, mode="r+", storage_options=json.loads(options_json) or None)


def operator_batch_inputs(
    location: str,
    name: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    token: str | None = None,
) -> OperatorBatchInputs:
    """Dataset ``name``'s operator inputs and batch geometry, read once per process, store and
    ``token`` (a dataset prepared again gets a new token, so no stale inputs are used)."""
    return _read_inputs(location, _options_key(storage_options), name, token)


@lru_cache(maxsize=4)
def _read_inputs(
    location: str, options_json: str, name: str, token: str | None
) -> OperatorBatchInputs:
    group = dataset_group(_open_root(location, options_json), name)
    mask = np.asarray(group["mask"][...], dtype=bool)  # type: ignore[index]
    noise_map = np.asarray(group["noise_map"][...])  # type: ignore[index]
    inputs = OperatorInputs.from_noise_map(noise_map, mask, np.asarray(group[PSF_NODE][...]))  # type: ignore[index]
    op_attrs: dict[str, Any] = dict(group[OPERATOR_GROUP].attrs)
    batch_size = int(op_attrs["batch_size"])
    return OperatorBatchInputs(inputs, BatchGeometry(inputs.layout.n_pixels, batch_size))
