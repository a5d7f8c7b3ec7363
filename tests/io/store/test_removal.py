"""Removing datasets (pipeline/io/store/removal.py): under the run lock, every name checked
before anything goes, and nothing but the removed datasets' own keys touched, on a local
directory, an in-memory store and (once) S3 on a moto server.

"Nothing else touched" is checked byte for byte on the raw keys, read with plain Zarr."""

from __future__ import annotations

import json
import time

import pytest

from pipeline.exc import (
    DatasetNotFoundError,
    InvalidDatasetNameError,
    StoreError,
    StoreLockedError,
    UnsafeStoreError,
)
from pipeline.io.store import (
    LOCK_NAME,
    acquire_run_lock,
    create_store,
    dataset_records,
    list_datasets,
    mark_failed,
    open_imaging,
    record_run_summary,
    remove_datasets,
    select_datasets,
)
from tests.io.store.support import kw, prepare, raw_get, raw_keys, raw_put, write_complete


def snapshot(loc, skip: tuple[str, ...] = ()) -> dict[str, bytes | None]:
    """Every key of the store and its bytes, but those under the ``skip`` dataset groups."""
    prefixes = tuple(f"datasets/{name}/" for name in skip)
    return {key: raw_get(loc, key) for key in raw_keys(loc, "") if not key.startswith(prefixes)}


@pytest.fixture
def survey(quick_location, imaging, other_imaging):
    """Two complete datasets (``a_keep`` with an operator, ``d_other`` without), one prepared
    (``b_half``), one failed after it was prepared (``c_bad``), one failed at discovery
    (``e_bad``, a bare group), and a run record naming the failures."""
    loc = quick_location
    write_complete(loc, imaging, "a_keep")
    write_complete(loc, other_imaging, "d_other")
    root = prepare(loc, "b_half", imaging)
    prepare(loc, "c_bad", other_imaging)
    mark_failed(root, "c_bad", "dataset 'c_bad': noise_map has zeros", error_type="DatasetError")
    mark_failed(root, "e_bad", "dataset 'e_bad': data.fits is truncated")
    record_run_summary(root, "r1", {"run_id": "r1", "failures": [{"name": "c_bad"}]})
    return loc


def test_removing_one_dataset_touches_nothing_else(survey, imaging):
    loc = survey
    before = snapshot(loc, skip=("b_half",))
    assert sum(key.startswith("datasets/a_keep/") for key in before) > 10
    assert remove_datasets(loc.location, ["b_half"], **kw(loc)) == {"b_half": "prepared"}
    assert snapshot(loc) == before  # the others' arrays, the runs, the root: byte for byte
    assert raw_keys(loc, "datasets/b_half") == []
    assert list_datasets(loc.location, **kw(loc)) == {
        "a_keep": "complete",
        "c_bad": "failed",
        "d_other": "complete",
        "e_bad": "failed",
    }
    assert "b_half" not in dataset_records(loc.location, **kw(loc))
    with pytest.raises(DatasetNotFoundError, match="'b_half'"):
        open_imaging(loc.location, "b_half", allow_incomplete=True, **kw(loc))
    kept = open_imaging(loc.location, "a_keep", **kw(loc))
    assert (kept.sparse_operator.to_dense() == imaging.sparse_operator.to_dense()).all()
    # the lock was released: a run (or another removal) can take it at once
    assert raw_get(loc, LOCK_NAME) is None
    acquire_run_lock(create_store(loc.location, **kw(loc)), "next", settle=0).release()


def test_failed_selects_every_failed_dataset(survey):
    loc = survey
    assert select_datasets(loc.location, failed=True, **kw(loc)) == {
        "c_bad": "failed",
        "e_bad": "failed",
    }
    assert select_datasets(loc.location, ["a_keep"], failed=True, **kw(loc)) == {
        "a_keep": "complete",
        "c_bad": "failed",
        "e_bad": "failed",
    }
    before = snapshot(loc, skip=("c_bad", "e_bad"))
    removed = remove_datasets(loc.location, failed=True, **kw(loc))
    assert removed == {"c_bad": "failed", "e_bad": "failed"}
    assert snapshot(loc) == before
    assert list_datasets(loc.location, **kw(loc)) == {
        "a_keep": "complete",
        "b_half": "prepared",
        "d_other": "complete",
    }
    # nothing failed any more: an empty selection removes nothing
    assert remove_datasets(loc.location, failed=True, **kw(loc)) == {}
    assert snapshot(loc) == before


def test_an_unknown_name_removes_nothing_and_names_the_close_ones(survey):
    loc = survey
    before = snapshot(loc)
    with pytest.raises(DatasetNotFoundError) as info:
        remove_datasets(loc.location, ["a_keep", "b_hlf", "zzz"], **kw(loc))
    message = str(info.value)
    assert "'b_hlf' (close: b_half)" in message and "'zzz'" in message
    assert "nothing was removed" in message and "lenspipe status" in message
    assert snapshot(loc) == before


def test_an_unsafe_name_is_refused(survey):
    loc = survey
    before = snapshot(loc)
    for name in ("../a_keep", "runs", "a/b"):
        with pytest.raises(InvalidDatasetNameError):
            remove_datasets(loc.location, ["b_half", name], **kw(loc))
    assert snapshot(loc) == before


def test_a_store_in_use_is_refused_at_once_naming_the_run(survey):
    loc = survey
    root = create_store(loc.location, **kw(loc))
    lock = acquire_run_lock(root, "run-20261201-busy", settle=0)
    before = snapshot(loc)
    try:
        start = time.monotonic()
        with pytest.raises(StoreLockedError) as info:
            remove_datasets(loc.location, ["b_half"], **kw(loc))
        assert time.monotonic() - start < 5  # refused, never waited for
        assert "run-20261201-busy" in str(info.value) and "pid" in str(info.value)
        assert snapshot(loc) == before
    finally:
        lock.release()
    assert remove_datasets(loc.location, ["b_half"], **kw(loc)) == {"b_half": "prepared"}


def test_a_running_removal_holds_the_lock_against_a_run(survey, monkeypatch):
    """While datasets are being removed, a run cannot take the store."""
    import pipeline.io.store.removal as removal

    loc = survey
    seen = []
    real = removal._remove_one

    def remove_one(root, name):
        with pytest.raises(StoreLockedError) as info:
            acquire_run_lock(create_store(loc.location, **kw(loc)), "a-run", settle=0)
        seen.append(str(info.value))
        real(root, name)

    monkeypatch.setattr(removal, "_remove_one", remove_one)
    remove_datasets(loc.location, ["b_half"], **kw(loc))
    assert len(seen) == 1 and "the store is in use by run rm-" in seen[0]


def test_a_torn_dataset_is_removed_and_a_foreign_node_is_not(survey):
    loc = survey
    raw_put(loc, "datasets/b_half/zarr.json", b"{")  # torn group document
    assert list_datasets(loc.location, **kw(loc))["b_half"] == "damaged"
    assert remove_datasets(loc.location, ["b_half"], **kw(loc)) == {"b_half": "damaged"}
    assert raw_keys(loc, "datasets/b_half") == []

    array = {"zarr_format": 3, "node_type": "array"}
    raw_put(loc, "datasets/f_array/zarr.json", json.dumps(array).encode())
    before = snapshot(loc)
    with pytest.raises(UnsafeStoreError, match="f_array"):
        remove_datasets(loc.location, ["c_bad", "f_array"], **kw(loc))
    assert snapshot(loc) == before  # c_bad, checked first, was not removed either
    assert raw_get(loc, LOCK_NAME) is None


def test_a_selection_that_changed_since_it_was_listed_removes_nothing(survey):
    loc = survey
    listed = select_datasets(loc.location, failed=True, **kw(loc))
    mark_failed(create_store(loc.location, **kw(loc)), "b_half", "a later failure")
    before = snapshot(loc)
    with pytest.raises(StoreError, match="changed since they were listed"):
        remove_datasets(loc.location, failed=True, expected=listed, **kw(loc))
    assert snapshot(loc) == before


def test_removal_on_s3(s3_location, imaging, other_imaging):
    loc = s3_location
    write_complete(loc, imaging, "a_keep")
    write_complete(loc, other_imaging, "b_gone")
    before = snapshot(loc, skip=("b_gone",))
    assert remove_datasets(loc.location, ["b_gone"], **kw(loc)) == {"b_gone": "complete"}
    assert snapshot(loc) == before
    assert raw_keys(loc, "datasets/b_gone") == []
    assert list_datasets(loc.location, **kw(loc)) == {"a_keep": "complete"}
    with pytest.raises(DatasetNotFoundError):
        open_imaging(loc.location, "b_gone", **kw(loc))
    assert raw_get(loc, LOCK_NAME) is None
