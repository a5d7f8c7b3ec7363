"""Names and values of the schema (pipeline/io/store/schema.py): dataset names, settings hash, error
messages.

Cases run on a local directory, a ``zarr.storage.MemoryStore`` and S3 (moto server), see
``conftest.py``; damage cases on the first two, done through the store API (raw keys)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.exc import (
    DamagedDatasetError,
    DatasetNotFoundError,
    InputFileError,
    PipelineError,
    StoreError,
    StoreVersionError,
    UnsafeStoreError,
)
from pipeline.io.store import (
    RESERVED_NAMES,
    create_store,
    list_datasets,
    mark_failed,
    open_imaging,
    prepare_dataset,
    settings_hash,
    validate_dataset_name,
    write_dataset_arrays,
)
from tests.io.store.support import (
    kw,
    raw_keys,
)


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
    root = create_store(loc.location, **kw(loc))
    for name in ("a/b", "../x", ".."):
        with pytest.raises(StoreError, match="not a safe store key"):
            prepare_dataset(root, name, other_imaging)
        with pytest.raises(StoreError, match="not a safe store key"):
            mark_failed(root, name, "boom")
        with pytest.raises(StoreError, match="not a safe store key"):
            open_imaging(loc.location, name, allow_incomplete=True, **kw(loc))
    assert list_datasets(loc.location, **kw(loc)) == {}


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
    root = create_store(loc.location, **kw(loc))
    before = raw_keys(loc, "")
    for name in sorted(RESERVED_NAMES):
        for call in (
            lambda name=name: prepare_dataset(root, name, other_imaging),
            lambda name=name: write_dataset_arrays(root, name, other_imaging, recreate=True),
            lambda name=name: mark_failed(root, name, "x"),
        ):
            with pytest.raises(StoreError, match=f"dataset name '{name}' is not a safe store key"):
                call()
    assert raw_keys(loc, "") == before


def test_exception_messages_print_plainly():
    for cls in (DatasetNotFoundError, DamagedDatasetError, UnsafeStoreError, InputFileError):
        err = cls("dataset 'x': what is wrong; the fix")
        assert str(err) == "dataset 'x': what is wrong; the fix"
        assert isinstance(err, PipelineError) and isinstance(err, OSError)
    assert isinstance(DatasetNotFoundError("x"), KeyError)
    assert json.dumps(str(StoreVersionError("v"))) == '"v"'


def test_statuses_are_the_stored_strings(tmp_path, other_imaging):
    from pipeline.io.store import DatasetStatus, write_imaging

    assert [s.value for s in DatasetStatus] == [
        "prepared",
        "complete",
        "failed",
        "preparing",
        "damaged",
    ]
    for status in DatasetStatus:
        assert status == status.value and f"{status}" == status.value
        assert json.loads(json.dumps({"status": status})) == {"status": status.value}
        assert DatasetStatus(status.value) is status
    write_imaging(tmp_path / "s.zarr", "done", other_imaging)
    mark_failed(create_store(tmp_path / "s.zarr"), "bad", "it broke")
    raw = json.loads((tmp_path / "s.zarr" / "datasets" / "done" / "zarr.json").read_text())
    assert raw["attributes"]["status"] == "complete"
    statuses = list_datasets(tmp_path / "s.zarr")
    assert statuses == {"bad": DatasetStatus.FAILED, "done": DatasetStatus.COMPLETE}
    assert all(type(s) is str for s in statuses.values())
