"""Planning a run (pipeline/flow/plan.py): the run settings derived once from the config, the
store-location check, and per dataset what is left to do.

Stores are built in-process by the real tasks (:func:`prepare_task`, :func:`operator_batch_task`)
and the driver's store writes (:func:`finalize_dataset`, :func:`mark_failed`), each dataset left
in one of the states a run can leave it in."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import yaml

from pipeline.exc import ConfigError
from pipeline.flow.config import Config, load_config
from pipeline.flow.discover import discover
from pipeline.flow.plan import RunSettings, check_store_location, plan_run
from pipeline.flow.tasks import (
    AutoBatchSize,
    BatchResult,
    PrepareResult,
    operator_batch_task,
    prepare_task,
)
from pipeline.io.fits import read_fits_array, write_fits_array
from pipeline.io.store import (
    OperatorStorage,
    StoreRecipe,
    create_store,
    dataset_attrs,
    finalize_dataset,
    mark_failed,
)
from pipeline.mock import simulate_survey
from tests.reliability.support import set_manifest_column

BATCH = 100  # rows per operator batch: 3-4 batches per dataset below
N_LENSES = 7


def _config(folder: Path, n: int = N_LENSES, **sections) -> Config:
    """A mock survey of ``n`` small lenses (mask radius 1 arcsec each) in ``folder``, its config
    with ``sections`` merged into the simulated one (one level deep)."""
    path = folder / "survey.yaml"
    if not path.exists():
        simulate_survey(folder, n, seed=1, shape_range=(24, 28), psf_shapes=(5,), batch_size=BATCH)
        set_manifest_column(folder / "manifest.csv", "mask_radius", 1.0)
    data = yaml.safe_load(path.read_text())
    for key, value in sections.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    data["run"]["progress"] = False
    written = folder / f"survey-{len(list(folder.glob('survey*.yaml')))}.yaml"
    written.write_text(yaml.safe_dump(data))
    return load_config(written)


def _prepare(settings: RunSettings, spec) -> PrepareResult:
    result = prepare_task(
        spec, settings.prepare, settings.store, settings.batch_size, settings.storage, "numpy"
    )
    assert isinstance(result, PrepareResult), result
    return result


def _compute(settings: RunSettings, result: PrepareResult, batches) -> None:
    for index in batches:
        done = operator_batch_task(
            settings.store, result.name, index, "numpy", result.metadata["token"]
        )
        assert isinstance(done, BatchResult), done


def _complete(settings: RunSettings, root, spec) -> PrepareResult:
    """A dataset as a finished run leaves it: prepared, every batch computed, recorded complete."""
    result = _prepare(settings, spec)
    _compute(settings, result, range(1, result.n_batches))
    finalize_dataset(root, spec.name)
    return result


def _files(store: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(store)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in store.rglob("*")
        if path.is_file()
    }


@pytest.fixture
def survey(tmp_path) -> Config:
    return _config(tmp_path / "inputs")


def test_plan_over_every_state_a_run_leaves(survey):
    config = survey
    settings = RunSettings.from_config(config)
    specs = discover(config).specs
    assert len(specs) == N_LENSES
    complete, failed, resumed, unfinalized, changed, touched, new = specs
    root = create_store(config.store_location)

    _complete(settings, root, complete)
    _prepare(settings, failed)
    mark_failed(root, failed.name, "dataset 'x': FitsReadError: truncated")
    half = _prepare(settings, resumed)  # batch 0 written by the prepare task
    assert half.n_batches == 4
    _compute(settings, half, [2])  # batches 1 and 3 never ran
    whole = _prepare(settings, unfinalized)
    _compute(settings, whole, range(1, whole.n_batches))  # the driver died before finalize
    _complete(settings, root, changed)
    _complete(settings, root, touched)

    # the same bytes (size unchanged) with other values and a new mtime: a changed input
    data_path = Path(changed.data.path)
    before = data_path.stat()
    write_fits_array(data_path, read_fits_array(data_path) * 2.0, overwrite=True)
    assert data_path.stat().st_size == before.st_size
    os.utime(data_path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    # touched, not modified: the sha256 decides, the dataset stays complete
    touched_path = Path(touched.noise_map.path)
    stat = touched_path.stat()
    os.utime(touched_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))

    store_files = _files(Path(config.store_location))
    plan = plan_run(config, root, settings=settings)

    assert _files(Path(config.store_location)) == store_files  # planning never writes
    assert [spec.name for spec in plan.to_prepare] == [failed.name, changed.name, new.name]
    assert plan.to_resume == {resumed.name: [1, 3]}
    assert plan.tokens == {resumed.name: half.metadata["token"]}
    assert plan.to_finalize == [unfinalized.name]
    assert plan.skipped_complete == [complete.name, touched.name]
    # done before: the resumed dataset's batches 0 and 2, every batch of the unfinalized one
    assert plan.batches_already_done == 2 + whole.n_batches
    assert plan.changed == {changed.name: f"data '{data_path}': sha256 differs"}
    assert plan.conflicts == [] and plan.problems == []
    assert plan.damaged == {} and plan.rebuilt == {} and plan.reopen == []
    assert plan.n_datasets == N_LENSES


def test_settings_are_derived_once_and_match_what_was_recorded(survey):
    config = survey
    settings = RunSettings.from_config(config)
    (spec, *_) = discover(config).specs
    root = create_store(config.store_location)
    _complete(settings, root, spec)
    recorded = dataset_attrs(config.store_location, spec.name)
    assert recorded["settings_hash"] == settings.settings_hash
    assert recorded["settings"] == settings.prepare.recorded

    # deriving again gives the same hash; planning with the settings given uses them as given
    assert RunSettings.from_config(config).settings_hash == settings.settings_hash
    plan = plan_run(config, root, settings=settings)
    assert plan.skipped_complete == [spec.name]
    other = dataclasses.replace(settings, settings_hash="0" * 64)
    plan = plan_run(config, root, settings=other)
    assert plan.conflicts == [spec.name] and plan.skipped_complete == []


def test_other_settings_are_a_conflict_but_a_failed_dataset_is_prepared_again(tmp_path):
    config = _config(tmp_path)
    settings = RunSettings.from_config(config)
    first, second, third, *_ = discover(config).specs
    root = create_store(config.store_location)
    _complete(settings, root, first)
    _prepare(settings, second)
    mark_failed(root, third.name, "bad input")

    # the memory budget only groups rows into tasks: not a setting of the result
    budget = _config(tmp_path, sparse_operator={"memory_budget_mb": 64})
    assert RunSettings.from_config(budget).settings_hash == settings.settings_hash
    assert plan_run(budget, root).conflicts == []

    radius = _config(tmp_path, mask={"kind": "circular", "radius": 2.5})
    assert RunSettings.from_config(radius).settings_hash != settings.settings_hash
    plan = plan_run(radius, root)
    assert plan.conflicts == [first.name, second.name]
    assert third.name in [spec.name for spec in plan.to_prepare]


def test_overwrite_prepares_the_named_datasets_again(survey):
    config = survey
    settings = RunSettings.from_config(config)
    specs = discover(config).specs
    root = create_store(config.store_location)
    for spec in specs[:2]:
        _complete(settings, root, spec)
    names = [spec.name for spec in specs]

    plan = plan_run(config, root, overwrite=[names[1]], settings=settings)
    assert plan.skipped_complete == [names[0]]
    assert [spec.name for spec in plan.to_prepare] == names[1:]

    plan = plan_run(config, root, overwrite=True, settings=settings)
    assert [spec.name for spec in plan.to_prepare] == names and plan.skipped_complete == []

    with pytest.raises(ConfigError, match=r"\['lens_nope'\].*it has 7"):
        plan_run(config, root, overwrite=["lens_nope", names[0]], settings=settings)


def test_verify_reads_complete_datasets(survey):
    config = survey
    settings = RunSettings.from_config(config)
    (spec, *_) = discover(config).specs
    root = create_store(config.store_location)
    result = _complete(settings, root, spec)
    chunk = Path(config.store_location, "datasets", spec.name, "sparse_operator", "values", "c")
    torn = chunk / "1" / "0"
    torn.write_bytes(torn.read_bytes()[:-7])

    # without verify a complete dataset is not read again
    assert plan_run(config, root, settings=settings).skipped_complete == [spec.name]
    plan = plan_run(config, root, verify=True)
    assert plan.skipped_complete == []
    assert plan.damaged == {spec.name: [1]} and plan.to_resume == {spec.name: [1]}
    assert plan.reopen == [spec.name]
    assert plan.tokens == {spec.name: result.metadata["token"]}
    assert plan.batches_already_done == result.n_batches - 1


def test_run_settings_from_config(tmp_path):
    config = _config(
        tmp_path,
        sparse_operator={
            "batch_size": 250,
            "dtype": "float32",
            "codec": "zstd",
            "level": 5,
            "keep_bits": 12,
        },
        run={"retries": 4, "max_tasks_in_flight": 9, "task_timeout": 30, "verify": True},
        cluster={"kind": "local", "start_timeout": 12},
        output={"store": "elsewhere.zarr", "storage_options": {"auto_mkdir": True}},
    )
    settings = RunSettings.from_config(config)
    assert settings.store == StoreRecipe(str(tmp_path / "elsewhere.zarr"), {"auto_mkdir": True})
    assert settings.backend == "numpy" and settings.batch_size == 250
    assert settings.storage == OperatorStorage("float32", "zstd", 5, 12, False)
    assert (settings.retries, settings.max_tasks_in_flight) == (4, 9)
    assert settings.task_timeout == 30.0 and isinstance(settings.task_timeout, float)
    assert settings.start_timeout == 12.0
    assert settings.verify is True and settings.progress is False
    # the command line's choice wins over the config's; None keeps the config's
    chosen = RunSettings.from_config(config, verify=False, progress=True)
    assert chosen.verify is False and chosen.progress is True

    auto = RunSettings.from_config(
        _config(tmp_path, sparse_operator={"batch_size": "auto", "memory_budget_mb": 8})
    )
    assert auto.batch_size == AutoBatchSize(8 * 2**20)
    off = RunSettings.from_config(_config(tmp_path, sparse_operator={"enabled": False}))
    assert off.backend is None and off.batch_size is None


def test_store_location_must_not_overlap_the_inputs(tmp_path):
    inputs = tmp_path / "inputs"
    config = _config(inputs)
    found = discover(config)
    check_store_location(config, found)  # inputs/survey.zarr beside the manifest: fine
    lens = Path(found.specs[0].data.path).parent
    # beside input files, never over them: a store in a lens folder cannot touch its files
    beside = _config(inputs, output={"store": str(lens / "out.zarr")})
    check_store_location(beside, discover(beside))

    # (a store at or above the config's folder is refused by the config itself)
    for store, overlap in (
        (str(lens), lens / "data.fits"),  # a folder holding input files
        (str(lens / "psf.fits"), lens / "psf.fits"),  # an input file itself
    ):
        bad = _config(inputs, output={"store": store})
        with pytest.raises(ConfigError, match="overlaps the input") as info:
            check_store_location(bad, discover(bad))
        assert f"overlaps the input '{overlap}'" in str(info.value)
