"""Store locations (pipeline/io/store/location.py): schema checks, refusals and adoptions, overlaps
with inputs.

Cases run on a local directory, a ``zarr.storage.MemoryStore`` and S3 (moto server), see
``conftest.py``; damage cases on the first two, done through the store API (raw keys)."""

from __future__ import annotations

from pathlib import Path

import pytest
import zarr
import zarr.codecs
import zarr.storage

from pipeline.exc import (
    StoreError,
    StoreVersionError,
    UnsafeStoreError,
)
from pipeline.io.store import (
    SCHEMA_VERSION,
    create_store,
    list_datasets,
    open_imaging,
    open_store,
    store_exists,
    store_overlaps,
    write_imaging,
)
from tests.io.store.support import (
    BATCH,
    kw,
    write_complete,
)


def test_future_schema_version_is_refused(store_location, imaging):
    loc = store_location
    write_imaging(loc.location, "lens", imaging, batch_size=BATCH, **kw(loc))
    root = open_store(loc.location, **kw(loc))
    assert root.attrs["lenspipe"]["schema_version"] == SCHEMA_VERSION == 1
    loc.open_zarr_group().attrs["lenspipe"] = {"schema_version": 99}
    for call in (
        lambda: open_store(loc.location, **kw(loc)),
        lambda: open_store(loc.location, "r+", **kw(loc)),
        lambda: list_datasets(loc.location, **kw(loc)),
        lambda: open_imaging(loc.location, "lens", **kw(loc)),
        lambda: create_store(loc.location, **kw(loc)),
    ):
        with pytest.raises(StoreError, match=r"schema_version 99.*versions <= 1: upgrade"):
            call()


def test_plain_zarr_group_is_refused(store_location):
    loc = store_location
    group = loc.open_zarr_group(mode="w")
    group.create_array("image", shape=(3,), dtype="f8")
    for call in (
        lambda: open_store(loc.location, **kw(loc)),
        lambda: list_datasets(loc.location, **kw(loc)),
    ):
        with pytest.raises(StoreError, match="a Zarr group but not a lenspipe store"):
            call()
    with pytest.raises(StoreError, match="non-empty Zarr group that is not a lenspipe store"):
        create_store(loc.location, **kw(loc))
    assert "lenspipe" not in loc.open_zarr_group(mode="r").attrs


def test_missing_store_is_refused(store_location):
    loc = store_location
    with pytest.raises(StoreError, match="no Zarr store at"):
        open_store(loc.location, **kw(loc))
    with pytest.raises(StoreError, match="no Zarr store at"):
        list_datasets(loc.location, **kw(loc))


def test_create_store_is_reentrant(store_location, imaging):
    loc = store_location
    write_imaging(loc.location, "lens", imaging, batch_size=BATCH, **kw(loc))
    created = dict(open_store(loc.location, **kw(loc)).attrs["lenspipe"])
    root = create_store(loc.location, **kw(loc))
    assert dict(root.attrs["lenspipe"]) == created
    assert list_datasets(loc.location, **kw(loc)) == {"lens": "complete"}


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
        create_store(loc.location, **kw(loc))
    if loc.kind == "local":  # the folder checks refuse it before anything is opened
        with pytest.raises(UnsafeStoreError, match="not a lenspipe store"):
            store_exists(loc.location, **kw(loc))
    else:  # something is there: open_store says what
        assert store_exists(loc.location, **kw(loc))
        with pytest.raises(StoreError, match="not a lenspipe store"):
            open_store(loc.location, **kw(loc))
    assert "lenspipe" not in loc.open_zarr_group(mode="r").attrs


def test_future_schema_is_a_store_version_error(quick_location, imaging):
    loc = quick_location
    write_complete(loc, imaging)
    loc.open_zarr_group().attrs["lenspipe"] = {"schema_version": 2}
    with pytest.raises(StoreVersionError, match="upgrade lenspipe"):
        open_imaging(loc.location, "lens", **kw(loc))


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
