"""Store conformance suite (DESIGN §5): cases run on a local directory, a
``zarr.storage.MemoryStore`` and S3 (moto server), see ``conftest.py``; the many small damage
cases of issue 11 (integrity, read errors, guards) on the first two, damage done through the
store API (raw keys), as a torn write or a flipped bit would leave it."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import zarr
import zarr.codecs
import zarr.storage
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from pipeline import Array2D, Imaging, Mask2D
from pipeline.exc import (
    DamagedDatasetError,
    DatasetNotCompleteError,
    DatasetNotFoundError,
    InputFileError,
    PipelineError,
    StoreError,
    StoreVersionError,
    UnsafeStoreError,
)
from pipeline.imaging.simulator import simulate_lens
from pipeline.io.store import (
    RESERVED_NAMES,
    SCHEMA_VERSION,
    OperatorStorage,
    Source,
    batches_done,
    begin_dataset,
    check_dataset,
    create_store,
    damaged_batches,
    dataset_attrs,
    dataset_metadata,
    dataset_problems,
    dataset_status,
    file_sha256,
    finalize_dataset,
    list_datasets,
    mark_failed,
    open_imaging,
    open_operator,
    open_store,
    prepare_dataset,
    prepared_attributes,
    scan_datasets,
    settings_hash,
    source_changed,
    store_exists,
    store_overlaps,
    validate_dataset_name,
    verify_dataset,
    write_dataset_arrays,
    write_imaging,
    write_operator_batch,
)
from tests.reliability.test_integrity import KINDS

SHAPE = (24, 28)
SCALES = (0.1, 0.12)
ORIGIN = (0.3, -0.2)
BATCH = 50  # N = 260 below: 6 batches, the last one partial (10 rows)


def _masked(seed: int, radius: float, psf_shape=(5, 7)) -> Imaging:
    """A simulated lens on a frame with a non-zero origin, masked, with per-pixel over-sampling
    and no operator yet."""
    raw = simulate_lens(SHAPE, SCALES, psf_shape=psf_shape, seed=seed)
    frame = Mask2D.all_false(SHAPE, SCALES, origin=ORIGIN)
    imaging = Imaging(
        Array2D(raw.data.native, frame), Array2D(raw.noise_map.native, frame), raw.psf
    ).apply_mask(Mask2D.circular(SHAPE, SCALES, radius, origin=ORIGIN))
    sizes = np.random.default_rng(seed).integers(1, 5, size=imaging.shape_slim)
    return imaging.apply_over_sampling(sizes, 2)


@pytest.fixture(scope="module")
def imaging() -> Imaging:
    return _masked(seed=3, radius=1.0).apply_sparse_operator(batch_size=64, backend="numpy")


@pytest.fixture(scope="module")
def other_imaging() -> Imaging:
    """A different dataset (other mask, other PSF, no operator)."""
    return _masked(seed=4, radius=0.8, psf_shape=(3, 3))


def _kw(loc) -> dict:
    return {"storage_options": loc.storage_options}


def _prepare(loc, name: str, imaging: Imaging, **kwargs):
    root = create_store(loc.location, **_kw(loc))
    prepare_dataset(root, name, imaging, batch_size=BATCH, **kwargs)
    return root


def _write_batches(root, name: str, values: np.ndarray, skip=()) -> None:
    for index, start in enumerate(range(0, len(values), BATCH)):
        if index not in skip:
            write_operator_batch(root, name, index, values[start : start + BATCH])


def test_fixture_dataset_has_a_partial_last_batch(imaging):
    assert imaging.shape_slim == 260 and imaging.shape_slim % BATCH != 0
    assert imaging.mask.origin == ORIGIN


# ------------------------------------------------------------------------------ round trip
@pytest.mark.parametrize("codec", ["lz4", "zstd", "none"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_round_trip(store_location, imaging, dtype, codec):
    loc = store_location
    storage = OperatorStorage(dtype=dtype, codec=codec, level=3)
    write_imaging(
        loc.location, "lens_0001", imaging, batch_size=BATCH, operator_storage=storage, **_kw(loc)
    )
    back = open_imaging(loc.location, "lens_0001", **_kw(loc))

    assert back.name == "lens_0001"
    assert back.shape_native == SHAPE and back.shape_slim == imaging.shape_slim
    assert back.pixel_scales == SCALES and back.mask.origin == ORIGIN
    np.testing.assert_array_equal(np.asarray(back.mask), np.asarray(imaging.mask))
    for attr in ("data", "noise_map", "over_sample_size_lp", "over_sample_size_pixelization"):
        np.testing.assert_array_equal(getattr(back, attr).native, getattr(imaging, attr).native)
    assert back.over_sample_size_lp.slim.min() == 1 and back.over_sample_size_lp.slim.max() == 4
    np.testing.assert_array_equal(back.psf.kernel.native, imaging.psf.kernel.native)
    assert back.psf.shape_native == (5, 7) and back.psf.pixel_scales == SCALES
    np.testing.assert_array_equal(back.grid.slim, imaging.grid.slim)
    np.testing.assert_array_equal(back.grid.over_sampled, imaging.grid.over_sampled)
    np.testing.assert_array_equal(back.grids.blurring.slim, imaging.grids.blurring.slim)
    assert back.noise_covariance_matrix is None

    op, expected = back.sparse_operator, imaging.sparse_operator
    assert op.dtype == np.dtype(dtype) and op.values.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(op.values, expected.values.astype(dtype))
    np.testing.assert_array_equal(op.offsets, expected.offsets)
    np.testing.assert_array_equal(op.psf_weighted_data, expected.psf_weighted_data)

    attrs = dataset_attrs(loc.location, "lens_0001", **_kw(loc))
    assert attrs["status"] == "complete" and attrs["n_pixels"] == 260
    assert attrs["psf_shape"] == [5, 7] and attrs["origin"] == list(ORIGIN)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_keep_bits_bounds_the_relative_error(store_location, imaging, dtype):
    loc = store_location
    write_imaging(
        loc.location,
        "lens",
        imaging,
        batch_size=BATCH,
        **_kw(loc),
        operator_storage=OperatorStorage(dtype=dtype, keep_bits=12),
    )
    stored = open_operator(loc.location, "lens", **_kw(loc)).values
    # float32 storage rounds the float32 values; float64 the computed values
    exact = imaging.sparse_operator.values.astype(dtype)
    assert stored.dtype == np.dtype(dtype)
    zero = exact == 0
    assert zero.any() and not zero.all()
    np.testing.assert_array_equal(stored[zero], 0)
    relative = np.abs(stored[~zero] - exact[~zero]) / np.abs(exact[~zero])
    assert relative.max() <= 2.0**-13
    assert relative.max() > 2.0**-20  # the mantissa really was rounded
    assert np.all(np.sign(stored[~zero]) == np.sign(exact[~zero]))


def test_operator_storage_validates_eagerly():
    with pytest.raises(StoreError, match="float16"):
        OperatorStorage(dtype="float16")
    with pytest.raises(StoreError, match="gzip"):
        OperatorStorage(codec="gzip")
    with pytest.raises(StoreError, match=r"\[1, 23\]"):
        OperatorStorage(dtype="float32", keep_bits=30)


# ------------------------------------------------------------------------------ status
def test_status_moves_prepared_complete_failed(store_location, imaging, other_imaging):
    loc = store_location
    root = _prepare(loc, "lens_b", imaging)
    prepare_dataset(root, "lens_a", other_imaging)  # no operator: nothing to wait for
    assert list_datasets(loc.location, **_kw(loc)) == {"lens_a": "prepared", "lens_b": "prepared"}
    assert dataset_status(loc.location, "lens_b", **_kw(loc)) == "prepared"
    with pytest.raises(StoreError, match=r"'lens_b' has status 'prepared'.*allow_incomplete"):
        open_imaging(loc.location, "lens_b", **_kw(loc))
    with pytest.raises(StoreError, match="status 'prepared'"):
        open_operator(loc.location, "lens_b", **_kw(loc))
    partial = open_imaging(loc.location, "lens_b", allow_incomplete=True, **_kw(loc))
    np.testing.assert_array_equal(partial.data.native, imaging.data.native)
    assert not partial.sparse_operator.values.any()  # nothing written yet: all fill value

    _write_batches(root, "lens_b", imaging.sparse_operator.values)
    assert batches_done(root, "lens_b").tolist() == [True] * 6
    assert finalize_dataset(root, "lens_b", timings={"operator_s": 1.5}) == "complete"
    assert finalize_dataset(root, "lens_a") == "complete"
    assert list_datasets(loc.location, **_kw(loc)) == {"lens_a": "complete", "lens_b": "complete"}
    attrs = dataset_attrs(loc.location, "lens_b", **_kw(loc))
    assert attrs["timings"] == {"operator_s": 1.5} and attrs["error"] is None
    np.testing.assert_array_equal(
        open_operator(loc.location, "lens_b", **_kw(loc)).values, imaging.sparse_operator.values
    )

    mark_failed(root, "lens_b", "OperatorError: noise map has NaN at row 3, col 4")
    mark_failed(root, "lens_c", "FitsReadError: truncated file")  # never prepared
    assert list_datasets(loc.location, **_kw(loc)) == {
        "lens_a": "complete",
        "lens_b": "failed",
        "lens_c": "failed",
    }
    assert dataset_status(loc.location, "lens_c", **_kw(loc)) == "failed"
    assert dataset_attrs(loc.location, "lens_b", **_kw(loc))["error"] == (
        "OperatorError: noise map has NaN at row 3, col 4"
    )
    with pytest.raises(StoreError, match=r"status 'failed' \(OperatorError: noise map has NaN"):
        open_imaging(loc.location, "lens_b", **_kw(loc))


def test_finalize_names_the_missing_batches(store_location, imaging):
    loc = store_location
    root = _prepare(loc, "lens", imaging)
    values = imaging.sparse_operator.values
    _write_batches(root, "lens", values, skip=(1, 3))
    # rows of batches 1 and 3 exist as chunks, but their markers were never written
    write_operator_batch(root, "lens", 1, values[BATCH : 2 * BATCH])
    root_plain = loc.open_zarr_group()
    root_plain["datasets/lens/sparse_operator/batches_done"][1] = 0
    assert batches_done(root, "lens").tolist() == [True, False, True, False, True, True]
    with pytest.raises(StoreError, match=r"'lens': 2 of 6 operator batches.*\[1, 3\]"):
        finalize_dataset(root, "lens")
    assert dataset_status(loc.location, "lens", **_kw(loc)) == "prepared"
    _write_batches(root, "lens", values)
    assert finalize_dataset(root, "lens") == "complete"


def test_batches_done_of_a_dataset_without_operator(store_location, other_imaging):
    root = create_store(store_location.location, **_kw(store_location))
    prepare_dataset(root, "lens", other_imaging)
    with pytest.raises(StoreError, match="no sparse_operator"):
        batches_done(root, "lens")


# ------------------------------------------------------------------------------ task writes
def test_write_operator_batch_refuses_misaligned_writes(store_location, imaging):
    loc = store_location
    root = _prepare(loc, "lens", imaging)
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
    stored = open_operator(loc.location, "lens", allow_incomplete=True, **_kw(loc)).values
    assert not stored.any()


def test_write_operator_batch_is_idempotent(store_location, imaging):
    loc = store_location
    root = _prepare(loc, "lens", imaging)
    values = imaging.sparse_operator.values
    rows = values[2 * BATCH : 3 * BATCH]
    write_operator_batch(root, "lens", 2, np.full_like(rows, 7.0))  # a failed attempt's rows
    write_operator_batch(root, "lens", 2, rows)  # the retry
    once = open_operator(loc.location, "lens", allow_incomplete=True, **_kw(loc)).values.copy()
    write_operator_batch(root, "lens", 2, rows)
    twice = open_operator(loc.location, "lens", allow_incomplete=True, **_kw(loc)).values
    np.testing.assert_array_equal(twice, once)
    np.testing.assert_array_equal(twice[2 * BATCH : 3 * BATCH], rows)
    assert not twice[: 2 * BATCH].any() and not twice[3 * BATCH :].any()
    assert batches_done(root, "lens").tolist() == [False, False, True, False, False, False]


# ------------------------------------------------------------------------------ schema
def test_future_schema_version_is_refused(store_location, imaging):
    loc = store_location
    write_imaging(loc.location, "lens", imaging, batch_size=BATCH, **_kw(loc))
    root = open_store(loc.location, **_kw(loc))
    assert root.attrs["lenspipe"]["schema_version"] == SCHEMA_VERSION == 1
    loc.open_zarr_group().attrs["lenspipe"] = {"schema_version": 99}
    for call in (
        lambda: open_store(loc.location, **_kw(loc)),
        lambda: open_store(loc.location, "r+", **_kw(loc)),
        lambda: list_datasets(loc.location, **_kw(loc)),
        lambda: open_imaging(loc.location, "lens", **_kw(loc)),
        lambda: create_store(loc.location, **_kw(loc)),
    ):
        with pytest.raises(StoreError, match=r"schema_version 99.*versions <= 1: upgrade"):
            call()


def test_plain_zarr_group_is_refused(store_location):
    loc = store_location
    group = loc.open_zarr_group(mode="w")
    group.create_array("image", shape=(3,), dtype="f8")
    for call in (
        lambda: open_store(loc.location, **_kw(loc)),
        lambda: list_datasets(loc.location, **_kw(loc)),
    ):
        with pytest.raises(StoreError, match="a Zarr group but not a lenspipe store"):
            call()
    with pytest.raises(StoreError, match="non-empty Zarr group that is not a lenspipe store"):
        create_store(loc.location, **_kw(loc))
    assert "lenspipe" not in loc.open_zarr_group(mode="r").attrs


def test_missing_store_is_refused(store_location):
    loc = store_location
    with pytest.raises(StoreError, match="no Zarr store at"):
        open_store(loc.location, **_kw(loc))
    with pytest.raises(StoreError, match="no Zarr store at"):
        list_datasets(loc.location, **_kw(loc))


def test_create_store_is_reentrant(store_location, imaging):
    loc = store_location
    write_imaging(loc.location, "lens", imaging, batch_size=BATCH, **_kw(loc))
    created = dict(open_store(loc.location, **_kw(loc)).attrs["lenspipe"])
    root = create_store(loc.location, **_kw(loc))
    assert dict(root.attrs["lenspipe"]) == created
    assert list_datasets(loc.location, **_kw(loc)) == {"lens": "complete"}


# ------------------------------------------------------------------------------ overwrite
def test_prepare_existing_name_needs_overwrite(store_location, imaging, other_imaging):
    loc = store_location
    root = _prepare(loc, "lens", imaging)
    _write_batches(root, "lens", imaging.sparse_operator.values)
    finalize_dataset(root, "lens")
    with pytest.raises(StoreError, match="'lens' already exists.*overwrite=True"):
        prepare_dataset(root, "lens", other_imaging)
    assert dataset_status(loc.location, "lens", **_kw(loc)) == "complete"

    prepare_dataset(root, "lens", other_imaging, overwrite=True)
    attrs = dataset_attrs(loc.location, "lens", **_kw(loc))
    assert attrs["status"] == "prepared"
    assert attrs["n_pixels"] == other_imaging.shape_slim != imaging.shape_slim
    assert attrs["psf_shape"] == [3, 3]
    finalize_dataset(root, "lens")
    back = open_imaging(loc.location, "lens", **_kw(loc))
    assert back.sparse_operator is None  # the old operator group went with the old dataset
    np.testing.assert_array_equal(np.asarray(back.mask), np.asarray(other_imaging.mask))
    np.testing.assert_array_equal(back.data.native, other_imaging.data.native)
    with pytest.raises(StoreError, match="has no sparse operator"):
        open_operator(loc.location, "lens", **_kw(loc))


def test_recreate_erases_the_previous_dataset(store_location, imaging, other_imaging):
    """What a re-run prepare task does: the group is made anew in the same batch of writes as
    its arrays, so no chunk or marker of the dataset it replaces survives."""
    loc = store_location
    root = _prepare(loc, "lens", imaging)
    _write_batches(root, "lens", imaging.sparse_operator.values)
    finalize_dataset(root, "lens")
    write_dataset_arrays(root, "lens", other_imaging, batch_size=40, recreate=True)

    group = open_store(loc.location, **_kw(loc))["datasets"]["lens"]
    assert dict(group.attrs) == {}  # no status: a resume prepares it again
    assert dataset_status(loc.location, "lens", **_kw(loc)) == "preparing"
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
    root = create_store(loc.location, **_kw(loc))
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
    assert dataset_status(loc.location, "lens", **_kw(loc)) == "prepared"
    assert dataset_attrs(loc.location, "lens", **_kw(loc))["settings"] == {"mask": "circular"}
    done = batches_done(root, "lens")
    assert done[0] and not done[1:].any()
    stored = open_store(loc.location, **_kw(loc))["datasets"]["lens"]["sparse_operator"]["values"]
    np.testing.assert_array_equal(stored[:BATCH], values[:BATCH].astype(np.float32))
    assert not stored[BATCH:].any()  # nothing else written yet
    # the other batches by operator tasks, then complete: as the pipeline does
    for index in range(1, -(-len(values) // BATCH)):
        write_operator_batch(root, "lens", index, values[index * BATCH : (index + 1) * BATCH])
    finalize_dataset(root, "lens")
    back = open_operator(loc.location, "lens", **_kw(loc))
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
    root = create_store(loc.location, **_kw(loc))
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


# ------------------------------------------------------------------------------ names
@pytest.mark.parametrize("name", ["lens_0001", "J0946+1006.v2", "a", "x" * 200])
def test_valid_dataset_names(name):
    assert validate_dataset_name(name) == name


@pytest.mark.parametrize(
    "name", ["a/b", "..", "../x", "", "a\\b", "x" * 201, ".hidden", "a..b", "a b", None]
)
def test_invalid_dataset_names(name):
    with pytest.raises(StoreError, match="not a safe store key"):
        validate_dataset_name(name)


def test_store_functions_validate_names(store_location, other_imaging):
    loc = store_location
    root = create_store(loc.location, **_kw(loc))
    for name in ("a/b", "../x", ".."):
        with pytest.raises(StoreError, match="not a safe store key"):
            prepare_dataset(root, name, other_imaging)
        with pytest.raises(StoreError, match="not a safe store key"):
            mark_failed(root, name, "boom")
        with pytest.raises(StoreError, match="not a safe store key"):
            open_imaging(loc.location, name, allow_incomplete=True, **_kw(loc))
    assert list_datasets(loc.location, **_kw(loc)) == {}


# ------------------------------------------------------------------------------ provenance
def test_source_sha256(tmp_path):
    payload = bytes(range(256)) * 5000  # > 1 MiB: several read blocks
    path = tmp_path / "data.fits"
    path.write_bytes(payload)
    source = Source.from_file("data", path, hdu="SCI")
    assert source.sha256 == hashlib.sha256(payload).hexdigest()
    assert (source.role, source.path, source.hdu) == ("data", str(path), "SCI")


def test_settings_hash():
    settings = {"mask": {"radius": 3.0, "kind": "circular"}, "batch_size": 97, "dtype": "float32"}
    reordered = {"dtype": "float32", "batch_size": 97, "mask": {"kind": "circular", "radius": 3.0}}
    assert settings_hash(settings) == settings_hash(reordered)
    assert len(settings_hash(settings)) == 64
    changed = {**settings, "mask": {"radius": 3.5, "kind": "circular"}}
    assert settings_hash(changed) != settings_hash(settings)
    assert settings_hash({"x": np.float64(0.5), "y": (1, 2)}) == settings_hash(
        {"x": 0.5, "y": [1, 2]}
    )


def test_sources_and_settings_are_stored(store_location, imaging, tmp_path):
    loc = store_location
    files = {}
    for role, payload in (("data", b"SIMPLE  = T data"), ("psf", b"SIMPLE  = T psf")):
        files[role] = tmp_path / f"{role}.fits"
        files[role].write_bytes(payload)
    sources = [
        Source.from_file("data", files["data"], hdu=1),
        Source.from_file("psf", files["psf"]),
    ]
    settings = {
        "mask": {"radius": 1.0},
        "sparse_operator": {"batch_size": BATCH, "dtype": "float64"},
    }
    write_imaging(
        loc.location,
        "lens",
        imaging,
        batch_size=BATCH,
        sources=sources,
        settings=settings,
        **_kw(loc),
    )
    attrs = dataset_attrs(loc.location, "lens", **_kw(loc))
    assert attrs["sources"] == [
        {
            "role": "data",
            "path": str(files["data"]),
            "hdu": 1,
            "sha256": hashlib.sha256(b"SIMPLE  = T data").hexdigest(),
            "size": 16,
            "mtime_ns": files["data"].stat().st_mtime_ns,
        },
        {
            "role": "psf",
            "path": str(files["psf"]),
            "hdu": 0,
            "sha256": hashlib.sha256(b"SIMPLE  = T psf").hexdigest(),
            "size": 15,
            "mtime_ns": files["psf"].stat().st_mtime_ns,
        },
    ]
    assert attrs["settings"] == settings
    assert attrs["settings_hash"] == settings_hash(settings)
    assert attrs["software"]["zarr"] == zarr.__version__


# ------------------------------------------------------------------------------ lazy operator
def test_open_operator_reads_values_lazily(store_location, imaging):
    loc = store_location
    write_imaging(loc.location, "lens", imaging, batch_size=BATCH, **_kw(loc))
    op = open_operator(loc.location, "lens", **_kw(loc))
    assert isinstance(op._values, zarr.Array)
    assert "values" not in op.__dict__  # the cached property has not been read
    assert op.dtype == np.float64 and op.n_pixels == imaging.shape_slim
    assert "values" not in op.__dict__

    n = imaging.shape_slim
    rng = np.random.default_rng(5)
    mapping = sp.random(n, 40, density=0.05, format="csr", random_state=rng)
    expected = imaging.sparse_operator.curvature_matrix_from(mapping)
    curvature = op.curvature_matrix_from(mapping)
    assert "values" in op.__dict__ and isinstance(op.values, np.ndarray)
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(curvature, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
    np.testing.assert_allclose(
        op.data_vector_from(mapping), imaging.sparse_operator.data_vector_from(mapping), rtol=1e-12
    )


# ------------------------------------------------------------------------------ integrity (issue 11)
def _store(loc):
    """The ``zarr.abc.store.Store`` under a location: raw keys, as damage sees them."""
    return loc.open_zarr_group(mode="r+").store


def _keys(loc, prefix: str) -> list[str]:
    store = _store(loc)

    async def listing() -> list[str]:
        return sorted([key async for key in store.list_prefix(prefix)])

    return sync(listing())


def _delete(loc, key: str) -> None:
    store = _store(loc)
    assert sync(store.exists(key)), key
    sync(store.delete(key))


def _put(loc, key: str, payload: bytes) -> None:
    sync(_store(loc).set(key, default_buffer_prototype().buffer.from_bytes(payload)))


def _get(loc, key: str) -> bytes | None:
    buffer = sync(_store(loc).get(key, prototype=default_buffer_prototype()))
    return None if buffer is None else buffer.to_bytes()


def _complete(loc, imaging, name="lens"):
    write_imaging(loc.location, name, imaging, batch_size=BATCH, **_kw(loc))


ARRAYS = KINDS  # every array a complete dataset with an operator stores


def test_every_array_has_a_checksum_and_every_chunk_is_stored(store_location, imaging):
    """Arrays are written whole, all-zero chunks included (an all-False mask, an unset
    covariance block), each with a crc32c codec after its compressor: a chunk missing or not
    decoding is always damage."""
    loc = store_location
    frame = Mask2D.all_false(SHAPE, SCALES, origin=ORIGIN)
    raw = simulate_lens(SHAPE, SCALES, psf_shape=(5, 7), seed=3)
    plain = Imaging(
        Array2D(raw.data.native, frame),
        Array2D(raw.noise_map.native, frame),
        raw.psf,
        noise_covariance_matrix=np.zeros((SHAPE[0] * SHAPE[1],) * 2),
    )
    assert not np.asarray(plain.mask).any()  # the mask chunk equals the fill value
    root = create_store(loc.location, **_kw(loc))
    prepare_dataset(root, "lens", plain, batch_size=200)
    group = open_store(loc.location, **_kw(loc))["datasets"]["lens"]
    arrays = (*ARRAYS, "noise_covariance_matrix")
    for key in arrays:
        array = group[key]
        codecs = [c.to_dict()["name"] for c in array.metadata.codecs]
        assert codecs[-1] == "crc32c", (key, codecs)
        if key != "sparse_operator/values" and key != "sparse_operator/batches_done":
            assert array.nchunks_initialized == array.nchunks, key
    attrs = dataset_attrs(loc.location, "lens", **_kw(loc))
    assert attrs["has_operator"] is True and attrs["has_noise_covariance"] is True
    check = check_dataset(loc.location, "lens", **_kw(loc))
    assert check.status == "prepared" and not check.needs_prepare
    assert check.pending_batches == check.damaged_batches == list(range(4))
    assert not check.ok and "4 operator batch(es) not computed yet" in check.message()


def test_check_dataset_of_an_intact_dataset(store_location, imaging, other_imaging):
    loc = store_location
    _complete(loc, imaging)
    write_imaging(loc.location, "plain", other_imaging, **_kw(loc))  # no operator
    for name in ("lens", "plain"):
        check = check_dataset(loc.location, name, **_kw(loc))
        assert check.ok and not check.needs_prepare, check
        assert check.status == "complete" and check.message() == f"dataset {name!r}: intact"
        assert (check.missing_nodes, check.damaged_arrays, check.damaged_batches) == ([], {}, [])
    assert dataset_attrs(loc.location, "plain", **_kw(loc))["has_operator"] is False
    with pytest.raises(DatasetNotFoundError, match="'nope' is not in the store") as info:
        check_dataset(loc.location, "nope", **_kw(loc))
    assert isinstance(info.value, KeyError) and str(info.value).startswith("dataset 'nope'")


@pytest.mark.parametrize("node", ARRAYS)
def test_a_flipped_bit_is_damage_on_every_store(quick_location, imaging, node):
    loc = quick_location
    _complete(loc, imaging)
    prefix = f"datasets/lens/{node}/c"
    key = _keys(loc, prefix)[-1]
    raw = bytearray(_get(loc, key))
    raw[len(raw) // 2] ^= 0x10
    _put(loc, key, bytes(raw))
    check = check_dataset(loc.location, "lens", **_kw(loc))
    if node in ("sparse_operator/values", "sparse_operator/batches_done"):
        batch = int(key[len(prefix) + 1 :].split("/")[0])
        assert check.damaged_batches == [batch] and not check.needs_prepare
        assert "cannot be decoded" in check.batch_reasons[batch]
    else:
        assert list(check.damaged_arrays) == [node] and check.needs_prepare
    with pytest.raises(DamagedDatasetError, match=r"'lens'.*--verify"):
        _ = open_imaging(loc.location, "lens", **_kw(loc)).sparse_operator.values


def test_missing_nodes_are_damage(quick_location, imaging):
    """A node the status promises (here the operator group, then the PSF) gone: the dataset is
    damaged, never read as one without it."""
    loc = quick_location
    _complete(loc, imaging)
    _delete(loc, "datasets/lens/sparse_operator/zarr.json")
    check = check_dataset(loc.location, "lens", **_kw(loc))
    assert check.missing_nodes == ["sparse_operator"] and check.needs_prepare
    assert "sparse_operator is missing" in check.message()
    with pytest.raises(DamagedDatasetError) as info:
        open_imaging(loc.location, "lens", **_kw(loc))
    message = str(info.value)
    assert message == (
        "dataset 'lens': node datasets/lens/sparse_operator is missing, though its status "
        "'complete' promises it; rerun `lenspipe run CONFIG --verify` to repair it"
    )
    with pytest.raises(DamagedDatasetError, match="sparse_operator"):
        open_operator(loc.location, "lens", **_kw(loc))

    _delete(loc, "datasets/lens/psf/zarr.json")
    check = check_dataset(loc.location, "lens", **_kw(loc))
    assert check.missing_nodes == ["psf", "sparse_operator"]
    with pytest.raises(DamagedDatasetError, match=r"nodes datasets/lens/psf, datasets/lens/spa"):
        open_imaging(loc.location, "lens", **_kw(loc))


def test_a_lost_chunk_of_a_small_array_is_damage(quick_location, imaging):
    loc = quick_location
    _complete(loc, imaging)
    _delete(loc, "datasets/lens/noise_map/c/0/0")
    check = check_dataset(loc.location, "lens", **_kw(loc))
    assert check.damaged_arrays == {"noise_map": "chunk datasets/lens/noise_map/c/0/0 is missing"}
    with pytest.raises(DamagedDatasetError, match=r"noise_map: chunk .*noise_map/c/0/0 is missing"):
        open_imaging(loc.location, "lens", **_kw(loc))


def test_torn_array_metadata_and_contradicting_content_are_damage(quick_location, imaging):
    loc = quick_location
    _complete(loc, imaging)
    pristine = {key: _get(loc, key) for key in _keys(loc, "datasets/lens/")}

    _put(loc, "datasets/lens/grid/zarr.json", b'{"zarr_format": 3, "node_ty')  # torn
    check = check_dataset(loc.location, "lens", **_kw(loc))
    assert (
        list(check.damaged_arrays) == ["grid"] and "does not decode" in check.damaged_arrays["grid"]
    )
    with pytest.raises(DamagedDatasetError, match=r"'lens'.*datasets/lens/grid.*cannot be opened"):
        open_imaging(loc.location, "lens", **_kw(loc))
    _put(loc, "datasets/lens/grid/zarr.json", pristine["datasets/lens/grid/zarr.json"])
    assert check_dataset(loc.location, "lens", **_kw(loc)).ok

    # offsets written with a valid checksum but in another order: not this mask's band layout
    group = loc.open_zarr_group()["datasets/lens/sparse_operator/offsets"]
    group[...] = group[...][::-1]
    check = check_dataset(loc.location, "lens", **_kw(loc))
    assert check.damaged_arrays == {
        "sparse_operator/offsets": "differ from the band layout of the mask and kernel_shape"
    }
    with pytest.raises(DamagedDatasetError, match="offsets differ"):
        open_imaging(loc.location, "lens", **_kw(loc))
    _put(
        loc,
        "datasets/lens/sparse_operator/offsets/c/0/0",
        pristine["datasets/lens/sparse_operator/offsets/c/0/0"],
    )

    # attributes that contradict the arrays (a mask with more pixels than n_pixels says)
    loc.open_zarr_group()["datasets/lens"].attrs["n_pixels"] = 7
    check = check_dataset(loc.location, "lens", **_kw(loc))
    assert "grid" in check.damaged_arrays and "mask" in check.damaged_arrays
    assert check.damaged_arrays["mask"] == "260 unmasked pixels, n_pixels is 7"


def test_complete_dataset_with_an_unset_marker_is_damaged(quick_location, imaging):
    loc = quick_location
    _complete(loc, imaging)
    _delete(loc, "datasets/lens/sparse_operator/batches_done/c/4")
    check = check_dataset(loc.location, "lens", **_kw(loc))
    assert check.damaged_batches == [4] and not check.needs_prepare
    assert "batches_done/c/4 is not set" in check.batch_reasons[4]
    assert verify_dataset(loc.location, "lens", **_kw(loc)) == [4]
    with pytest.raises(DamagedDatasetError, match=r"batch\(es\) of a complete dataset have no"):
        open_imaging(loc.location, "lens", **_kw(loc))


def test_failed_and_unprepared_datasets_need_prepare(quick_location, imaging):
    loc = quick_location
    root = create_store(loc.location, **_kw(loc))
    mark_failed(root, "bad", "FitsReadError: truncated")
    begin_dataset(root, "begun")
    for name, status in (("bad", "failed"), ("begun", None)):
        check = check_dataset(root, name)
        assert check.status == status and check.needs_prepare and not check.ok


def test_old_stores_without_checksums_still_open(quick_location, imaging):
    """A store written before every array had a checksum (only the operator values had one):
    arrays rewritten with the old codecs, attributes without ``has_operator``."""
    loc = quick_location
    _complete(loc, imaging)
    group = loc.open_zarr_group()["datasets/lens"]
    for key in ARRAYS:
        if key == "sparse_operator/values":
            continue
        values, old = group[key][...], group[key]
        compressors = None if key.startswith("sparse_operator") else [zarr.codecs.ZstdCodec()]
        parent = group["sparse_operator"] if key.startswith("sparse_operator") else group
        parent.create_array(
            key.split("/")[-1],
            data=values,
            chunks=old.chunks,
            compressors=compressors,
            fill_value=0,
            overwrite=True,
        )
    attrs = dict(group.attrs)
    for key in ("has_operator", "has_noise_covariance"):
        del attrs[key]
    group.attrs.clear()
    group.attrs.update(attrs)
    back = open_imaging(loc.location, "lens", **_kw(loc))
    np.testing.assert_array_equal(back.data.native, imaging.data.native)
    np.testing.assert_array_equal(back.sparse_operator.values, imaging.sparse_operator.values)
    assert check_dataset(loc.location, "lens", **_kw(loc)).ok
    # without has_operator, a missing operator group cannot be told from none: read without
    _delete(loc, "datasets/lens/sparse_operator/zarr.json")
    assert open_imaging(loc.location, "lens", **_kw(loc)).sparse_operator is None


# ------------------------------------------------------------------------------ read errors
def test_read_errors_are_store_errors_naming_dataset_node_and_fix(quick_location, imaging):
    loc = quick_location
    _complete(loc, imaging)
    root = create_store(loc.location, **_kw(loc))
    prepare_dataset(root, "half", imaging, batch_size=BATCH)
    for call in (
        lambda: open_imaging(loc.location, "nope", **_kw(loc)),
        lambda: dataset_attrs(loc.location, "nope", **_kw(loc)),
        lambda: dataset_status(loc.location, "nope", **_kw(loc)),
    ):
        with pytest.raises(DatasetNotFoundError) as info:
            call()
        assert str(info.value) == "dataset 'nope' is not in the store"  # no KeyError quotes
    with pytest.raises(DatasetNotCompleteError, match="'half' has status 'prepared'"):
        open_imaging(loc.location, "half", **_kw(loc))

    _put(loc, "datasets/lens/zarr.json", b'{"zarr_format": 3,')  # torn group document
    for call in (
        lambda: open_imaging(loc.location, "lens", **_kw(loc)),
        lambda: dataset_attrs(loc.location, "lens", **_kw(loc)),
        lambda: dataset_status(loc.location, "lens", **_kw(loc)),
        lambda: verify_dataset(loc.location, "lens", **_kw(loc)),
        lambda: batches_done(root, "lens"),
        lambda: damaged_batches(root, "lens"),
    ):
        with pytest.raises(DamagedDatasetError) as info:
            call()
        message = str(info.value)
        assert "dataset 'lens'" in message and "datasets/lens/zarr.json" in message, message
        assert "does not decode" in message and "lenspipe run CONFIG --verify" in message
    # the other datasets are unaffected
    assert dataset_status(loc.location, "half", **_kw(loc)) == "prepared"


def test_scan_and_list_report_unreadable_datasets_without_failing(store_location, other_imaging):
    """One unreadable child never hides the others: a torn group document, a group document
    lost under its arrays, an array where a group should be, a foreign object, a failed
    dataset."""
    loc = store_location
    imaging = other_imaging  # no operator: fewer writes (S3)
    for name in ("good", "torn", "headless"):
        _complete(loc, imaging, name)
    root = create_store(loc.location, **_kw(loc))
    mark_failed(root, "failed", "FitsReadError: 'data.fits' truncated")
    loc.open_zarr_group()["datasets"].create_array("an_array", shape=(2,), dtype="f8")
    _put(loc, "datasets/torn/zarr.json", b"{")
    _delete(loc, "datasets/headless/zarr.json")
    _put(loc, "datasets/notes.txt", b"not a dataset")

    found = scan_datasets(loc.location, **_kw(loc))
    assert (
        list(found)
        == sorted(found)
        == [
            "an_array",
            "failed",
            "good",
            "headless",
            "notes.txt",
            "torn",
        ]
    )
    assert found["good"]["status"] == "complete" and found["failed"]["status"] == "failed"
    errors = {name: str(err) for name, err in found.items() if isinstance(err, StoreError)}
    assert set(errors) == {"an_array", "headless", "notes.txt", "torn"}
    assert all(isinstance(found[name], DamagedDatasetError) for name in errors)
    assert "is a Zarr array, not a dataset group" in errors["an_array"]
    assert "group document datasets/headless/zarr.json is missing" in errors["headless"]
    assert "datasets/torn/zarr.json does not decode" in errors["torn"]
    assert "--verify" in errors["torn"] and "move it out of the store" in errors["an_array"]
    assert "notes.txt" in errors["notes.txt"]

    assert list_datasets(loc.location, **_kw(loc)) == {
        "an_array": "damaged",
        "failed": "failed",
        "good": "complete",
        "headless": "damaged",
        "notes.txt": "damaged",
        "torn": "damaged",
    }
    problems = dataset_problems(loc.location, **_kw(loc))
    assert set(problems) == {"an_array", "failed", "headless", "notes.txt", "torn"}
    assert problems["failed"] == "FitsReadError: 'data.fits' truncated"
    assert problems["torn"] == errors["torn"]
    # the readable dataset still reads
    assert open_imaging(loc.location, "good", **_kw(loc)).shape_slim == imaging.shape_slim


# ------------------------------------------------------------------------------ guards
def test_recreate_never_overwrites_what_is_not_a_dataset_group(quick_location, other_imaging):
    loc = quick_location
    root = create_store(loc.location, **_kw(loc))
    datasets = loc.open_zarr_group()["datasets"]
    datasets.create_array("an_array", data=np.arange(4.0), chunks=(4,))
    _put(loc, "datasets/a_file", b"precious bytes")
    _put(loc, "datasets/mixed/notes.txt", b"precious notes")
    _put(loc, "datasets/mixed/data/zarr.json", b"{}")
    before = {key: _get(loc, key) for key in _keys(loc, "datasets/")}
    for name, why in (
        ("an_array", "is a Zarr array, not a dataset group"),
        ("a_file", "is a file, not a dataset group"),
        ("mixed", "holds files that are not a dataset's (datasets/mixed/notes.txt)"),
    ):
        for call in (
            lambda name=name: write_dataset_arrays(root, name, other_imaging, recreate=True),
            lambda name=name: begin_dataset(root, name, overwrite=True),
            lambda name=name: prepare_dataset(root, name, other_imaging, overwrite=True),
            lambda name=name: mark_failed(root, name, "boom"),
        ):
            with pytest.raises(UnsafeStoreError) as info:
                call()
            message = str(info.value)
            assert f"dataset {name!r}" in message and why in message, message
            assert "overwrites only its own dataset groups" in message
    assert {key: _get(loc, key) for key in _keys(loc, "datasets/")} == before
    np.testing.assert_array_equal(datasets["an_array"][...], np.arange(4.0))


def test_recreate_and_mark_failed_repair_a_torn_dataset(quick_location, imaging, other_imaging):
    """A torn dataset (its group document torn or lost, only dataset keys below it) is ours:
    recreated by a prepare, or recorded failed."""
    loc = quick_location
    _complete(loc, imaging, "torn")
    _complete(loc, imaging, "headless")
    _put(loc, "datasets/torn/zarr.json", b"{")
    _delete(loc, "datasets/headless/zarr.json")
    root = open_store(loc.location, "r+", **_kw(loc))
    write_dataset_arrays(root, "torn", other_imaging, recreate=True)
    assert dataset_status(loc.location, "torn", **_kw(loc)) == "preparing"
    assert not any("sparse_operator" in key for key in _keys(loc, "datasets/torn/"))
    mark_failed(root, "headless", "DamagedDatasetError: lost")
    assert dataset_attrs(loc.location, "headless", **_kw(loc))["error"] == (
        "DamagedDatasetError: lost"
    )
    assert list_datasets(loc.location, **_kw(loc)) == {"headless": "failed", "torn": "preparing"}
    # a complete dataset recorded failed keeps its other attributes
    _complete(loc, imaging, "good")
    mark_failed(root, "good", "changed inputs")
    attrs = dataset_attrs(loc.location, "good", **_kw(loc))
    assert attrs["status"] == "failed" and attrs["n_pixels"] == imaging.shape_slim


def test_mark_failed_reports_an_unwritable_store(tmp_path, other_imaging):
    store = tmp_path / "survey.zarr"
    root = create_store(store)
    prepare_dataset(root, "lens", other_imaging)
    read_only = open_store(store, "r")
    with pytest.raises(StoreError, match=r"dataset 'lens': its failure could not be recorded"):
        mark_failed(read_only, "lens", "boom")
    assert dataset_status(store, "lens") == "prepared"


def test_create_store_refusals_and_adoptions(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "input.fits").write_bytes(b"SIMPLE  = T")
    for location in ("", ".", str(tmp_path), Path("."), f"{tmp_path}/sub/.."):
        with pytest.raises(UnsafeStoreError, match="cannot create the Zarr store at"):
            create_store(location)
        with pytest.raises(UnsafeStoreError):
            store_exists(location)
    (tmp_path / "sub").mkdir(exist_ok=True)
    with pytest.raises(UnsafeStoreError, match="an existing file, not a folder"):
        create_store(tmp_path / "input.fits")
    with pytest.raises(UnsafeStoreError, match=r"is not empty \(1 entries: x\.fits\)"):
        (tmp_path / "folder").mkdir()
        (tmp_path / "folder" / "x.fits").write_bytes(b"x")
        create_store(tmp_path / "folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "input.fits", "sub"]

    # an empty folder, and one holding only an empty Zarr group, become stores
    assert not store_exists(tmp_path / "sub")
    create_store(tmp_path / "sub")
    assert store_exists(tmp_path / "sub")
    zarr.open_group(tmp_path / "empty-group.zarr", mode="w")
    create_store(tmp_path / "empty-group.zarr")
    assert list_datasets(tmp_path / "empty-group.zarr") == {}
    assert not store_exists(tmp_path / "new.zarr")
    assert store_exists(zarr.storage.MemoryStore()) is False


def test_create_store_refuses_a_foreign_group_on_any_store(store_location):
    loc = store_location
    loc.open_zarr_group(mode="w").create_array("image", shape=(3,), dtype="f8")
    with pytest.raises(UnsafeStoreError, match="non-empty Zarr group that is not a lenspipe"):
        create_store(loc.location, **_kw(loc))
    if loc.kind == "local":  # the folder checks refuse it before anything is opened
        with pytest.raises(UnsafeStoreError, match="not a lenspipe store"):
            store_exists(loc.location, **_kw(loc))
    else:  # something is there: open_store says what
        assert store_exists(loc.location, **_kw(loc))
        with pytest.raises(StoreError, match="not a lenspipe store"):
            open_store(loc.location, **_kw(loc))
    assert "lenspipe" not in loc.open_zarr_group(mode="r").attrs


def test_future_schema_is_a_store_version_error(quick_location, imaging):
    loc = quick_location
    _complete(loc, imaging)
    loc.open_zarr_group().attrs["lenspipe"] = {"schema_version": 2}
    with pytest.raises(StoreVersionError, match="upgrade lenspipe"):
        open_imaging(loc.location, "lens", **_kw(loc))


def test_store_overlaps(tmp_path):
    inputs = tmp_path / "inputs"
    (inputs / "lens_1").mkdir(parents=True)
    fits = inputs / "lens_1" / "data.fits"
    fits.write_bytes(b"x")
    link = tmp_path / "link"
    link.symlink_to(inputs, target_is_directory=True)
    elsewhere = tmp_path / "elsewhere.fits"
    elsewhere.write_bytes(b"y")
    assert store_overlaps(tmp_path / "survey.zarr", [inputs, fits, elsewhere]) is None
    assert store_overlaps(inputs / "survey.zarr", [elsewhere, inputs]) == str(inputs)
    # beside an input file: neither holds the other; inside its folder (through a symlink): yes
    assert store_overlaps(link / "lens_1" / "s.zarr", [fits]) is None
    assert store_overlaps(link / "lens_1" / "s.zarr", [fits, inputs]) == str(inputs)
    assert store_overlaps(inputs, [fits]) == str(fits)  # the store holds an input
    assert store_overlaps(inputs / "lens_1", [str(inputs)]) == str(inputs)
    assert store_overlaps(str(tmp_path / "inputs"), [link]) == str(link)
    assert store_overlaps(tmp_path / "inputs2", [inputs]) is None  # a prefix, not a parent
    assert store_overlaps("s3://bucket/survey.zarr", [inputs]) is None
    assert store_overlaps(zarr.storage.MemoryStore(), [inputs]) is None


# ------------------------------------------------------------------------------ names (issue 11)
@pytest.mark.parametrize(
    "name",
    ["zarr.json", "ZARR.JSON", "c", "C", "runs", "Datasets", "lenspipe.lock", "lens\n", "a\tb",
     "lens\x00", "lens\r", "é", "lens/../x"],
)  # fmt: skip
def test_reserved_and_control_names_are_refused(name):
    with pytest.raises(StoreError, match="not a safe store key"):
        validate_dataset_name(name)


def test_reserved_names_are_refused_before_anything_is_written(quick_location, other_imaging):
    loc = quick_location
    root = create_store(loc.location, **_kw(loc))
    before = _keys(loc, "")
    for name in sorted(RESERVED_NAMES):
        for call in (
            lambda name=name: prepare_dataset(root, name, other_imaging),
            lambda name=name: write_dataset_arrays(root, name, other_imaging, recreate=True),
            lambda name=name: mark_failed(root, name, "x"),
        ):
            with pytest.raises(StoreError, match=f"dataset name '{name}' is not a safe store key"):
                call()
    assert _keys(loc, "") == before


# ------------------------------------------------------------------------------ sources (issue 11)
def test_source_records_size_and_mtime(tmp_path):
    path = tmp_path / "data.fits"
    path.write_bytes(b"0123456789")
    os.utime(path, ns=(1_700_000_000_000_000_000, 1_700_000_000_123_456_789))
    source = Source.from_file("data", path)
    assert (source.size, source.mtime_ns) == (10, 1_700_000_000_123_456_789)
    assert source.sha256 == hashlib.sha256(b"0123456789").hexdigest() == file_sha256(path)
    assert source_changed(source) is None
    assert source_changed(asdict(source)) is None  # as recorded in the attributes

    os.utime(path, ns=(1, 2))  # touched, same bytes: the sha256 decides
    assert source_changed(source) is None
    path.write_bytes(b"0123456780")  # same size, other bytes
    assert source_changed(source) == "sha256 differs"
    path.write_bytes(b"01234567890")
    assert source_changed(source) == "size 10 -> 11"
    path.unlink()
    assert source_changed(source) == "missing"
    assert source_changed(Source("data", str(path), 0, None)) == "missing"
    # an old record (sha256 only): compared by hash
    path.write_bytes(b"0123456789")
    old = {"role": "data", "path": str(path), "hdu": 0, "sha256": source.sha256}
    assert source_changed(old) is None


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder", "missing"])
def test_non_regular_inputs_are_refused_without_opening(tmp_path, kind):
    """A FIFO or /dev/zero would block a hash forever (PITFALLS): refused from ``stat``."""
    path = {
        "fifo": tmp_path / "data.fits",
        "dev-zero": Path("/dev/zero"),
        "folder": tmp_path,
        "missing": tmp_path / "absent.fits",
    }[kind]
    if kind == "fifo":
        os.mkfifo(path)
    why = {
        "fifo": "is a FIFO (named pipe), not a regular file",
        "dev-zero": "is a character device, not a regular file",
        "folder": "is a folder, not a regular file",
        "missing": ": file not found",
    }[kind]
    for call in (lambda: Source.from_file("data", path), lambda: file_sha256(path)):
        with pytest.raises(InputFileError, match=re.escape(why)) as info:
            call()
        assert isinstance(info.value, PipelineError) and isinstance(info.value, OSError)
        assert repr(str(path)) in str(info.value)
    recorded = Source("data", str(path), 0, "0" * 64, 10, 1)
    expected = "missing" if kind == "missing" else why.removeprefix("is ")
    assert source_changed(recorded) == expected


def test_exception_messages_print_plainly():
    for cls in (DatasetNotFoundError, DamagedDatasetError, UnsafeStoreError, InputFileError):
        err = cls("dataset 'x': what is wrong; the fix")
        assert str(err) == "dataset 'x': what is wrong; the fix"
        assert isinstance(err, PipelineError) and isinstance(err, OSError)
    assert isinstance(DatasetNotFoundError("x"), KeyError)
    assert json.dumps(str(StoreVersionError("v"))) == '"v"'
