"""Partial writes: values written without their marker are recomputed, never trusted; a torn
chunk (truncated file) is detected on resume (prepared datasets), on read (a StoreError naming
dataset and batch) and by verification (complete datasets), and recomputed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from pipeline.exc import StoreError
from pipeline.flow.cluster import cluster_client
from pipeline.flow.config import LocalClusterConfig, load_config
from pipeline.flow.plan import plan_run
from pipeline.flow.run import run_survey
from pipeline.io.store import (
    batches_done,
    dataset_attrs,
    list_datasets,
    open_operator,
    open_store,
    verify_dataset,
)
from pipeline.mock import simulate_survey

BATCH = 400


@pytest.fixture(scope="module")
def client():
    with cluster_client(LocalClusterConfig(n_workers=2)) as client:
        yield client


@pytest.fixture
def survey(tmp_path, client):
    """Two lenses (21x21 and 11x11 PSFs) run once: (config, store, name of the 21x21 lens)."""
    path = simulate_survey(tmp_path, 2, seed=5, shape_range=(80, 90), psf_shapes=(21, 11))
    data = yaml.safe_load(path.read_text())
    data["sparse_operator"]["batch_size"] = BATCH
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    summary = run_survey(config, client=client, progress=False)
    assert summary.exit_code == 0
    return config, tmp_path / "survey.zarr", "lens_00005"


def _operator(store: Path, name: str) -> zarr.Group:
    return zarr.open_group(store, mode="r+")["datasets"][name]["sparse_operator"]


def _values(store: Path, name: str) -> np.ndarray:
    return _operator(store, name)["values"][...]


def _chunk(store: Path, name: str, index: int) -> Path:
    return store / "datasets" / name / "sparse_operator" / "values" / "c" / str(index) / "0"


def _marker(store: Path, name: str, index: int) -> Path:
    return store / "datasets" / name / "sparse_operator" / "batches_done" / "c" / str(index)


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _interrupted(store: Path, name: str) -> None:
    """Leave the dataset as a killed run would: status ``prepared``."""
    zarr.open_group(store, mode="r+")["datasets"][name].attrs["status"] = "prepared"


def test_values_written_without_marker_are_recomputed(survey, client):
    config, store, name = survey
    before = _values(store, name)
    n_batches = _operator(store, name).attrs["n_batches"]
    rows = _operator(store, name).attrs["batch_size"]
    assert n_batches >= 4 and rows <= BATCH
    lost = [0, n_batches - 1]
    _interrupted(store, name)
    for index in lost:
        # the task wrote its values (here: wrong ones) and died before its marker
        _operator(store, name)["values"][index * rows : (index + 1) * rows] = 7.0
        _marker(store, name, index).unlink()

    summary = run_survey(config, client=client, progress=False)
    assert summary.exit_code == 0
    assert summary.shards_computed == len(lost)
    assert summary.shards_skipped == n_batches - len(lost)
    assert summary.shards_damaged == 0
    assert summary.resumed == 1 and summary.skipped_complete == 1
    assert np.array_equal(_values(store, name), before)
    assert list_datasets(store)[name] == "complete"


def test_torn_chunk_of_an_interrupted_dataset_is_recomputed_on_resume(survey, client):
    config, store, name = survey
    before = _values(store, name)
    n_batches = _operator(store, name).attrs["n_batches"]
    _interrupted(store, name)
    _truncate(_chunk(store, name, 1))  # marker set, chunk torn
    _marker(store, name, 2).unlink()  # never finished
    _marker(store, name, 3).write_bytes(b"")  # a torn marker: not done

    # the plan (also what --dry-run prints) sees it, and does not touch the store
    plan = plan_run(config, open_store(store))
    assert plan.damaged == {name: [1]}
    assert plan.to_resume == {name: [1, 2, 3]}
    assert _marker(store, name, 1).exists() and _chunk(store, name, 1).exists()

    summary = run_survey(config, client=client, progress=False)
    assert summary.exit_code == 0
    assert summary.shards_damaged == 1
    assert summary.shards_computed == 3
    assert summary.shards_skipped == n_batches - 3
    assert np.array_equal(_values(store, name), before)
    assert batches_done(open_store(store), name).all()
    assert verify_dataset(store, name) == []


def test_torn_chunk_of_a_complete_dataset_is_reported_on_read_and_repaired_by_verify(
    survey, client
):
    config, store, name = survey
    before = _values(store, name)
    n_batches = _operator(store, name).attrs["n_batches"]
    _truncate(_chunk(store, name, 0))

    # reading: a StoreError naming the dataset and the batch, not a codec's error or garbage
    with pytest.raises(StoreError) as info:
        _ = open_operator(store, name).values
    message = str(info.value)
    assert repr(name) in message and "batch(es) [0]" in message and "values/c/0/0" in message
    assert "cannot be decoded" in message and "run.verify: true" in message

    # a chunk lost under its marker reads as zeros in plain Zarr: reported too
    _chunk(store, name, 2).unlink()
    with pytest.raises(StoreError, match=r"batch\(es\) \[0, 2\].*values/c/2/0 is missing"):
        _ = open_operator(store, name).values
    assert verify_dataset(store, name) == [0, 2]
    assert verify_dataset(store, "lens_00006") == []

    # the default resume stays cheap: complete datasets are not read
    summary = run_survey(config, client=client, progress=False)
    assert summary.shards_computed == 0 and summary.skipped_complete == 2

    # verification recomputes exactly the damaged batches
    verified = config.model_copy(update={"run": config.run.model_copy(update={"verify": True})})
    summary = run_survey(verified, client=client, progress=False)
    assert summary.exit_code == 0
    assert summary.shards_damaged == 2 and summary.shards_computed == 2
    assert summary.shards_skipped == n_batches - 2
    assert summary.skipped_complete == 1 and summary.resumed == 1
    assert np.array_equal(_values(store, name), before)
    assert verify_dataset(store, name) == []
    attrs = dataset_attrs(store, name)
    assert attrs["status"] == "complete" and attrs["repairs"][0]["batches"] == [0, 2]
    np.testing.assert_array_equal(open_operator(store, name).values, before)


def test_cli_verify_flag_repairs_a_torn_chunk(survey):
    from pipeline.cli import main

    config, store, name = survey
    before = _values(store, name)
    _truncate(_chunk(store, name, 1))
    config_path = config.base_dir / "survey.yaml"
    assert main(["run", str(config_path), "--no-progress"]) == 0  # cheap resume: not noticed
    assert verify_dataset(store, name) == [1]
    assert main(["run", str(config_path), "--no-progress", "--verify"]) == 0
    assert verify_dataset(store, name) == []
    np.testing.assert_array_equal(_values(store, name), before)
