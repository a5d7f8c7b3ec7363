"""The ``lenspipe`` command line, called in-process through :func:`pipeline.cli.main`.

Exit codes: 0 every dataset complete, 3 the run finished with failed datasets, 2 usage or
configuration error, 1 anything else. Runs use tiny simulated surveys on a one-worker
``LocalCluster``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.cli import main
from pipeline.io.fits import read_fits_array, write_fits_array
from pipeline.io.store import dataset_attrs, list_datasets
from pipeline.mock import simulate_survey

NAMES = ["lens_00001", "lens_00002", "lens_00003"]


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``lenspipe ARGS``; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def quiet_cli(*args) -> tuple[int, str, str]:
    """:func:`cli` for module fixtures (no capsys there)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def make_survey(folder: Path, n: int = 3) -> Path:
    """A mock survey of ``n`` lenses run by one local worker; returns its survey.yaml."""
    return simulate_survey(folder, n, seed=1, n_workers=1)


def edit_yaml(path: Path, **sections) -> Path:
    data = yaml.safe_load(path.read_text())
    data.update(sections)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> tuple[Path, tuple[int, str, str]]:
    """A survey of three good lenses, run once: (config path, (code, stdout, stderr))."""
    config = make_survey(tmp_path_factory.mktemp("good"))
    return config, quiet_cli("run", config, "--no-progress")


# ---------------------------------------------------------------------------------------- simulate
def test_simulate_writes_a_survey_that_validates(tmp_path, capsys):
    out = tmp_path / "mock"
    code, stdout, _ = cli(capsys, "simulate", out, "--n", 4, "--seed", 7)
    assert code == 0
    assert "Simulated 4 lenses" in stdout
    with open(out / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == [f"lens_{i:05d}" for i in range(7, 11)]
    for row in rows:
        for role in ("data", "noise_map", "psf"):
            assert (out / row[role]).is_file()
    assert (out / "survey.yaml").is_file()

    code, stdout, _ = cli(capsys, "validate", out / "survey.yaml")
    assert code == 0
    assert "valid" in stdout and "4 datasets found" in stdout
    assert "problem" not in stdout


def test_validate_reports_problems_and_exits_2(tmp_path, capsys):
    config = make_survey(tmp_path, n=2)
    with open(tmp_path / "manifest.csv", "a") as handle:
        handle.write("bad/name,x.fits,y.fits,z.fits,1.0\n")
    code, stdout, err = cli(capsys, "validate", config)
    assert code == 2
    assert "2 datasets found" in stdout
    assert "problem: bad/name" in stdout
    assert "error: 1 error in 1 dataset" in err


def test_validate_unknown_key_exits_2(tmp_path, capsys):
    config = make_survey(tmp_path, n=1)
    text = config.read_text().replace("  radius: 3.0", "  radus: 3.0")
    config.write_text(text)
    code, stdout, err = cli(capsys, "validate", config)
    assert code == 2
    assert "mask.radus" in err and "unknown key" in err
    assert "survey.yaml" in err


def test_validate_missing_file_exits_2(tmp_path, capsys):
    code, _, err = cli(capsys, "validate", tmp_path / "nope.yaml")
    assert code == 2
    assert "nope.yaml" in err


@pytest.mark.parametrize("args", [["run"], ["no-such-command"], ["simulate", "x", "--n", "0"]])
def test_usage_errors_exit_2(capsys, args):
    code, _, _ = cli(capsys, *args)
    assert code == 2


def test_help_exits_0(capsys):
    code, out, _ = cli(capsys, "--help")
    assert code == 0
    for command in ("simulate", "run", "status", "inspect", "validate", "demo", "plot", "rm"):
        assert command in out


# ---------------------------------------------------------------------------------------- run
def test_run_good_survey(good_run):
    _, (code, stdout, err) = good_run
    assert code == 0, stdout + err
    assert "complete (this run)" in stdout
    assert "Failures" not in stdout


def test_status_json_after_run(good_run, capsys):
    config, _ = good_run
    store = config.parent / "survey.zarr"
    code, stdout, _ = cli(capsys, "status", store, "--json")
    assert code == 0
    assert json.loads(stdout) == dict.fromkeys(NAMES, "complete")

    code, stdout, _ = cli(capsys, "status", store)
    assert code == 0
    assert "3 datasets" in stdout and "3 complete" in stdout


def test_inspect_store_and_dataset(good_run, capsys):
    config, _ = good_run
    store = config.parent / "survey.zarr"
    code, stdout, _ = cli(capsys, "inspect", store)
    assert code == 0
    assert "lenspipe store" in stdout and "3 datasets" in stdout
    assert "3 complete, 0 failed" in stdout  # the last run

    code, stdout, _ = cli(capsys, "inspect", store, "lens_00001")
    assert code == 0
    shape = read_fits_array(config.parent / "lens_00001" / "data.fits").shape
    assert "status: complete" in stdout
    assert f"shape_native: {list(shape)}" in stdout
    assert "source: data:" in stdout


def test_inspect_dataset_prints_each_attribute_as_recorded(good_run, capsys):
    config, _ = good_run
    store = config.parent / "survey.zarr"
    attrs = dataset_attrs(store, "lens_00002")
    code, stdout, _ = cli(capsys, "inspect", store, "lens_00002")
    assert code == 0
    labels = ("status", "shape_native", "pixel_scales", "n_pixels", "psf_shape")
    labels += ("settings_hash", "timings", "error")
    expected = [f"{label:>14}: {attrs.get(label)}" for label in labels]
    expected += [
        f"{'source':>14}: {s['role']}: {s['path']} [{s['hdu']}] sha256 {s['sha256'][:16]}…"
        for s in attrs["sources"]
    ]
    *attributes, arrays = stdout.splitlines()
    assert attributes == expected
    assert arrays.startswith(f"{'arrays':>14}: ") and "batches done" in arrays


def test_inspect_unknown_dataset_exits_2(good_run, capsys):
    config, _ = good_run
    code, _, err = cli(capsys, "inspect", config.parent / "survey.zarr", "lens_99999")
    assert code == 2
    assert "lens_99999" in err


def test_status_of_a_missing_store_exits_2(tmp_path, capsys):
    code, _, err = cli(capsys, "status", tmp_path / "none.zarr")
    assert code == 2
    assert "none.zarr" in err


def skipped_count(stdout: str) -> int:
    line = next(x for x in stdout.splitlines() if "skipped (already complete)" in x)
    return int(line.split()[-1])


def test_rerun_skips_complete_datasets(good_run, capsys):
    config, _ = good_run
    code, stdout, err = cli(capsys, "run", config, "--resume", "--no-progress")
    assert code == 0, err
    assert skipped_count(stdout) == 3


def test_run_with_bad_datasets_is_partial(tmp_path, capsys):
    config = make_survey(tmp_path, n=4)
    noise_file = tmp_path / "lens_00002" / "noise_map.fits"
    noise = read_fits_array(noise_file)
    write_fits_array(noise_file, np.zeros_like(noise), pixel_scales=0.1, overwrite=True)
    data_file = tmp_path / "lens_00003" / "data.fits"
    raw = data_file.read_bytes()
    data_file.write_bytes(raw[: len(raw) // 2])

    code, stdout, _ = cli(capsys, "run", config, "--no-progress")
    assert code == 3
    failures = stdout[stdout.index("Failures:") :]
    noise_line = next(x for x in failures.splitlines() if "lens_00002" in x)
    assert "noise_map" in noise_line and str(noise_file) in noise_line
    data_line = next(x for x in failures.splitlines() if "lens_00003" in x)
    assert str(data_file) in data_line and "truncated" in data_line

    code, stdout, _ = cli(capsys, "status", tmp_path / "survey.zarr", "--json")
    assert code == 0
    assert json.loads(stdout) == {
        "lens_00001": "complete",
        "lens_00002": "failed",
        "lens_00003": "failed",
        "lens_00004": "complete",
    }
    error = dataset_attrs(tmp_path / "survey.zarr", "lens_00003")["error"]
    assert str(data_file) in error


@pytest.mark.parametrize(("kind", "directive"), [("slurm", "#SBATCH"), ("pbs", "#PBS")])
def test_dry_run_prints_the_job_script(good_run, capsys, kind, directive):
    config, _ = good_run
    store = config.parent / f"dry-{kind}.zarr"
    cluster = {
        "kind": kind,
        "jobs": 2,
        "options": {"cores": 1, "memory": "4GB", "queue": "debug", "walltime": "00:30:00"},
    }
    dry = config.parent / f"{kind}.yaml"
    dry.write_text(config.read_text())
    edit_yaml(dry, cluster=cluster, output={"store": store.name})
    code, stdout, err = cli(capsys, "run", dry, "--dry-run")
    assert code == 0, err
    assert "plan: 3 datasets to prepare" in stdout
    assert f"{kind.upper()} job script (2 job(s))" in stdout
    assert directive in stdout and "debug" in stdout and "00:30:00" in stdout
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        assert f"export {variable}='1'" in stdout
    # nothing was computed
    if store.exists():
        assert "complete" not in list_datasets(store).values()


def test_dry_run_names_the_adaptive_range(good_run, capsys):
    config, _ = good_run
    cluster = {
        "kind": "slurm",
        "adapt": {"minimum": 1, "maximum": 8},
        "options": {"cores": 2, "memory": "8GB"},
    }
    dry = config.parent / "adaptive.yaml"
    dry.write_text(config.read_text())
    edit_yaml(dry, cluster=cluster, output={"store": "dry-adaptive.zarr"})
    code, stdout, err = cli(capsys, "run", dry, "--dry-run")
    assert code == 0, err
    assert "SLURM job script (adaptive: 1 to 8 job(s))" in stdout
    assert "#SBATCH --cpus-per-task=2" in stdout


def test_dry_run_with_an_interface_this_machine_lacks_is_a_config_error(good_run, capsys):
    """The scheduler listens on ``options.interface`` too: one the driver's machine lacks is
    exit 2 naming cluster.options (dask-jobqueue's RuntimeError was exit 1)."""
    config, _ = good_run
    dry = config.parent / "no-interface.yaml"
    dry.write_text(config.read_text())
    options = {"cores": 1, "memory": "1GB", "interface": "no-such-if0"}
    cluster = {"kind": "slurm", "options": options}
    edit_yaml(dry, cluster=cluster, output={"store": "dry-no-interface.zarr"})
    code, stdout, err = cli(capsys, "run", dry, "--dry-run")
    assert code == 2, stdout + err
    assert "error: cluster.options: the Dask scheduler could not start on this machine" in err
    assert "'no-such-if0' is not a valid network interface" in err
    assert "job script" not in stdout


def test_dry_run_without_memory_is_a_config_error(good_run, capsys):
    """Options without ``memory``: exit 2 naming the key (dask-jobqueue's ValueError was an
    "unexpected error", exit 1)."""
    config, _ = good_run
    dry = config.parent / "no-memory.yaml"
    dry.write_text(config.read_text())
    cluster = {"kind": "slurm", "options": {"cores": 2}}
    edit_yaml(dry, cluster=cluster, output={"store": "dry-no-memory.zarr"})
    code, stdout, err = cli(capsys, "run", dry, "--dry-run")
    assert code == 2, stdout + err
    assert "error: cluster.options.memory: required for kind slurm (per batch job" in err
    assert "job script" not in stdout


def test_dry_run_on_an_existing_store(good_run, capsys):
    config, _ = good_run
    code, stdout, _ = cli(capsys, "run", config, "--dry-run")
    assert code == 0
    assert "prepare 0" in stdout and "skip 3 complete" in stdout
    assert "job script" not in stdout  # a local cluster has none


def test_unreachable_scheduler_exits_2(tmp_path, capsys):
    config = make_survey(tmp_path, n=1)
    edit_yaml(config, cluster={"kind": "address", "address": "tcp://127.0.0.1:1", "timeout": 2})
    start = time.monotonic()
    code, _, err = cli(capsys, "run", config, "--no-progress")
    assert code == 2
    assert time.monotonic() - start < 10
    assert "tcp://127.0.0.1:1" in err and "cluster.address" in err


def test_changed_settings_are_refused_unless_overwrite(tmp_path, capsys):
    config = make_survey(tmp_path, n=2)
    store = tmp_path / "survey.zarr"
    code, _, _ = cli(capsys, "run", config, "--no-progress")
    assert code == 0
    assert dataset_attrs(store, "lens_00001")["settings"]["mask"]["radius"] == 3.0

    data = yaml.safe_load(config.read_text())
    edit_yaml(config, mask={**data["mask"], "radius": 2.0})
    code, stdout, err = cli(capsys, "run", config, "--no-progress")
    assert code == 2
    assert "different settings" in err and "--overwrite" in err
    assert dataset_attrs(store, "lens_00001")["settings"]["mask"]["radius"] == 3.0

    code, stdout, _ = cli(capsys, "run", config, "--overwrite", "--no-progress")
    assert code == 0
    assert list_datasets(store) == {"lens_00001": "complete", "lens_00002": "complete"}
    for name in ("lens_00001", "lens_00002"):
        assert dataset_attrs(store, name)["settings"]["mask"]["radius"] == 2.0


def _with_run_options_changed(config: Path, name: str) -> Path:
    """A copy of ``config`` that differs only in run options (not dataset settings)."""
    changed = config.parent / name
    changed.write_text(config.read_text())
    edit_yaml(changed, run={"retries": 5, "max_tasks_in_flight": 4})
    return changed


def test_retries_change_is_not_a_settings_change_in_the_plan(good_run, capsys):
    config, _ = good_run
    changed = _with_run_options_changed(config, "retries-plan.yaml")
    code, stdout, _ = cli(capsys, "run", changed, "--dry-run")
    assert code == 0
    assert "skip 3 complete; 0 with changed settings" in stdout


def test_retries_change_is_not_a_settings_change(good_run, capsys):
    config, _ = good_run
    changed = _with_run_options_changed(config, "retries.yaml")
    code, stdout, err = cli(capsys, "run", changed, "--no-progress")
    assert "different settings" not in err
    assert code == 0, err
    assert skipped_count(stdout) == 3


# ---------------------------------------------------------------------------------------- demo
def test_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, err = cli(capsys, "demo", "--out", out, "--n", 2, "--workers", 1)
    assert code == 0, err
    assert "Simulated 2 lenses" in stdout
    assert f"lenspipe status {out / 'survey.zarr'}" in stdout
    assert list_datasets(out / "survey.zarr") == {
        "lens_00000": "complete",
        "lens_00001": "complete",
    }


def test_overwrite_one_dataset_by_name(tmp_path, capsys):
    config = make_survey(tmp_path, n=2)
    store = tmp_path / "survey.zarr"
    assert cli(capsys, "run", config, "--no-progress")[0] == 0
    tokens = {name: dataset_attrs(store, name)["token"] for name in ("lens_00001", "lens_00002")}
    code, stdout, _ = cli(
        capsys, "run", config, "--no-progress", "--overwrite-dataset", "lens_00002"
    )
    assert code == 0, stdout
    assert skipped_count(stdout) == 1
    assert dataset_attrs(store, "lens_00001")["token"] == tokens["lens_00001"]
    assert dataset_attrs(store, "lens_00002")["token"] != tokens["lens_00002"]
    assert list_datasets(store) == {"lens_00001": "complete", "lens_00002": "complete"}
    # a name the config does not describe is a usage error, and nothing is touched
    code, _, err = cli(capsys, "run", config, "--no-progress", "--overwrite-dataset", "lens_9")
    assert code == 2 and "lens_9" in err and "--overwrite-dataset" in err


def test_dry_run_on_a_store_of_a_newer_schema_is_refused(tmp_path, capsys):
    """A store lenspipe cannot read is not "a new store": --dry-run refuses it as run does."""
    config = make_survey(tmp_path, n=1)
    assert cli(capsys, "run", config, "--no-progress")[0] == 0
    meta = tmp_path / "survey.zarr" / "zarr.json"
    document = json.loads(meta.read_text())
    document["attributes"]["lenspipe"]["schema_version"] = 99
    meta.write_text(json.dumps(document))
    for extra in ((), ("--dry-run",)):
        code, stdout, err = cli(capsys, "run", config, "--no-progress", *extra)
        assert code == 2 and "schema_version 99" in err, (extra, stdout, err)
        assert "new store" not in stdout


def test_help_names_the_exit_codes(capsys):
    code, out, _ = cli(capsys, "--help")
    assert code == 0
    for line in ("0    every dataset complete", "3    the run finished", "130  stopped by SIGINT"):
        assert line in out
