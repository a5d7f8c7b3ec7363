"""Task writes: a dataset's arrays (its prepare task) and its operator batches (operator tasks).

Concurrency contract: a dataset's prepare task fills that dataset's own group
(:func:`write_dataset_arrays`: every node in one call, arrays and operator batch 0, then batch 0's
marker, then the group's attributes with the status last); an operator task only writes whole
chunks of arrays that exist (:func:`write_operator_batch`): the rows of its batch, then its
marker (a one-element chunk, so markers never share a chunk). The driver's writes are in
:mod:`pipeline.io.store.records`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
import zarr
import zarr.errors

from pipeline.exc import DamagedDatasetError, DatasetNotFoundError, StoreError
from pipeline.imaging import Imaging
from pipeline.io.store._zarr import (
    array_metadata,
    create_and_fill,
    group_metadata,
    open_array,
    software,
    sync,
)
from pipeline.io.store.codecs import DEFAULT_STORAGE, SMALL_CODECS, OperatorStorage, checksum_only
from pipeline.io.store.nodes import check_replaceable, dataset_path, datasets_group
from pipeline.io.store.schema import (
    COMPLETE,
    MARKERS_NODE,
    OFFSETS_NODE,
    OPERATOR_GROUP,
    PREPARED,
    REPAIR,
    VALUES_NODE,
    jsonable,
    now,
    settings_hash,
    validate_dataset_name,
)
from pipeline.io.store.sources import Source
from pipeline.operators import BatchGeometry, OperatorLayout

__all__ = [
    "dataset_metadata",
    "prepared_attributes",
    "write_dataset_arrays",
    "write_operator_batch",
]


def dataset_metadata(imaging: Imaging) -> dict[str, Any]:
    """The attributes that describe a prepared dataset (JSON-ready). Whether it stores an
    operator (``has_operator``) is added by the writers, which know."""
    mask = imaging.mask
    return {
        "pixel_scales": list(mask.pixel_scales),
        "origin": list(mask.origin),
        "shape_native": list(mask.shape_native),
        "n_pixels": int(imaging.shape_slim),
        "psf_shape": list(imaging.psf.shape_native) if imaging.psf is not None else None,
        "psf_normalized": bool(imaging.psf is not None and imaging.psf.is_normalized),
        "use_normalized_psf": bool(imaging.use_normalized_psf),
        "check_noise_map": bool(imaging.check_noise_map),
        "has_noise_covariance": imaging.noise_covariance_matrix is not None,
        "token": uuid.uuid4().hex,
    }


def prepared_attributes(
    metadata: Mapping[str, Any],
    *,
    sources: Iterable[Source] = (),
    settings: Mapping[str, Any] | None = None,
    complete: bool = False,
    timings: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The attributes of a prepared dataset's group (JSON-ready): its metadata, status
    ``prepared`` (``complete`` if nothing is left to compute), sources, settings and their hash,
    software versions, timings."""
    settings = dict(settings or {})
    stamp = now()
    attrs = {
        **jsonable(dict(metadata)),
        "status": (COMPLETE if complete else PREPARED).value,
        "sources": [jsonable(asdict(s)) for s in sources],
        "settings": jsonable(settings),
        "settings_hash": settings_hash(settings),
        "software": dict(software()),
        "timings": jsonable(dict(timings or {})),
        "error": None,
        "prepared": stamp,
    }
    if complete:
        attrs["completed"] = stamp
    return attrs


def _arrays(imaging: Imaging) -> dict[str, np.ndarray]:
    """The dataset's arrays as stored, by node name."""
    arrays: dict[str, np.ndarray] = {
        "data": imaging.data.native.astype(np.float64),
        "noise_map": imaging.noise_map.native.astype(np.float64),
        "mask": np.asarray(imaging.mask, dtype=bool),
        "over_sample_size_lp": imaging.over_sample_size_lp.native.astype(np.int32),
        "over_sample_size_pixelization": imaging.over_sample_size_pixelization.native.astype(
            np.int32
        ),
        "grid": np.asarray(imaging.grid.slim, dtype=np.float64),
    }
    if imaging.psf is not None:
        arrays["psf"] = imaging.psf.kernel.native.astype(np.float64)
    if imaging.noise_covariance_matrix is not None:
        arrays["noise_covariance_matrix"] = np.asarray(imaging.noise_covariance_matrix)
    return arrays


def write_dataset_arrays(
    root: zarr.Group,
    name: str,
    imaging: Imaging,
    *,
    batch_size: int | None = None,
    operator_storage: OperatorStorage = DEFAULT_STORAGE,
    recreate: bool = False,
    first_batch: np.ndarray | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """Create and fill the arrays of a dataset (inside its own group only) and, if
    ``batch_size`` is given, its empty operator arrays chunked by ``batch_size`` rows. Run by the
    dataset's prepare task: no other process writes in that group meanwhile.

    ``recreate=True`` also (re)creates the group itself, erasing anything it held, without
    attributes (a group without ``status`` is prepared again by a resume); otherwise the group
    must exist (:func:`~pipeline.io.store.begin_dataset`). Only a lenspipe dataset group (or a
    torn one: dataset keys only) is ever erased: an array or a foreign file at that path raises
    :class:`UnsafeStoreError`. ``first_batch``: the rows of operator batch 0, written with the
    arrays, then its marker. ``attributes``: written onto the group last (e.g.
    :func:`prepared_attributes`, with ``has_operator`` added), so a status never vouches for
    data not yet written.

    Every array carries a crc32c checksum after its compressor, and every chunk is stored (even
    one equal to the fill value): a missing or undecodable chunk is then always damage
    (:func:`~pipeline.io.store.check_dataset`).

    Every node is created in one batch of concurrent writes (:func:`zarr.create_hierarchy`),
    then every array filled in another, all in one call into Zarr's event loop: zarr-python's
    cost per node created one by one (~1-2 ms: existence checks, parent groups, its async
    machinery) was most of a small dataset's prepare time.
    """
    validate_dataset_name(name)
    datasets = datasets_group(root)
    path = f"{datasets.path}/{name}"
    if recreate:
        check_replaceable(root, name)
    elif name not in datasets:
        raise DatasetNotFoundError(f"dataset {name!r} is not in the store")
    arrays = _arrays(imaging)
    nodes: dict[str, Any] = {
        f"{path}/{key}": array_metadata(
            values.shape,
            values.dtype,
            values.shape if values.size else (1,) * values.ndim,
            SMALL_CODECS,
            fill_value=0,
        )
        for key, values in arrays.items()
    }
    fills: dict[str, Any] = {f"{path}/{key}": values for key, values in arrays.items()}
    if recreate:
        nodes[path] = group_metadata()
    marker = None
    if batch_size is not None:
        nodes_op, fills_op = _operator_nodes(path, imaging, int(batch_size), operator_storage)
        nodes.update(nodes_op)
        fills.update(fills_op)
        if first_batch is not None:
            rows = min(int(batch_size), imaging.shape_slim)
            expected = (rows, nodes_op[f"{path}/{VALUES_NODE}"].shape[1])
            if np.shape(first_batch) != expected:
                raise StoreError(
                    f"dataset {name!r}: batch 0 covers {expected[0]} rows of {expected[1]} "
                    f"offsets, got values of shape {np.shape(first_batch)}"
                )
            # the chunk of a marked batch is stored even if it equals the fill value
            fills[f"{path}/{VALUES_NODE}"] = (operator_storage.encode(first_batch), slice(0, rows))
            marker = f"{path}/{MARKERS_NODE}"
    elif first_batch is not None:
        raise StoreError(f"dataset {name!r}: operator batch 0 given without a batch_size")
    if attributes is not None:
        attributes = {**attributes, "has_operator": batch_size is not None}
    sync(create_and_fill(root.store, path, nodes, fills, marker, attributes))


def _operator_nodes(
    path: str, imaging: Imaging, batch_size: int, storage: OperatorStorage
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The operator group and arrays of the dataset at ``path`` (nodes, and the offsets to
    fill)."""
    if imaging.psf is None:
        raise StoreError("the dataset has no PSF: there is no sparse operator to store")
    if batch_size < 1:
        raise StoreError(f"batch_size must be >= 1, got {batch_size}")
    layout = OperatorLayout(np.asarray(imaging.mask), imaging.psf.shape_native)
    n, n_off = layout.n_pixels, layout.n_offsets
    geometry = BatchGeometry(n, batch_size)
    attrs = {
        "batch_size": batch_size,
        "n_batches": geometry.n_batches,
        "kernel_shape": list(imaging.psf.shape_native),
        "dtype": storage.dtype,
        "storage": asdict(storage),
    }
    offsets = np.asarray(layout.offsets)
    nodes = {
        f"{path}/{OPERATOR_GROUP}": group_metadata(attrs),
        # the storage settings ride on the values array too: a writer opens only that array
        f"{path}/{VALUES_NODE}": array_metadata(
            (n, n_off),
            np.dtype(storage.dtype),
            (batch_size, n_off),
            storage.compressors(),
            fill_value=0.0,
            attributes={"storage": asdict(storage)},
        ),
        f"{path}/{OFFSETS_NODE}": array_metadata(
            offsets.shape, offsets.dtype, (n_off, 2), checksum_only(), 0
        ),
        f"{path}/{MARKERS_NODE}": array_metadata(
            (geometry.n_batches,), np.dtype(np.uint8), (1,), checksum_only(), 0
        ),
    }
    return nodes, {f"{path}/{OFFSETS_NODE}": offsets}


def write_operator_batch(root: zarr.Group, name: str, batch_index: int, values: np.ndarray) -> None:
    """Write rows of batch ``batch_index`` (whole chunks, so writers never share one), then its
    completion marker. Idempotent: a batch may be written twice (retried tasks)."""
    validate_dataset_name(name)
    path = dataset_path(root, name)
    try:
        # two metadata reads: the values array (chunking, storage) and the markers
        array = open_array(root.store, f"{path}/{VALUES_NODE}", mode="r+")
        # every marked batch has a stored chunk, even one equal to the fill value: a missing
        # chunk under a marker is then always damage (verify_dataset)
        array = array.with_config({"write_empty_chunks": True})
        markers = open_array(root.store, f"{path}/{MARKERS_NODE}", mode="r+")
    except (FileNotFoundError, KeyError, zarr.errors.NodeTypeValidationError) as err:
        raise StoreError(
            f"dataset {name!r} is not in the store, or has no sparse_operator array to write to"
        ) from err
    except Exception as err:  # noqa: BLE001 - a torn metadata document
        raise DamagedDatasetError(
            f"dataset {name!r}: the metadata of {path}/{VALUES_NODE} or {path}/{MARKERS_NODE} "
            f"cannot be read ({type(err).__name__}: {err}); {REPAIR}"
        ) from err
    geometry = BatchGeometry(array.shape[0], int(array.chunks[0]))
    n_batches = int(markers.shape[0])
    if not 0 <= batch_index < n_batches:
        raise StoreError(f"dataset {name!r}: batch index {batch_index} outside [0, {n_batches})")
    start, stop = geometry.rows(batch_index)
    values = np.asarray(values)
    if values.shape != (stop - start, array.shape[1]):
        raise StoreError(
            f"dataset {name!r}: batch {batch_index} covers rows [{start}, {stop}) of "
            f"{array.shape[1]} offsets, got values of shape {values.shape}; a write must cover "
            "exactly one chunk (partial-chunk writes from concurrent tasks lose data)"
        )
    array[start:stop] = OperatorStorage(**array.attrs["storage"]).encode(values)  # type: ignore[arg-type]
    markers[batch_index] = 1
