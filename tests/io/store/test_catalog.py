"""What a store holds (pipeline/io/store/catalog.py): statuses and attributes of its datasets,
its own metadata and its last run, on a local directory and an in-memory store, and on the
store written by lenspipe at d261856 (``tests/data/store_d261856``).

Expected values are read with plain Zarr or JSON, not through the functions under test. The
damage cases of :func:`scan_datasets` are in ``test_readers.py``."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

import pipeline
from pipeline.exc import DamagedDatasetError, DatasetNotFoundError
from pipeline.io.store import (
    SCHEMA_VERSION,
    begin_dataset,
    create_store,
    dataset_attrs,
    dataset_problems,
    dataset_status,
    last_run,
    list_datasets,
    mark_failed,
    record_run_summary,
    scan_datasets,
    store_metadata,
    survey_attrs,
)
from tests.io.store.support import kw, prepare, raw_put, write_complete

LEGACY = Path(__file__).resolve().parents[2] / "data" / "store_d261856" / "survey.zarr"


def _zarr_attrs(loc, path: str = "") -> dict:
    group = loc.open_zarr_group(mode="r")
    return dict((group[path] if path else group).attrs)


@pytest.fixture
def filled(quick_location, imaging, other_imaging):
    """A store holding a dataset in each status: ``c_done`` complete, ``b_half`` prepared,
    ``d_new`` without status (its group begun), ``a_bad`` failed."""
    loc = quick_location
    write_complete(loc, other_imaging, "c_done")
    root = prepare(loc, "b_half", imaging)
    begin_dataset(root, "d_new")
    mark_failed(root, "a_bad", "dataset 'a_bad': FitsReadError: 'data.fits' truncated")
    return loc


def test_statuses_and_attributes(filled):
    loc = filled
    expected = {"a_bad": "failed", "b_half": "prepared", "c_done": "complete", "d_new": "preparing"}
    listed = list_datasets(loc.location, **kw(loc))
    assert listed == expected and list(listed) == sorted(expected)
    for name, status in expected.items():
        assert dataset_status(loc.location, name, **kw(loc)) == status
        attrs = dataset_attrs(loc.location, name, **kw(loc))
        assert attrs == _zarr_attrs(loc, f"datasets/{name}")
    assert dataset_attrs(loc.location, "d_new", **kw(loc)) == {}
    failed = dataset_attrs(loc.location, "a_bad", **kw(loc))
    assert failed["error"] == "dataset 'a_bad': FitsReadError: 'data.fits' truncated"
    assert dataset_problems(loc.location, **kw(loc)) == {"a_bad": failed["error"]}

    scanned = scan_datasets(loc.location, **kw(loc))
    assert list(scanned) == sorted(expected)
    assert scanned == {name: _zarr_attrs(loc, f"datasets/{name}") for name in expected}


def test_a_missing_dataset_is_named(filled):
    loc = filled
    with pytest.raises(DatasetNotFoundError) as info:
        dataset_attrs(loc.location, "e_none", **kw(loc))
    assert "'e_none'" in str(info.value)
    with pytest.raises(DatasetNotFoundError):
        dataset_status(loc.location, "e_none", **kw(loc))


def test_store_metadata(quick_location):
    loc = quick_location
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    create_store(loc.location, **kw(loc))
    after = dt.datetime.now(dt.UTC)
    meta = store_metadata(loc.location, **kw(loc))
    assert meta == _zarr_attrs(loc)["lenspipe"]
    assert set(meta) == {"schema_version", "created", "software"}
    assert meta["schema_version"] == SCHEMA_VERSION == 1
    assert before <= dt.datetime.fromisoformat(meta["created"]) <= after
    assert meta["software"]["lenspipe"] == pipeline.__version__
    assert meta["software"]["numpy"] == np.__version__
    assert meta["software"]["zarr"] == zarr.__version__


def test_last_run_and_survey_attrs(filled):
    loc = filled
    assert last_run(loc.location, **kw(loc)) is None
    datasets, run = survey_attrs(loc.location, **kw(loc))
    assert run == {}
    assert list(datasets) == ["a_bad", "b_half", "c_done", "d_new"]
    assert datasets == {name: _zarr_attrs(loc, f"datasets/{name}") for name in datasets}

    root = create_store(loc.location, **kw(loc))
    first = {"run_id": "r1", "complete": 1, "failures": []}
    second = {"run_id": "r2", "complete": 0, "failures": [{"name": "a_bad", "message": "m"}]}
    record_run_summary(root, "r1", first)
    record_run_summary(root, "r2", second)
    assert last_run(loc.location, **kw(loc)) == second
    assert survey_attrs(loc.location, **kw(loc))[1] == second
    runs = loc.open_zarr_group(mode="r")["runs"]
    assert sorted(runs.group_keys()) == ["r1", "r2"]
    assert dict(runs["r1"].attrs)["summary"] == first


def test_scan_reports_an_unreadable_dataset(filled):
    loc = filled
    raw_put(loc, "datasets/b_half/zarr.json", b"{")
    found = scan_datasets(loc.location, **kw(loc))
    assert isinstance(found["b_half"], DamagedDatasetError)
    assert list_datasets(loc.location, **kw(loc))["b_half"] == "damaged"
    assert found["c_done"]["status"] == "complete"


def test_survey_attrs_lists_an_unreadable_dataset_as_damaged(filled):
    loc = filled
    raw_put(loc, "datasets/b_half/zarr.json", b"{")
    attrs, _ = survey_attrs(loc.location, **kw(loc))
    assert attrs["b_half"]["status"] == "damaged"
    assert "b_half" in attrs["b_half"]["error"] and "--verify" in attrs["b_half"]["error"]
    assert attrs["c_done"]["status"] == "complete"  # the others are still read
    assert list(attrs) == sorted(attrs)


def test_the_store_of_d261856(tmp_path):
    """A store written by an older lenspipe reads the same through the catalog as raw."""
    store = shutil.copytree(LEGACY, tmp_path / "survey.zarr")
    raw = json.loads((store / "zarr.json").read_text())["attributes"]
    assert store_metadata(store) == raw["lenspipe"]
    assert last_run(store) == raw["last_run"]
    names = sorted(p.name for p in (store / "datasets").iterdir() if p.is_dir())
    assert names == ["lens_00003", "lens_00004"]
    expected = {
        name: json.loads((store / "datasets" / name / "zarr.json").read_text())["attributes"]
        for name in names
    }
    assert list_datasets(store) == {name: "complete" for name in names}
    assert scan_datasets(store) == expected
    assert survey_attrs(store) == (expected, raw["last_run"])
