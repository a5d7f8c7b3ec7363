"""Each case a caller must tell apart raises its own :class:`StoreError` subclass, at its site,
with the message it always had; ``except StoreError`` still catches every one."""

from __future__ import annotations

import pytest
import zarr

from pipeline.exc import (
    DatasetExistsError,
    DatasetNotFoundError,
    InvalidDatasetNameError,
    NotAStoreError,
    StoreError,
    StoreLockedError,
    StoreNotFoundError,
    StoreVersionError,
    UnsafeStoreError,
)
from pipeline.io.store import (
    acquire_run_lock,
    begin_dataset,
    create_store,
    dataset_attrs,
    open_store,
    store_exists,
    validate_dataset_name,
)


def test_every_store_error_is_a_store_error_and_its_builtin():
    for cls in (
        StoreNotFoundError,
        NotAStoreError,
        StoreVersionError,
        StoreLockedError,
        InvalidDatasetNameError,
        DatasetExistsError,
        DatasetNotFoundError,
        UnsafeStoreError,
    ):
        assert issubclass(cls, StoreError) and issubclass(cls, OSError)
    assert issubclass(StoreNotFoundError, FileNotFoundError)
    assert issubclass(InvalidDatasetNameError, ValueError)
    assert str(StoreNotFoundError("no Zarr store at 'x'")) == "no Zarr store at 'x'"


def test_no_store_at_the_location(tmp_path):
    with pytest.raises(StoreNotFoundError, match="no Zarr store at"):
        open_store(tmp_path / "nothing.zarr")
    assert not store_exists(tmp_path / "nothing.zarr")


def test_a_zarr_group_that_is_not_a_store(tmp_path):
    zarr.open_group(tmp_path / "plain.zarr", mode="w").attrs["other"] = 1
    with pytest.raises(NotAStoreError, match="is a Zarr group but not a lenspipe store"):
        open_store(tmp_path / "plain.zarr")


def test_a_future_schema(tmp_path):
    root = create_store(tmp_path / "s.zarr")
    root.attrs["lenspipe"] = {**root.attrs["lenspipe"], "schema_version": 99}
    with pytest.raises(StoreVersionError, match="upgrade lenspipe"):
        open_store(tmp_path / "s.zarr")


def test_a_locked_store(tmp_path):
    root = create_store(tmp_path / "s.zarr")
    lock = acquire_run_lock(root, "first", settle=0.0)
    try:
        with pytest.raises(StoreLockedError, match="the store is in use by run first"):
            acquire_run_lock(root, "second", settle=0.0)
    finally:
        lock.release()


def test_an_unsafe_location(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UnsafeStoreError, match="is not a lenspipe store"):
        create_store(tmp_path)


def test_names_existing_and_missing_datasets(tmp_path):
    with pytest.raises(InvalidDatasetNameError, match="is not a safe store key"):
        validate_dataset_name("../up")
    root = create_store(tmp_path / "s.zarr")
    begin_dataset(root, "lens")
    with pytest.raises(DatasetExistsError, match="already exists in the store"):
        begin_dataset(root, "lens")
    with pytest.raises(DatasetNotFoundError, match="is not in the store"):
        dataset_attrs(tmp_path / "s.zarr", "other")


def test_a_torn_root_document_is_a_plain_store_error(tmp_path):
    create_store(tmp_path / "s.zarr")
    (tmp_path / "s.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(StoreError, match="cannot open the Zarr store") as caught:
        open_store(tmp_path / "s.zarr")
    assert not isinstance(caught.value, StoreNotFoundError | NotAStoreError)


def test_the_padding_warning_is_a_lenspipe_warning():
    from pipeline.exc import LenspipeWarning, MaskPaddedWarning
    from pipeline.imaging import Mask2D

    assert issubclass(MaskPaddedWarning, LenspipeWarning) and issubclass(
        LenspipeWarning, UserWarning
    )
    mask = Mask2D.all_false((5, 5), 0.1)
    with pytest.warns(MaskPaddedWarning, match="Mask padded from"):
        mask.blurring_mask_from((3, 3), allow_padding=True)
