"""Reading datasets back (pipeline/io/store/readers.py): round trips bit for bit on every store, the
lazy operator, read errors that name dataset, node and repair.

Cases run on a local directory, a ``zarr.storage.MemoryStore`` and S3 (moto server), see
``conftest.py``; damage cases on the first two, done through the store API (raw keys)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import zarr
import zarr.codecs
import zarr.storage

from pipeline.exc import (
    DamagedDatasetError,
    DatasetNotCompleteError,
    DatasetNotFoundError,
    StoreError,
)
from pipeline.io.store import (
    OperatorStorage,
    batches_done,
    create_store,
    damaged_batches,
    dataset_attrs,
    dataset_problems,
    dataset_status,
    list_datasets,
    mark_failed,
    open_imaging,
    open_operator,
    prepare_dataset,
    scan_datasets,
    verify_dataset,
    write_imaging,
)
from tests.io.store.support import (
    BATCH,
    ORIGIN,
    SCALES,
    SHAPE,
    kw,
    raw_delete,
    raw_put,
    write_complete,
)


@pytest.mark.parametrize("codec", ["lz4", "zstd", "none"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_round_trip(store_location, imaging, dtype, codec):
    loc = store_location
    storage = OperatorStorage(dtype=dtype, codec=codec, level=3)
    write_imaging(
        loc.location, "lens_0001", imaging, batch_size=BATCH, operator_storage=storage, **kw(loc)
    )
    back = open_imaging(loc.location, "lens_0001", **kw(loc))

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

    attrs = dataset_attrs(loc.location, "lens_0001", **kw(loc))
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
        **kw(loc),
        operator_storage=OperatorStorage(dtype=dtype, keep_bits=12),
    )
    stored = open_operator(loc.location, "lens", **kw(loc)).values
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


def test_open_operator_reads_values_lazily(store_location, imaging):
    loc = store_location
    write_imaging(loc.location, "lens", imaging, batch_size=BATCH, **kw(loc))
    op = open_operator(loc.location, "lens", **kw(loc))
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


def test_read_errors_are_store_errors_naming_dataset_node_and_fix(quick_location, imaging):
    loc = quick_location
    write_complete(loc, imaging)
    root = create_store(loc.location, **kw(loc))
    prepare_dataset(root, "half", imaging, batch_size=BATCH)
    for call in (
        lambda: open_imaging(loc.location, "nope", **kw(loc)),
        lambda: dataset_attrs(loc.location, "nope", **kw(loc)),
        lambda: dataset_status(loc.location, "nope", **kw(loc)),
    ):
        with pytest.raises(DatasetNotFoundError) as info:
            call()
        assert str(info.value) == "dataset 'nope' is not in the store"  # no KeyError quotes
    with pytest.raises(DatasetNotCompleteError, match="'half' has status 'prepared'"):
        open_imaging(loc.location, "half", **kw(loc))

    raw_put(loc, "datasets/lens/zarr.json", b'{"zarr_format": 3,')  # torn group document
    for call in (
        lambda: open_imaging(loc.location, "lens", **kw(loc)),
        lambda: dataset_attrs(loc.location, "lens", **kw(loc)),
        lambda: dataset_status(loc.location, "lens", **kw(loc)),
        lambda: verify_dataset(loc.location, "lens", **kw(loc)),
        lambda: batches_done(root, "lens"),
        lambda: damaged_batches(root, "lens"),
    ):
        with pytest.raises(DamagedDatasetError) as info:
            call()
        message = str(info.value)
        assert "dataset 'lens'" in message and "datasets/lens/zarr.json" in message, message
        assert "does not decode" in message and "lenspipe run CONFIG --verify" in message
    # the other datasets are unaffected
    assert dataset_status(loc.location, "half", **kw(loc)) == "prepared"


def test_scan_and_list_report_unreadable_datasets_without_failing(store_location, other_imaging):
    """One unreadable child never hides the others: a torn group document, a group document
    lost under its arrays, an array where a group should be, a foreign object, a failed
    dataset."""
    loc = store_location
    imaging = other_imaging  # no operator: fewer writes (S3)
    for name in ("good", "torn", "headless"):
        write_complete(loc, imaging, name)
    root = create_store(loc.location, **kw(loc))
    mark_failed(root, "failed", "FitsReadError: 'data.fits' truncated")
    loc.open_zarr_group()["datasets"].create_array("an_array", shape=(2,), dtype="f8")
    raw_put(loc, "datasets/torn/zarr.json", b"{")
    raw_delete(loc, "datasets/headless/zarr.json")
    raw_put(loc, "datasets/notes.txt", b"not a dataset")

    found = scan_datasets(loc.location, **kw(loc))
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

    assert list_datasets(loc.location, **kw(loc)) == {
        "an_array": "damaged",
        "failed": "failed",
        "good": "complete",
        "headless": "damaged",
        "notes.txt": "damaged",
        "torn": "damaged",
    }
    problems = dataset_problems(loc.location, **kw(loc))
    assert set(problems) == {"an_array", "failed", "headless", "notes.txt", "torn"}
    assert problems["failed"] == "FitsReadError: 'data.fits' truncated"
    assert problems["torn"] == errors["torn"]
    # the readable dataset still reads
    assert open_imaging(loc.location, "good", **kw(loc)).shape_slim == imaging.shape_slim
