"""A dataset's attributes as a typed record (pipeline/io/store/attributes.py): read from datasets
written by the writers in every status, from the store written by lenspipe at d261856
(``tests/data/store_d261856``, read from a copy), from an empty mapping and from unknown or
ill-typed keys; sources round-trip through the writers' attributes and a store.

Expected values are read with plain JSON or from the in-memory dataset, not through the record."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.exc import DamagedDatasetError, DatasetNotFoundError
from pipeline.io.store import (
    COMPLETE,
    DAMAGED,
    FAILED,
    PREPARED,
    DatasetRecord,
    Source,
    begin_dataset,
    dataset_attrs,
    dataset_metadata,
    dataset_record,
    dataset_records,
    mark_failed,
    prepared_attributes,
    scan_datasets,
    settings_hash,
    survey_attrs,
    survey_records,
    write_imaging,
)
from tests.io.store.support import ORIGIN, SCALES, SHAPE, kw, prepare, raw_put, write_complete

LEGACY = Path(__file__).resolve().parents[2] / "data" / "store_d261856" / "survey.zarr"
SETTINGS = {"mask": {"kind": "circular", "radius": 1.0}, "sparse_operator": {"batch_size": 50}}
SUMMARY = (
    "status",
    "shape_native",
    "pixel_scales",
    "n_pixels",
    "psf_shape",
    "settings_hash",
    "timings",
    "error",
)


@pytest.fixture
def filled(quick_location, imaging, other_imaging):
    """``c_done`` complete (no operator), ``b_half`` prepared (with operator), ``d_new`` without
    status, ``a_bad`` failed."""
    loc = quick_location
    write_complete(loc, other_imaging, "c_done")
    root = prepare(loc, "b_half", imaging, settings=SETTINGS)
    begin_dataset(root, "d_new")
    mark_failed(root, "a_bad", "dataset 'a_bad': FitsReadError: 'data.fits' truncated")
    return loc


def _assert_describes(record: DatasetRecord, imaging, psf_shape) -> None:
    assert record.n_pixels == imaging.shape_slim
    assert record.shape_native == SHAPE
    assert record.pixel_scales == pytest.approx(SCALES)
    assert record.psf_shape == psf_shape
    assert record.check_noise_map is bool(imaging.check_noise_map)
    assert record.token is not None and len(record.token) == 32
    int(record.token, 16)
    assert record.error is None
    assert record.n_batches is None  # schema 1 records it on the operator group


def test_the_record_of_every_status(filled, imaging, other_imaging):
    loc = filled
    prepared = dataset_record(loc.location, "b_half", **kw(loc))
    assert prepared.status is PREPARED
    _assert_describes(prepared, imaging, (5, 7))
    assert prepared.settings_hash == settings_hash(SETTINGS)
    assert dict(prepared.settings) == SETTINGS
    assert prepared.sources == () and dict(prepared.timings) == {}

    complete = dataset_record(loc.location, "c_done", **kw(loc))
    assert complete.status is COMPLETE
    _assert_describes(complete, other_imaging, (3, 3))
    assert complete.settings_hash == settings_hash({})

    failed = dataset_record(loc.location, "a_bad", **kw(loc))
    assert failed.status is FAILED
    assert failed.error == "dataset 'a_bad': FitsReadError: 'data.fits' truncated"
    assert failed.n_pixels is None and failed.settings_hash is None and failed.token is None

    assert dataset_record(loc.location, "d_new", **kw(loc)) == DatasetRecord.from_attrs({})
    for name in ("a_bad", "b_half", "c_done", "d_new"):
        record = dataset_record(loc.location, name, **kw(loc))
        assert dict(record.raw) == dataset_attrs(loc.location, name, **kw(loc))
    with pytest.raises(DatasetNotFoundError):
        dataset_record(loc.location, "e_none", **kw(loc))


def test_records_of_a_store_keep_the_damaged_ones_as_errors(filled):
    loc = filled
    raw_put(loc, "datasets/b_half/zarr.json", b"{")
    records = dataset_records(loc.location, **kw(loc))
    scanned = scan_datasets(loc.location, **kw(loc))
    assert list(records) == list(scanned)
    assert isinstance(records["b_half"], DamagedDatasetError)
    for name in ("a_bad", "c_done", "d_new"):
        assert records[name] == DatasetRecord.from_attrs(scanned[name])

    survey, run = survey_records(loc.location, **kw(loc))
    attrs, _ = survey_attrs(loc.location, **kw(loc))
    assert run == {} and list(survey) == list(attrs) == sorted(attrs)
    assert survey["b_half"].status is DAMAGED and "--verify" in (survey["b_half"].error or "")
    assert survey["c_done"].status is COMPLETE


def test_the_store_of_d261856(tmp_path):
    """Datasets written by an older lenspipe read into records, every field as recorded."""
    store = shutil.copytree(LEGACY, tmp_path / "survey.zarr")
    records = dataset_records(store)
    assert sorted(records) == ["lens_00003", "lens_00004"]
    for name, record in records.items():
        raw = json.loads((store / "datasets" / name / "zarr.json").read_text())["attributes"]
        assert isinstance(record, DatasetRecord)
        assert dict(record.raw) == raw
        assert record.status is COMPLETE
        assert record.settings_hash == raw["settings_hash"] == settings_hash(raw["settings"])
        assert record.token == raw["token"]
        assert record.n_pixels == raw["n_pixels"]
        assert record.shape_native == tuple(raw["shape_native"])
        assert record.psf_shape == (5, 5)
        assert record.pixel_scales == (0.1, 0.1)
        assert dict(record.timings) == raw["timings"]
        assert record.check_noise_map is True and record.error is None
        assert record.n_batches is None
        assert [s.role for s in record.sources] == ["data", "noise_map", "psf"]
        assert [dataclasses.asdict(s) for s in record.sources] == raw["sources"]
        assert record.summary_items() == tuple((key, raw.get(key)) for key in SUMMARY)


def test_an_empty_mapping_reads_as_nothing_recorded():
    record = DatasetRecord.from_attrs({})
    assert record.status is None and record.settings_hash is None and record.token is None
    assert record.sources == () and dict(record.timings) == {} and dict(record.settings) == {}
    assert record.n_pixels is record.shape_native is record.psf_shape is record.pixel_scales is None
    assert record.error is record.check_noise_map is record.n_batches is None
    assert record.bunit is record.band is record.lens is None
    assert dict(record.raw) == {}
    assert record.summary_items() == tuple((key, None) for key in SUMMARY)


def test_unknown_and_ill_typed_keys_never_raise():
    attrs = {
        "status": "archived",  # no lenspipe writes it
        "future_key": {"nested": [1, 2]},
        "n_pixels": "many",
        "n_batches": 7,
        "shape_native": [3, "x"],
        "psf_shape": None,
        "pixel_scales": 0.1,
        "timings": {"prepare_seconds": 1, "note": "slow", "operator_seconds": 2.5},
        "error": 42,
        "check_noise_map": "yes",
        "token": None,
        "bunit": 3,
        "band": ["VIS"],
        "lens": None,
        "settings": [1],
        "sources": [
            {"role": "data", "path": "/d.fits", "hdu": "SCI", "colour": "blue"},
            {"path": "/no-role.fits"},
            "not a mapping",
        ],
    }
    record = DatasetRecord.from_attrs(attrs)
    assert record.status is DAMAGED
    assert record.raw["future_key"] == {"nested": [1, 2]} and dict(record.raw) == attrs
    assert record.n_batches == 7
    assert record.n_pixels is record.shape_native is record.psf_shape is None
    assert record.pixel_scales is record.error is record.check_noise_map is record.token is None
    assert dict(record.timings) == {"prepare_seconds": 1.0, "operator_seconds": 2.5}
    assert dict(record.settings) == {}
    assert record.bunit is record.band is record.lens is None
    assert record.sources == (Source("data", "/d.fits", "SCI"),)
    assert DatasetRecord.from_attrs({"status": ""}).status is DAMAGED
    assert DatasetRecord.from_attrs({"status": ["complete"]}).status is DAMAGED


def test_the_unit_band_and_lens_as_recorded():
    attrs = {"bunit": "electron/s", "band": "VIS", "lens": "EUC_1"}
    record = DatasetRecord.from_attrs(attrs)
    assert (record.bunit, record.band, record.lens) == ("electron/s", "VIS", "EUC_1")


def test_a_record_is_read_only():
    attrs = {"status": "complete", "timings": {"prepare_seconds": 1.0}, "settings": {"a": 1}}
    record = DatasetRecord.from_attrs(attrs)
    attrs["status"] = "failed"
    assert record.status is COMPLETE and record.raw["status"] == "complete"
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.status = FAILED  # type: ignore[misc]
    for mapping in (record.raw, record.timings, record.settings):
        with pytest.raises(TypeError):
            mapping["x"] = 1  # type: ignore[index]


def test_sources_round_trip_through_the_attributes(tmp_path):
    path = tmp_path / "data.fits"
    path.write_bytes(b"SIMPLE" * 100)
    sources = (
        Source.from_file("data", path),
        Source("noise_map", str(tmp_path / "noise.fits"), "ERR", "ab" * 32, 10, 123),
        Source("psf", str(tmp_path / "psf.fits")),
    )
    attrs = json.loads(json.dumps(prepared_attributes({}, sources=sources)))
    assert DatasetRecord.from_attrs(attrs).sources == sources


def test_sources_round_trip_through_a_store(tmp_path, other_imaging):
    path = tmp_path / "data.fits"
    path.write_bytes(b"x" * 2880)
    sources = (Source.from_file("data", path), Source("psf", str(path), 1))
    store = tmp_path / "survey.zarr"
    write_imaging(store, "lens", other_imaging, sources=sources, settings=SETTINGS)
    record = dataset_record(store, "lens")
    assert record.sources == sources
    assert record.status is COMPLETE and record.settings_hash == settings_hash(SETTINGS)
    assert record.pixel_scales == pytest.approx(SCALES)
    assert np.allclose(record.raw["origin"], ORIGIN)


def test_the_token_of_a_prepare_tasks_metadata(other_imaging):
    metadata = dataset_metadata(other_imaging)
    assert DatasetRecord.from_attrs(metadata).token == metadata["token"]
