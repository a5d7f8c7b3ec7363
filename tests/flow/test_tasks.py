"""The tasks of a survey run (pipeline/flow/tasks.py), called in-process on a store created as
the driver creates it (:func:`create_store`; a prepare task (re)creates its own dataset's group):
their result records, what they write, and bad input as a :class:`TaskFailure`.

Operator values are compared with the dense brute force W = H^T N^-1 H
(:func:`sparse_operator_dense`) of the dataset as :func:`prepare_imaging` makes it."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from pipeline.flow.config import load_config
from pipeline.flow.discover import discover
from pipeline.flow.plan import RunSettings
from pipeline.flow.prepare import prepare_imaging
from pipeline.flow.tasks import (
    AutoBatchSize,
    BatchResult,
    PrepareResult,
    TaskFailure,
    operator_batch_task,
    prepare_task,
)
from pipeline.io.fits import read_fits_array, write_fits_array
from pipeline.io.store import (
    OperatorStorage,
    batches_done,
    create_store,
    dataset_attrs,
    list_datasets,
    open_imaging,
)
from pipeline.operators.reference import sparse_operator_dense

MOST_ROWS = 100  # sparse_operator.batch_size: ~316 unmasked pixels -> 4 balanced batches


@pytest.fixture
def run(tmp_path):
    """(settings, spec, root): one simulated lens (26x26, 5x5 PSF, mask radius 1 arcsec), its
    run settings, and the store created as the driver creates it."""
    config_path = simulate(tmp_path)
    config = load_config(config_path)
    settings = RunSettings.from_config(config)
    root = create_store(settings.store.location)
    (spec,) = discover(config).specs
    return settings, spec, root


def simulate(folder: Path) -> Path:
    from pipeline.mock import simulate_survey

    path = simulate_survey(
        folder, 1, seed=1, shape_range=(26, 26), psf_shapes=(5,), batch_size=MOST_ROWS
    )
    config = yaml.safe_load(path.read_text())
    config["run"]["progress"] = False
    path.write_text(yaml.safe_dump(config))
    return path


def _prepare(settings, spec, **kw) -> PrepareResult | TaskFailure:
    options = {
        "batch_size": settings.batch_size,
        "storage": settings.storage,
        "backend": "numpy",
        **kw,
    }
    return prepare_task(spec, settings.prepare, settings.store, **options)


def _brute(settings, spec) -> np.ndarray:
    imaging = prepare_imaging(spec, settings.prepare)
    return sparse_operator_dense(
        np.asarray(imaging.mask), imaging.psf.kernel.native, imaging.noise_map.native
    )


def _assert_batch_is_brute_force(group: zarr.Group, batch: int, brute: np.ndarray) -> None:
    """Rows of ``batch`` as stored (band layout: entry o of row i is W[i, j] for the unmasked
    pixel j at native(i) + offsets[o], zero where there is none) against the dense W."""
    mask = np.asarray(group["mask"][...])
    operator = group["sparse_operator"]
    rows = int(operator.attrs["batch_size"])
    start, stop = batch * rows, min((batch + 1) * rows, brute.shape[0])
    values = operator["values"][start:stop]
    offsets = operator["offsets"][...]
    slim = np.full(mask.shape, -1)
    pixels = np.argwhere(~mask)
    slim[tuple(pixels.T)] = np.arange(len(pixels))
    expected = np.zeros_like(values)
    for row, i in enumerate(range(start, stop)):
        for o, (dy, dx) in enumerate(offsets):
            y, x = pixels[i] + (dy, dx)
            if 0 <= y < mask.shape[0] and 0 <= x < mask.shape[1] and slim[y, x] >= 0:
                expected[row, o] = brute[i, slim[y, x]]
    scale = np.sqrt(np.diag(brute)[start:stop]).max() * np.sqrt(np.diag(brute)).max()
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-12 * scale)
    assert np.count_nonzero(expected) > values.shape[0]  # more than the diagonal compared


def test_prepare_task_writes_the_dataset_and_operator_batch_0(run):
    settings, spec, root = run
    result = _prepare(settings, spec)
    assert isinstance(result, PrepareResult)
    group = zarr.open_group(settings.store.location, mode="r")["datasets"][spec.name]
    n_pixels = int(np.count_nonzero(~group["mask"][...]))
    assert result.name == spec.name
    assert result.metadata["n_pixels"] == n_pixels and result.metadata["shape_native"] == [26, 26]
    assert result.metadata["psf_shape"] == [5, 5] and len(result.metadata["token"]) == 32
    assert result.n_batches == math.ceil(n_pixels / MOST_ROWS) == 4
    assert result.complete is False
    assert result.wall_seconds >= result.load_seconds + result.write_seconds > 0
    assert result.cpu_seconds > 0

    first = result.first_batch
    assert isinstance(first, BatchResult)
    rows = int(group["sparse_operator"].attrs["batch_size"])
    assert (first.name, first.batch_index, first.n_rows) == (spec.name, 0, rows)
    assert first.write_seconds == 0.0  # written with the dataset: counted by the prepare result
    assert first.kernel_seconds == first.wall_seconds > 0

    # every input recorded as read: size and sha256 of the bytes
    assert [(s.role, s.path, s.hdu) for s in result.sources] == [
        (role, ref.path, ref.hdu) for role, ref in spec.files()
    ]
    for source in result.sources:
        content = Path(source.path).read_bytes()
        assert source.size == len(content)
        assert source.sha256 == hashlib.sha256(content).hexdigest()

    attrs = dataset_attrs(settings.store.location, spec.name)
    assert attrs["status"] == "prepared" and attrs["token"] == result.metadata["token"]
    assert attrs["settings_hash"] == settings.settings_hash
    assert attrs["timings"] == {
        "prepare_seconds": result.load_seconds,
        "operator_seconds": first.kernel_seconds,
    }
    assert batches_done(root, spec.name).tolist() == [True, False, False, False]
    _assert_batch_is_brute_force(group, 0, _brute(settings, spec))


def test_operator_batch_task_writes_its_batch_and_marker(run):
    settings, spec, root = run
    prepared = _prepare(settings, spec)
    assert isinstance(prepared, PrepareResult)
    group = zarr.open_group(settings.store.location, mode="r")["datasets"][spec.name]
    rows = int(group["sparse_operator"].attrs["batch_size"])
    n_pixels = prepared.metadata["n_pixels"]
    assert not group["sparse_operator/values"][2 * rows : 3 * rows].any()  # not written yet

    token = prepared.metadata["token"]
    results = [operator_batch_task(settings.store, spec.name, i, "numpy", token) for i in (2, 3)]
    assert [type(r) for r in results] == [BatchResult, BatchResult]
    assert [(r.name, r.batch_index, r.n_rows) for r in results] == [
        (spec.name, 2, rows),
        (spec.name, 3, n_pixels - 3 * rows),
    ]
    for result in results:
        assert result.wall_seconds >= result.kernel_seconds + result.write_seconds
        assert result.kernel_seconds > 0 and result.write_seconds > 0
    assert batches_done(root, spec.name).tolist() == [True, False, True, True]
    brute = _brute(settings, spec)
    for batch in (2, 3):
        _assert_batch_is_brute_force(group, batch, brute)

    # idempotent: a retried task writes the same bytes
    before = group["sparse_operator/values"][...]
    again = operator_batch_task(settings.store, spec.name, 2, "numpy", token)
    assert isinstance(again, BatchResult)
    np.testing.assert_array_equal(group["sparse_operator/values"][...], before)
    assert list_datasets(settings.store.location) == {spec.name: "prepared"}  # driver finalizes


def test_one_batch_datasets_and_no_operator_are_complete_after_prepare(run):
    settings, spec, _ = run
    result = _prepare(settings, spec, batch_size=AutoBatchSize(256 * 2**20))
    assert isinstance(result, PrepareResult)
    assert result.n_batches == 1 and result.complete is True
    assert (
        result.first_batch is not None and result.first_batch.n_rows == result.metadata["n_pixels"]
    )
    assert dataset_attrs(settings.store.location, spec.name)["status"] == "complete"
    group = zarr.open_group(settings.store.location, mode="r")["datasets"][spec.name]
    _assert_batch_is_brute_force(group, 0, _brute(settings, spec))

    result = _prepare(settings, spec, batch_size=None, backend=None)  # the operator is off
    assert isinstance(result, PrepareResult)
    assert (result.n_batches, result.first_batch, result.complete) == (0, None, True)
    stored = open_imaging(settings.store.location, spec.name)
    assert stored.sparse_operator is None  # the group was created again, without the old one


def test_without_a_backend_batch_0_is_left_to_an_operator_task(run):
    settings, spec, root = run
    result = _prepare(settings, spec, backend=None)
    assert isinstance(result, PrepareResult)
    assert result.first_batch is None and result.n_batches == 4 and not result.complete
    assert not batches_done(root, spec.name).any()


def test_result_records_are_frozen_and_keyword_only():
    failure = TaskFailure(name="lens", message="dataset 'lens': bad")
    assert failure.batch_index is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        failure.message = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        TaskFailure("lens", "bad")  # type: ignore[misc]
    for record in (BatchResult, PrepareResult):
        params = dataclasses.fields(record)
        assert all(field.kw_only for field in params), record
        assert record.__dataclass_params__.frozen, record


def test_bad_input_is_a_task_failure_naming_the_dataset(run):
    settings, spec, _ = run
    psf = Path(spec.psf.path)
    content = psf.read_bytes()
    psf.unlink()
    failure = _prepare(settings, spec)
    assert isinstance(failure, TaskFailure)
    assert failure.name == spec.name and failure.batch_index is None
    assert spec.name in failure.message and f"'{psf}'" in failure.message
    psf.write_bytes(content)

    data = Path(spec.data.path)
    with open(data, "r+b") as handle:
        handle.truncate(data.stat().st_size // 2)
    failure = _prepare(settings, spec)
    assert isinstance(failure, TaskFailure)
    assert failure.name == spec.name and failure.batch_index is None
    assert failure.message.startswith(f"dataset {spec.name!r}: ")
    assert f"'{data}'" in failure.message and "truncated" in failure.message
    assert list_datasets(settings.store.location) == {}  # nothing written


def test_values_that_cannot_be_stored_fail_batch_0(run):
    settings, spec, _ = run
    noise = Path(spec.noise_map.path)
    write_fits_array(noise, read_fits_array(noise) * 1e-25, overwrite=True)
    failure = _prepare(settings, spec, storage=OperatorStorage("float32"))
    assert isinstance(failure, TaskFailure)
    assert failure.name == spec.name and failure.batch_index == 0
    assert failure.message.startswith(f"dataset {spec.name!r}, operator batch 0: float32 storage")
    # batch 0 is encoded before the group is written: nothing is left in the store
    assert list_datasets(settings.store.location) == {}


def test_operator_batch_of_a_missing_dataset_is_a_task_failure(run):
    settings, _, _ = run
    failure = operator_batch_task(settings.store, "lens_nope", 1, "numpy")
    assert failure == TaskFailure(
        name="lens_nope",
        message="dataset 'lens_nope', operator batch 1: dataset 'lens_nope' is not in the store",
        batch_index=1,
        error_type="DatasetNotFoundError",
    )
