"""Writes (pipeline/io/store/writers.py, records.py): statuses, task writes, overwrite, the nodes
written.

Cases run on a local directory, a ``zarr.storage.MemoryStore`` and S3 (moto server), see
``conftest.py``; damage cases on the first two, done through the store API (raw keys)."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import zarr
import zarr.codecs
import zarr.storage

from pipeline.exc import (
    StoreError,
)
from pipeline.io.store import (
    OperatorStorage,
    batches_done,
    begin_dataset,
    create_store,
    dataset_attrs,
    dataset_metadata,
    dataset_status,
    finalize_dataset,
    list_datasets,
    mark_failed,
    open_imaging,
    open_operator,
    open_store,
    prepare_dataset,
    prepared_attributes,
    write_dataset_arrays,
    write_operator_batch,
)
from tests.io.store.support import (
    BATCH,
    ORIGIN,
    kw,
    prepare,
    write_batches,
)


def test_fixture_dataset_has_a_partial_last_batch(imaging):
    assert imaging.shape_slim == 260 and imaging.shape_slim % BATCH != 0
    assert imaging.mask.origin == ORIGIN


def test_operator_storage_validates_eagerly():
    with pytest.raises(StoreError, match="float16"):
        OperatorStorage(dtype="float16")
    with pytest.raises(StoreError, match="gzip"):
        OperatorStorage(codec="gzip")
    with pytest.raises(StoreError, match=r"\[1, 23\]"):
        OperatorStorage(dtype="float32", keep_bits=30)


def test_status_moves_prepared_complete_failed(store_location, imaging, other_imaging):
    loc = store_location
    root = prepare(loc, "lens_b", imaging)
    prepare_dataset(root, "lens_a", other_imaging)  # no operator: nothing to wait for
    assert list_datasets(loc.location, **kw(loc)) == {"lens_a": "prepared", "lens_b": "prepared"}
    assert dataset_status(loc.location, "lens_b", **kw(loc)) == "prepared"
    with pytest.raises(StoreError, match=r"'lens_b' has status 'prepared'.*allow_incomplete"):
        open_imaging(loc.location, "lens_b", **kw(loc))
    with pytest.raises(StoreError, match="status 'prepared'"):
        open_operator(loc.location, "lens_b", **kw(loc))
    partial = open_imaging(loc.location, "lens_b", allow_incomplete=True, **kw(loc))
    np.testing.assert_array_equal(partial.data.native, imaging.data.native)
    assert not partial.sparse_operator.values.any()  # nothing written yet: all fill value

    write_batches(root, "lens_b", imaging.sparse_operator.values)
    assert batches_done(root, "lens_b").tolist() == [True] * 6
    assert finalize_dataset(root, "lens_b", timings={"operator_s": 1.5}) == "complete"
    assert finalize_dataset(root, "lens_a") == "complete"
    assert list_datasets(loc.location, **kw(loc)) == {"lens_a": "complete", "lens_b": "complete"}
    attrs = dataset_attrs(loc.location, "lens_b", **kw(loc))
    assert attrs["timings"] == {"operator_s": 1.5} and attrs["error"] is None
    np.testing.assert_array_equal(
        open_operator(loc.location, "lens_b", **kw(loc)).values, imaging.sparse_operator.values
    )

    mark_failed(root, "lens_b", "OperatorError: noise map has NaN at row 3, col 4")
    mark_failed(root, "lens_c", "FitsReadError: truncated file")  # never prepared
    assert list_datasets(loc.location, **kw(loc)) == {
        "lens_a": "complete",
        "lens_b": "failed",
        "lens_c": "failed",
    }
    assert dataset_status(loc.location, "lens_c", **kw(loc)) == "failed"
    assert dataset_attrs(loc.location, "lens_b", **kw(loc))["error"] == (
        "OperatorError: noise map has NaN at row 3, col 4"
    )
    with pytest.raises(StoreError, match=r"status 'failed' \(OperatorError: noise map has NaN"):
        open_imaging(loc.location, "lens_b", **kw(loc))


def test_finalize_names_the_missing_batches(store_location, imaging):
    loc = store_location
    root = prepare(loc, "lens", imaging)
    values = imaging.sparse_operator.values
    write_batches(root, "lens", values, skip=(1, 3))
    # rows of batches 1 and 3 exist as chunks, but their markers were never written
    write_operator_batch(root, "lens", 1, values[BATCH : 2 * BATCH])
    root_plain = loc.open_zarr_group()
    root_plain["datasets/lens/sparse_operator/batches_done"][1] = 0
    assert batches_done(root, "lens").tolist() == [True, False, True, False, True, True]
    with pytest.raises(StoreError, match=r"'lens': 2 of 6 operator batches.*\[1, 3\]"):
        finalize_dataset(root, "lens")
    assert dataset_status(loc.location, "lens", **kw(loc)) == "prepared"
    write_batches(root, "lens", values)
    assert finalize_dataset(root, "lens") == "complete"


def test_batches_done_of_a_dataset_without_operator(store_location, other_imaging):
    root = create_store(store_location.location, **kw(store_location))
    prepare_dataset(root, "lens", other_imaging)
    with pytest.raises(StoreError, match="no sparse_operator"):
        batches_done(root, "lens")


def test_write_operator_batch_refuses_misaligned_writes(store_location, imaging):
    loc = store_location
    root = prepare(loc, "lens", imaging)
    values = imaging.sparse_operator.values
    n_off = values.shape[1]
    with pytest.raises(StoreError, match=r"batch 0 covers rows \[0, 50\).*shape \(49, "):
        write_operator_batch(root, "lens", 0, values[:49])
    with pytest.raises(StoreError, match=r"batch 1 covers rows \[50, 100\)"):
        write_operator_batch(root, "lens", 1, values[49:100])
    with pytest.raises(StoreError, match=r"batch 5 covers rows \[250, 260\)"):
        write_operator_batch(root, "lens", 5, np.zeros((BATCH, n_off)))  # last batch is partial
    with pytest.raises(StoreError, match=f"of {n_off} offsets"):
        write_operator_batch(root, "lens", 0, values[:BATCH, :-1])
    for index in (6, -1, 100):
        with pytest.raises(StoreError, match=rf"batch index {index} outside \[0, 6\)"):
            write_operator_batch(root, "lens", index, values[:BATCH])
    with pytest.raises(StoreError, match="'nope' is not in the store"):
        write_operator_batch(root, "nope", 0, values[:BATCH])
    assert not batches_done(root, "lens").any()
    stored = open_operator(loc.location, "lens", allow_incomplete=True, **kw(loc)).values
    assert not stored.any()


def test_write_operator_batch_is_idempotent(store_location, imaging):
    loc = store_location
    root = prepare(loc, "lens", imaging)
    values = imaging.sparse_operator.values
    rows = values[2 * BATCH : 3 * BATCH]
    write_operator_batch(root, "lens", 2, np.full_like(rows, 7.0))  # a failed attempt's rows
    write_operator_batch(root, "lens", 2, rows)  # the retry
    once = open_operator(loc.location, "lens", allow_incomplete=True, **kw(loc)).values.copy()
    write_operator_batch(root, "lens", 2, rows)
    twice = open_operator(loc.location, "lens", allow_incomplete=True, **kw(loc)).values
    np.testing.assert_array_equal(twice, once)
    np.testing.assert_array_equal(twice[2 * BATCH : 3 * BATCH], rows)
    assert not twice[: 2 * BATCH].any() and not twice[3 * BATCH :].any()
    assert batches_done(root, "lens").tolist() == [False, False, True, False, False, False]


def test_prepare_existing_name_needs_overwrite(store_location, imaging, other_imaging):
    loc = store_location
    root = prepare(loc, "lens", imaging)
    write_batches(root, "lens", imaging.sparse_operator.values)
    finalize_dataset(root, "lens")
    with pytest.raises(StoreError, match="'lens' already exists.*overwrite=True"):
        prepare_dataset(root, "lens", other_imaging)
    assert dataset_status(loc.location, "lens", **kw(loc)) == "complete"

    prepare_dataset(root, "lens", other_imaging, overwrite=True)
    attrs = dataset_attrs(loc.location, "lens", **kw(loc))
    assert attrs["status"] == "prepared"
    assert attrs["n_pixels"] == other_imaging.shape_slim != imaging.shape_slim
    assert attrs["psf_shape"] == [3, 3]
    finalize_dataset(root, "lens")
    back = open_imaging(loc.location, "lens", **kw(loc))
    assert back.sparse_operator is None  # the old operator group went with the old dataset
    np.testing.assert_array_equal(np.asarray(back.mask), np.asarray(other_imaging.mask))
    np.testing.assert_array_equal(back.data.native, other_imaging.data.native)
    with pytest.raises(StoreError, match="has no sparse operator"):
        open_operator(loc.location, "lens", **kw(loc))


def test_recreate_erases_the_previous_dataset(store_location, imaging, other_imaging):
    """What a re-run prepare task does: the group is made anew in the same batch of writes as
    its arrays, so no chunk or marker of the dataset it replaces survives."""
    loc = store_location
    root = prepare(loc, "lens", imaging)
    write_batches(root, "lens", imaging.sparse_operator.values)
    finalize_dataset(root, "lens")
    write_dataset_arrays(root, "lens", other_imaging, batch_size=40, recreate=True)

    group = open_store(loc.location, **kw(loc))["datasets"]["lens"]
    assert dict(group.attrs) == {}  # no status: a resume prepares it again
    assert dataset_status(loc.location, "lens", **kw(loc)) == "preparing"
    n = other_imaging.shape_slim
    assert not batches_done(root, "lens").any() and batches_done(root, "lens").size == -(-n // 40)
    assert group["sparse_operator"]["values"].nchunks_initialized == 0
    np.testing.assert_array_equal(group["data"][...], other_imaging.data.native)
    np.testing.assert_array_equal(group["psf"][...], other_imaging.psf.kernel.native)
    with pytest.raises(StoreError, match="'other' is not in the store"):
        write_dataset_arrays(root, "other", other_imaging)  # without recreate: begun groups only


def test_group_written_in_one_call_with_batch_zero_and_status(store_location, imaging):
    """What a prepare task writes: the group, its arrays, operator batch 0 and its marker, and
    the attributes, in one call (status written last)."""
    loc = store_location
    root = create_store(loc.location, **kw(loc))
    values = imaging.sparse_operator.values
    storage = OperatorStorage(dtype="float32", codec="lz4")
    attrs = prepared_attributes(
        dataset_metadata(imaging), settings={"mask": "circular"}, timings={"prepare_seconds": 1}
    )
    write_dataset_arrays(
        root,
        "lens",
        imaging,
        batch_size=BATCH,
        operator_storage=storage,
        recreate=True,
        first_batch=values[:BATCH],
        attributes=attrs,
    )
    assert dataset_status(loc.location, "lens", **kw(loc)) == "prepared"
    assert dataset_attrs(loc.location, "lens", **kw(loc))["settings"] == {"mask": "circular"}
    done = batches_done(root, "lens")
    assert done[0] and not done[1:].any()
    stored = open_store(loc.location, **kw(loc))["datasets"]["lens"]["sparse_operator"]["values"]
    np.testing.assert_array_equal(stored[:BATCH], values[:BATCH].astype(np.float32))
    assert not stored[BATCH:].any()  # nothing else written yet
    # the other batches by operator tasks, then complete: as the pipeline does
    for index in range(1, -(-len(values) // BATCH)):
        write_operator_batch(root, "lens", index, values[index * BATCH : (index + 1) * BATCH])
    finalize_dataset(root, "lens")
    back = open_operator(loc.location, "lens", **kw(loc))
    np.testing.assert_array_equal(back.values[...], values.astype(np.float32))

    with pytest.raises(StoreError, match="batch 0 covers 50 rows"):
        write_dataset_arrays(
            root, "lens", imaging, batch_size=BATCH, recreate=True, first_batch=values[:10]
        )
    with pytest.raises(StoreError, match="without a batch_size"):
        write_dataset_arrays(root, "lens", imaging, recreate=True, first_batch=values[:BATCH])


def test_dataset_nodes_are_those_zarr_create_array_makes(store_location, imaging):
    """Nodes are written from metadata documents in one batch: each equals the document of the
    same array made by ``zarr.create_array``, one by one."""
    loc = store_location
    storage = OperatorStorage(dtype="float32", codec="lz4", level=3)
    root = create_store(loc.location, **kw(loc))
    begin_dataset(root, "lens")
    write_dataset_arrays(root, "lens", imaging, batch_size=BATCH, operator_storage=storage)
    group = root["datasets"]["lens"]
    reference = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    # every array carries a crc32c checksum after its compressor
    small = [zarr.codecs.ZstdCodec(level=1), zarr.codecs.Crc32cCodec()]
    expected = {
        "data": (imaging.data.native, small),
        "noise_map": (imaging.noise_map.native, small),
        "mask": (np.asarray(imaging.mask), small),
        "over_sample_size_lp": (imaging.over_sample_size_lp.native.astype(np.int32), small),
        "over_sample_size_pixelization": (
            imaging.over_sample_size_pixelization.native.astype(np.int32),
            small,
        ),
        "grid": (np.asarray(imaging.grid.slim), small),
        "psf": (imaging.psf.kernel.native, small),
    }
    for key, (values, compressors) in expected.items():
        made = reference.create_array(
            key, data=values, chunks=values.shape, compressors=compressors, fill_value=0
        )
        assert group[key].metadata.to_dict() == made.metadata.to_dict(), key
        np.testing.assert_array_equal(group[key][...], values)
    op = group["sparse_operator"]
    n, n_off = op["values"].shape
    made = reference.create_array(
        "values",
        shape=(n, n_off),
        dtype="float32",
        chunks=(BATCH, n_off),
        compressors=storage.compressors(),
        fill_value=0.0,
        attributes={"storage": asdict(storage)},
    )
    assert op["values"].metadata.to_dict() == made.metadata.to_dict()
    offsets = reference.create_array(
        "offsets",
        data=op["offsets"][...],
        chunks=(n_off, 2),
        fill_value=0,
        compressors=[zarr.codecs.Crc32cCodec()],
    )
    assert op["offsets"].metadata.to_dict() == offsets.metadata.to_dict()
    markers = reference.create_array(
        "batches_done",
        shape=(-(-n // BATCH),),
        dtype=np.uint8,
        chunks=(1,),
        fill_value=0,
        compressors=[zarr.codecs.Crc32cCodec()],
    )
    assert op["batches_done"].metadata.to_dict() == markers.metadata.to_dict()
    assert dict(op.attrs) == {
        "batch_size": BATCH,
        "n_batches": -(-n // BATCH),
        "kernel_shape": list(imaging.psf.shape_native),
        "dtype": "float32",
        "storage": asdict(storage),
    }
