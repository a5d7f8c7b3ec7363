"""A store never destroys what is not its own (issue 11, scope 1), at the store API: locations
that are the current folder, an input folder, a foreign Zarr group or a file are refused before
anything is written; a dataset path holding anything but a lenspipe dataset group is never
overwritten or deleted; names colliding with Zarr's or lenspipe's own files, or carrying control
characters, are refused. Every byte of every file nearby is hashed before and after.

(The same cases through ``lenspipe run``: tests/reliability/test_inputs_untouched.py.)"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.exc import StoreError, UnsafeStoreError
from pipeline.io.store import (
    begin_dataset,
    create_store,
    list_datasets,
    mark_failed,
    open_imaging,
    prepare_dataset,
    store_exists,
    store_overlaps,
    validate_dataset_name,
    write_dataset_arrays,
    write_imaging,
)
from pipeline.mock import simulate_lens, simulate_survey


def snapshot(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` (every byte), and ``"dir"``
    for every folder: equal snapshots mean nothing was added, removed or changed."""
    out = {}
    for path in sorted(folder.rglob("*")):
        key = path.relative_to(folder).as_posix()
        out[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def project(tmp_path) -> Path:
    """The natural layout: a project folder with a ``datasets/`` folder of lens folders (real
    FITS files, a manifest, a config), plus a notes file."""
    simulate_survey(tmp_path / "datasets", 2, seed=3, shape_range=(30, 34), psf_shapes=(5,))
    (tmp_path / "notes.txt").write_text("observing log")
    return tmp_path


@pytest.fixture
def small():
    """A small simulated lens (no operator)."""
    return simulate_lens((20, 20), 0.1, psf_shape=(3, 3), seed=2)


@pytest.mark.parametrize("location", ["", ".", "./", "CWD", "datasets/.."])
def test_the_current_folder_is_never_a_store(project, monkeypatch, location):
    monkeypatch.chdir(project)
    if location == "CWD":
        location = str(project)
    before = snapshot(project)
    assert sum(1 for key in before if key.endswith(".fits")) == 6
    with pytest.raises(UnsafeStoreError, match="cannot create the Zarr store at") as info:
        create_store(location)
    message = str(info.value)
    assert "current folder" in message or "an empty location" in message
    assert "e.g. 'survey.zarr'" in message
    with pytest.raises(UnsafeStoreError):
        store_exists(location)
    assert snapshot(project) == before
    # and the inputs overlap it: what the driver checks before anything else
    assert store_overlaps(location, [project / "datasets"]) == str(project / "datasets")


def test_an_input_folder_is_never_a_store(project, small):
    before = snapshot(project)
    for folder in (project / "datasets", next((project / "datasets").glob("lens_*"))):
        with pytest.raises(UnsafeStoreError, match=r"is not empty \(\d+ entries: .*not a lenspipe"):
            create_store(folder)
        with pytest.raises(UnsafeStoreError):
            write_imaging(folder, "lens", small)
    assert snapshot(project) == before
    # a store beside the inputs is fine, inside them is not
    assert store_overlaps(project / "survey.zarr", [project / "datasets"]) is None
    inside = project / "datasets" / "survey.zarr"
    assert store_overlaps(inside, [project / "datasets"]) == str(project / "datasets")


def test_a_foreign_zarr_node_or_a_file_is_never_a_store(tmp_path, small):
    group = tmp_path / "other.zarr"
    zarr.open_group(group, mode="w").create_array("image", data=np.arange(6.0), chunks=(3,))
    (group / "README.fits").write_bytes(b"SIMPLE  =                    T")
    array = tmp_path / "array.zarr"
    zarr.create_array(array, data=np.arange(4), chunks=(4,))
    plain = tmp_path / "survey.fits"
    plain.write_bytes(b"SIMPLE  =                    T")
    before = snapshot(tmp_path)
    for location, why in (
        (group, "non-empty Zarr group that is not a lenspipe store"),
        (array, "non-empty Zarr array that is not a lenspipe store"),
        (plain, "an existing file, not a folder"),
    ):
        with pytest.raises(UnsafeStoreError, match=why):
            create_store(location)
        with pytest.raises(UnsafeStoreError, match=why):
            write_imaging(location, "x", small)
    assert snapshot(tmp_path) == before
    np.testing.assert_array_equal(zarr.open_array(group / "image")[...], np.arange(6.0))


def test_a_dataset_path_holding_anything_else_is_never_overwritten(tmp_path, small):
    """Inside a lenspipe store's ``datasets/``: a non-Zarr file, a folder of FITS files, a
    Zarr array under a dataset's name survive every write that would replace a dataset."""
    store = tmp_path / "survey.zarr"
    write_imaging(store, "kept", small)
    datasets = store / "datasets"
    (datasets / "a_file").write_bytes(b"precious")
    (datasets / "a_folder").mkdir()
    (datasets / "a_folder" / "data.fits").write_bytes(b"SIMPLE  =                    T")
    zarr.open_group(store, mode="r+")["datasets"].create_array("an_array", data=np.ones(3))
    before = snapshot(tmp_path)
    root = create_store(store)
    for name in ("a_file", "a_folder", "an_array"):
        for call in (
            lambda name=name: write_dataset_arrays(root, name, small, recreate=True),
            lambda name=name: begin_dataset(root, name, overwrite=True),
            lambda name=name: prepare_dataset(root, name, small, overwrite=True),
            lambda name=name: mark_failed(root, name, "an error to record"),
        ):
            with pytest.raises(UnsafeStoreError, match=rf"dataset '{name}': .*own dataset groups"):
                call()
    assert snapshot(tmp_path) == before
    statuses = list_datasets(store)
    assert statuses == {
        "a_file": "damaged",
        "a_folder": "damaged",
        "an_array": "damaged",
        "kept": "complete",
    }
    assert open_imaging(store, "kept").shape_native == (20, 20)


@pytest.mark.parametrize(
    "name",
    ["zarr.json", "Zarr.Json", "c", "runs", "datasets", "lenspipe.lock", "LENSPIPE.LOCK",
     "lens\n", "lens\r\n", "lens\t1", "lens\x00", "lens\x1b[31m", "..", "a/../../x"],
)  # fmt: skip
def test_reserved_and_control_character_names_are_refused(tmp_path, small, name):
    store = tmp_path / "survey.zarr"
    root = create_store(store)
    before = snapshot(tmp_path)
    with pytest.raises(StoreError, match="not a safe store key"):
        validate_dataset_name(name)
    for call in (
        lambda: prepare_dataset(root, name, small),
        lambda: write_dataset_arrays(root, name, small, recreate=True),
        lambda: mark_failed(root, name, "x"),
        lambda: write_imaging(store, name, small),
    ):
        with pytest.raises(StoreError, match="not a safe store key"):
            call()
    assert snapshot(tmp_path) == before
    assert os.listdir(store / "datasets") == ["zarr.json"]
