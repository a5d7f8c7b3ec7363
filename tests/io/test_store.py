"""Store conformance suite (DESIGN §5): every case runs on a local directory, a
``zarr.storage.MemoryStore`` and S3 (moto server), see ``conftest.py``."""

from __future__ import annotations

import hashlib
from dataclasses import asdict

import numpy as np
import pytest
import scipy.sparse as sp
import zarr
import zarr.codecs
import zarr.storage

from pipeline import Array2D, Imaging, Mask2D
from pipeline.exc import StoreError
from pipeline.imaging.simulator import simulate_lens
from pipeline.io.store import (
    SCHEMA_VERSION,
    OperatorStorage,
    Source,
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
    settings_hash,
    validate_dataset_name,
    write_dataset_arrays,
    write_imaging,
    write_operator_batch,
)

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
    small = [zarr.codecs.ZstdCodec(level=1)]
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
        "offsets", data=op["offsets"][...], chunks=(n_off, 2), fill_value=0, compressors=None
    )
    assert op["offsets"].metadata.to_dict() == offsets.metadata.to_dict()
    markers = reference.create_array(
        "batches_done",
        shape=(-(-n // BATCH),),
        dtype=np.uint8,
        chunks=(1,),
        fill_value=0,
        compressors=None,
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
        },
        {
            "role": "psf",
            "path": str(files["psf"]),
            "hdu": 0,
            "sha256": hashlib.sha256(b"SIMPLE  = T psf").hexdigest(),
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
