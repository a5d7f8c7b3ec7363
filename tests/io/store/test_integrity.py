"""Integrity (pipeline/io/store/integrity.py, check.py; issue 11): checksums, damage found on every
store, guards that never overwrite what is not a dataset.

Cases run on a local directory, a ``zarr.storage.MemoryStore`` and S3 (moto server), see
``conftest.py``; damage cases on the first two, done through the store API (raw keys)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
import zarr.codecs
import zarr.storage

from pipeline import Array2D, Imaging, Mask2D
from pipeline.exc import (
    DamagedDatasetError,
    DatasetNotFoundError,
    StoreError,
    UnsafeStoreError,
)
from pipeline.io.store import (
    begin_dataset,
    check_dataset,
    create_store,
    dataset_attrs,
    dataset_status,
    list_datasets,
    mark_failed,
    open_imaging,
    open_operator,
    open_store,
    prepare_dataset,
    verify_dataset,
    write_dataset_arrays,
    write_imaging,
)
from pipeline.mock import simulate_lens
from tests.io.store.support import (
    ARRAYS,
    ORIGIN,
    SCALES,
    SHAPE,
    kw,
    raw_delete,
    raw_get,
    raw_keys,
    raw_put,
    write_complete,
)


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
    root = create_store(loc.location, **kw(loc))
    prepare_dataset(root, "lens", plain, batch_size=200)
    group = open_store(loc.location, **kw(loc))["datasets"]["lens"]
    arrays = (*ARRAYS, "noise_covariance_matrix")
    for key in arrays:
        array = group[key]
        codecs = [c.to_dict()["name"] for c in array.metadata.codecs]
        assert codecs[-1] == "crc32c", (key, codecs)
        if key != "sparse_operator/values" and key != "sparse_operator/batches_done":
            assert array.nchunks_initialized == array.nchunks, key
    attrs = dataset_attrs(loc.location, "lens", **kw(loc))
    assert attrs["has_operator"] is True and attrs["has_noise_covariance"] is True
    check = check_dataset(loc.location, "lens", **kw(loc))
    assert check.status == "prepared" and not check.needs_prepare
    assert check.pending_batches == check.damaged_batches == list(range(4))
    assert not check.ok and "4 operator batch(es) not computed yet" in check.message()


def test_check_dataset_of_an_intact_dataset(store_location, imaging, other_imaging):
    loc = store_location
    write_complete(loc, imaging)
    write_imaging(loc.location, "plain", other_imaging, **kw(loc))  # no operator
    for name in ("lens", "plain"):
        check = check_dataset(loc.location, name, **kw(loc))
        assert check.ok and not check.needs_prepare, check
        assert check.status == "complete" and check.message() == f"dataset {name!r}: intact"
        assert (check.missing_nodes, check.damaged_arrays, check.damaged_batches) == ([], {}, [])
    assert dataset_attrs(loc.location, "plain", **kw(loc))["has_operator"] is False
    with pytest.raises(DatasetNotFoundError, match="'nope' is not in the store") as info:
        check_dataset(loc.location, "nope", **kw(loc))
    assert isinstance(info.value, KeyError) and str(info.value).startswith("dataset 'nope'")


@pytest.mark.parametrize("node", ARRAYS)
def test_a_flipped_bit_is_damage_on_every_store(quick_location, imaging, node):
    loc = quick_location
    write_complete(loc, imaging)
    prefix = f"datasets/lens/{node}/c"
    key = raw_keys(loc, prefix)[-1]
    raw = bytearray(raw_get(loc, key))
    raw[len(raw) // 2] ^= 0x10
    raw_put(loc, key, bytes(raw))
    check = check_dataset(loc.location, "lens", **kw(loc))
    if node in ("sparse_operator/values", "sparse_operator/batches_done"):
        batch = int(key[len(prefix) + 1 :].split("/")[0])
        assert check.damaged_batches == [batch] and not check.needs_prepare
        assert "cannot be decoded" in check.batch_reasons[batch]
    else:
        assert list(check.damaged_arrays) == [node] and check.needs_prepare
    with pytest.raises(DamagedDatasetError, match=r"'lens'.*--verify"):
        _ = open_imaging(loc.location, "lens", **kw(loc)).sparse_operator.values


def test_missing_nodes_are_damage(quick_location, imaging):
    """A node the status promises (here the operator group, then the PSF) gone: the dataset is
    damaged, never read as one without it."""
    loc = quick_location
    write_complete(loc, imaging)
    raw_delete(loc, "datasets/lens/sparse_operator/zarr.json")
    check = check_dataset(loc.location, "lens", **kw(loc))
    assert check.missing_nodes == ["sparse_operator"] and check.needs_prepare
    assert "sparse_operator is missing" in check.message()
    with pytest.raises(DamagedDatasetError) as info:
        open_imaging(loc.location, "lens", **kw(loc))
    message = str(info.value)
    assert message == (
        "dataset 'lens': node datasets/lens/sparse_operator is missing, though its status "
        "'complete' promises it; rerun `lenspipe run CONFIG --verify` to repair it"
    )
    with pytest.raises(DamagedDatasetError, match="sparse_operator"):
        open_operator(loc.location, "lens", **kw(loc))

    raw_delete(loc, "datasets/lens/psf/zarr.json")
    check = check_dataset(loc.location, "lens", **kw(loc))
    assert check.missing_nodes == ["psf", "sparse_operator"]
    with pytest.raises(DamagedDatasetError, match=r"nodes datasets/lens/psf, datasets/lens/spa"):
        open_imaging(loc.location, "lens", **kw(loc))


def test_a_lost_chunk_of_a_small_array_is_damage(quick_location, imaging):
    loc = quick_location
    write_complete(loc, imaging)
    raw_delete(loc, "datasets/lens/noise_map/c/0/0")
    check = check_dataset(loc.location, "lens", **kw(loc))
    assert check.damaged_arrays == {"noise_map": "chunk datasets/lens/noise_map/c/0/0 is missing"}
    with pytest.raises(DamagedDatasetError, match=r"noise_map: chunk .*noise_map/c/0/0 is missing"):
        open_imaging(loc.location, "lens", **kw(loc))


def test_torn_array_metadata_and_contradicting_content_are_damage(quick_location, imaging):
    loc = quick_location
    write_complete(loc, imaging)
    pristine = {key: raw_get(loc, key) for key in raw_keys(loc, "datasets/lens/")}

    raw_put(loc, "datasets/lens/grid/zarr.json", b'{"zarr_format": 3, "node_ty')  # torn
    check = check_dataset(loc.location, "lens", **kw(loc))
    assert (
        list(check.damaged_arrays) == ["grid"] and "does not decode" in check.damaged_arrays["grid"]
    )
    with pytest.raises(DamagedDatasetError, match=r"'lens'.*datasets/lens/grid.*cannot be opened"):
        open_imaging(loc.location, "lens", **kw(loc))
    raw_put(loc, "datasets/lens/grid/zarr.json", pristine["datasets/lens/grid/zarr.json"])
    assert check_dataset(loc.location, "lens", **kw(loc)).ok

    # offsets written with a valid checksum but in another order: not this mask's band layout
    group = loc.open_zarr_group()["datasets/lens/sparse_operator/offsets"]
    group[...] = group[...][::-1]
    check = check_dataset(loc.location, "lens", **kw(loc))
    assert check.damaged_arrays == {
        "sparse_operator/offsets": "differ from the band layout of the mask and kernel_shape"
    }
    with pytest.raises(DamagedDatasetError, match="offsets differ"):
        open_imaging(loc.location, "lens", **kw(loc))
    raw_put(
        loc,
        "datasets/lens/sparse_operator/offsets/c/0/0",
        pristine["datasets/lens/sparse_operator/offsets/c/0/0"],
    )

    # attributes that contradict the arrays (a mask with more pixels than n_pixels says)
    loc.open_zarr_group()["datasets/lens"].attrs["n_pixels"] = 7
    check = check_dataset(loc.location, "lens", **kw(loc))
    assert "grid" in check.damaged_arrays and "mask" in check.damaged_arrays
    assert check.damaged_arrays["mask"] == "260 unmasked pixels, n_pixels is 7"


def test_complete_dataset_with_an_unset_marker_is_damaged(quick_location, imaging):
    loc = quick_location
    write_complete(loc, imaging)
    raw_delete(loc, "datasets/lens/sparse_operator/batches_done/c/4")
    check = check_dataset(loc.location, "lens", **kw(loc))
    assert check.damaged_batches == [4] and not check.needs_prepare
    assert "batches_done/c/4 is not set" in check.batch_reasons[4]
    assert verify_dataset(loc.location, "lens", **kw(loc)) == [4]
    with pytest.raises(DamagedDatasetError, match=r"batch\(es\) of a complete dataset have no"):
        open_imaging(loc.location, "lens", **kw(loc))


def test_failed_and_unprepared_datasets_need_prepare(quick_location, imaging):
    loc = quick_location
    root = create_store(loc.location, **kw(loc))
    mark_failed(root, "bad", "FitsReadError: truncated")
    begin_dataset(root, "begun")
    for name, status in (("bad", "failed"), ("begun", None)):
        check = check_dataset(root, name)
        assert check.status == status and check.needs_prepare and not check.ok


def test_old_stores_without_checksums_still_open(quick_location, imaging):
    """A store written before every array had a checksum (only the operator values had one):
    arrays rewritten with the old codecs, attributes without ``has_operator``."""
    loc = quick_location
    write_complete(loc, imaging)
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
    back = open_imaging(loc.location, "lens", **kw(loc))
    np.testing.assert_array_equal(back.data.native, imaging.data.native)
    np.testing.assert_array_equal(back.sparse_operator.values, imaging.sparse_operator.values)
    assert check_dataset(loc.location, "lens", **kw(loc)).ok
    # without has_operator, a missing operator group cannot be told from none: read without
    raw_delete(loc, "datasets/lens/sparse_operator/zarr.json")
    assert open_imaging(loc.location, "lens", **kw(loc)).sparse_operator is None


def test_recreate_never_overwrites_what_is_not_a_dataset_group(quick_location, other_imaging):
    loc = quick_location
    root = create_store(loc.location, **kw(loc))
    datasets = loc.open_zarr_group()["datasets"]
    datasets.create_array("an_array", data=np.arange(4.0), chunks=(4,))
    raw_put(loc, "datasets/a_file", b"precious bytes")
    raw_put(loc, "datasets/mixed/notes.txt", b"precious notes")
    raw_put(loc, "datasets/mixed/data/zarr.json", b"{}")
    raw_put(loc, "datasets/mixed/data/zarr.0123456789abcdef0123456789abcdef.partial", b"{")
    before = {key: raw_get(loc, key) for key in raw_keys(loc, "datasets/")}
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
    assert {key: raw_get(loc, key) for key in raw_keys(loc, "datasets/")} == before
    np.testing.assert_array_equal(datasets["an_array"][...], np.arange(4.0))


def test_recreate_and_mark_failed_repair_a_torn_dataset(quick_location, imaging, other_imaging):
    """A torn dataset (its group document torn or lost, only dataset keys below it) is ours:
    recreated by a prepare, or recorded failed."""
    loc = quick_location
    write_complete(loc, imaging, "torn")
    write_complete(loc, imaging, "headless")
    raw_put(loc, "datasets/torn/zarr.json", b"{")
    raw_delete(loc, "datasets/headless/zarr.json")
    root = open_store(loc.location, "r+", **kw(loc))
    write_dataset_arrays(root, "torn", other_imaging, recreate=True)
    assert dataset_status(loc.location, "torn", **kw(loc)) == "preparing"
    assert not any("sparse_operator" in key for key in raw_keys(loc, "datasets/torn/"))
    mark_failed(root, "headless", "DamagedDatasetError: lost")
    # a prepare killed while Zarr wrote a key (its temporary file left beside it) is torn too
    write_complete(loc, imaging, "killed")
    raw_delete(loc, "datasets/killed/zarr.json")
    uid = "0123456789abcdef0123456789abcdef"
    leftovers = [f"zarr.{uid}.partial", f"mask/zarr.{uid}.partial", f"data/c/0/1.{uid}.partial"]
    leftovers += [f"sparse_operator/batches_done/c/3.{uid}.partial"]
    for key in leftovers:
        raw_put(loc, f"datasets/killed/{key}", b"half")
    write_dataset_arrays(root, "killed", other_imaging, recreate=True)
    assert not any(key.endswith(".partial") for key in raw_keys(loc, "datasets/killed/"))
    assert dataset_status(loc.location, "killed", **kw(loc)) == "preparing"
    assert dataset_attrs(loc.location, "headless", **kw(loc))["error"] == (
        "DamagedDatasetError: lost"
    )
    assert list_datasets(loc.location, **kw(loc)) == {
        "headless": "failed",
        "killed": "preparing",
        "torn": "preparing",
    }
    # a complete dataset recorded failed keeps its other attributes
    write_complete(loc, imaging, "good")
    mark_failed(root, "good", "changed inputs")
    attrs = dataset_attrs(loc.location, "good", **kw(loc))
    assert attrs["status"] == "failed" and attrs["n_pixels"] == imaging.shape_slim


def test_mark_failed_reports_an_unwritable_store(tmp_path, other_imaging):
    store = tmp_path / "survey.zarr"
    root = create_store(store)
    prepare_dataset(root, "lens", other_imaging)
    read_only = open_store(store, "r")
    with pytest.raises(StoreError, match=r"dataset 'lens': its failure could not be recorded"):
        mark_failed(read_only, "lens", "boom")
    assert dataset_status(store, "lens") == "prepared"
