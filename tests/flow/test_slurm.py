"""``cluster: {kind: slurm}`` on a real one-node SLURM (:mod:`tests.flow.slurm`): ``lenspipe run``
submits a worker job through dask-jobqueue and ``sbatch``, its workers join, the survey completes
and the store equals a LocalCluster run's bit for bit; no job is left in ``squeue`` after the run,
also when the driver is stopped by SIGINT or SIGTERM while the job runs; a submission that fails
ends the run at once with exit code 2, quoting sbatch."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from tests.flow.slurm import Slurm, slurm_commands
from tests.reliability.support import LENSPIPE, assert_stores_equal, run_cli, summary_counts

RUN_TIMEOUT = 240.0  # seconds for one `lenspipe run` (about 10 here)
JOB_TIMEOUT = 60.0  # seconds for the worker job to be RUNNING after the run started


@pytest.fixture(scope="module")
def survey(tmp_path_factory) -> Path:
    """A 4-lens mock survey (``lenspipe simulate DIR --n 4``): its config."""
    folder = tmp_path_factory.mktemp("slurm-survey") / "mock"
    assert main(["simulate", str(folder), "--n", "4"]) == 0
    return folder / "survey.yaml"


def _config(survey: Path, folder: Path, cluster: dict, name: str = "survey") -> Path:
    """The survey's config with this ``cluster`` section, writing ``folder/name.zarr``."""
    config = yaml.safe_load(survey.read_text())
    config["inputs"]["path"] = str(survey.parent / config["inputs"]["path"])
    config["output"]["store"] = str(folder / f"{name}.zarr")
    config["cluster"] = cluster
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _slurm_cluster(slurm: Slurm, folder: Path, **options) -> dict:
    """One job of two single-threaded workers, scratch and job logs in ``folder``."""
    return {
        "kind": "slurm",
        "jobs": 1,
        "start_timeout": 120,
        "options": {
            "cores": 2,
            "memory": "4GB",
            "queue": slurm.partition,
            "walltime": "00:05:00",
            "local_directory": str(folder / "scratch"),
            "log_directory": str(folder / "job-logs"),
            **options,
        },
    }


def _run(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``lenspipe run CONFIG --no-progress`` to the end, from the config's folder."""
    return run_cli(config, timeout=RUN_TIMEOUT, env=env, cwd=config.parent)


def test_the_cluster_runs_a_batch_job(slurm: Slurm, tmp_path):
    out = tmp_path / "hostname.out"
    job = slurm.command("sbatch", "--parsable", f"--output={out}", "--wrap", "hostname").strip()
    assert job.split(";")[0].isdigit(), job
    slurm.wait_for_no_jobs()
    assert out.read_text().strip().split(".")[0] == slurm.node


def test_survey_on_slurm_equals_local_run(slurm: Slurm, survey: Path, tmp_path):
    local = _run(_config(survey, tmp_path, {"kind": "local", "n_workers": 2}, "local"), slurm.env)
    assert local.returncode == 0, local.stdout + local.stderr

    config = _config(survey, tmp_path, _slurm_cluster(slurm, tmp_path), "slurm")
    done = _run(config, slurm.env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert summary_counts(done.stdout)["complete (this run)"] == 4
    assert_stores_equal(tmp_path / "slurm.zarr", tmp_path / "local.zarr")
    slurm.wait_for_no_jobs()

    # the job's two workers joined the driver's scheduler, logging to the job's log folder, and
    # worked in the scratch folder (both temporary), and sbatch wrote nothing beside the config
    logs = list((tmp_path / "job-logs").glob("dask-worker-*.err"))
    assert len(logs) == 1, logs
    log = logs[0].read_text(errors="replace")
    assert log.count("Registered to:") == 2, log[-3000:]
    assert (tmp_path / "scratch" / "dask-scratch-space").is_dir()
    assert not list(tmp_path.glob("slurm-*.out"))


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stopped_driver_leaves_no_job(slurm: Slurm, survey: Path, tmp_path, stop):
    """The driver stopped while its worker job runs: exit 128 + the signal, the job cancelled."""
    config = _config(survey, tmp_path, _slurm_cluster(slurm, tmp_path))
    driver = subprocess.Popen(
        [LENSPIPE, "run", str(config), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=slurm.env,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + JOB_TIMEOUT
        while "RUNNING" not in slurm.jobs().values():
            assert driver.poll() is None, driver.communicate()[0]
            assert time.monotonic() < deadline, f"no job RUNNING after {JOB_TIMEOUT:g} s"
            time.sleep(0.1)
        driver.send_signal(stop)
        output, _ = driver.communicate(timeout=RUN_TIMEOUT)
    finally:
        if driver.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                driver.kill()  # by pid; the fixture cancels the job at the end
            driver.communicate()
    assert driver.returncode == 128 + stop, output
    assert f"interrupted by {stop.name}" in output
    slurm.wait_for_no_jobs()


def test_failed_submission_ends_the_run(slurm: Slurm, survey: Path, tmp_path):
    """An unknown partition: exit 2 within seconds, quoting sbatch (it used to wait for
    ``start_timeout``); nothing left in squeue."""
    cluster = _slurm_cluster(slurm, tmp_path, queue="no-such-partition")
    cluster["start_timeout"] = 3600
    started = time.monotonic()
    done = _run(_config(survey, tmp_path, cluster), slurm.env)
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stdout + done.stderr
    assert "the job submission failed; sbatch said:" in done.stderr
    assert "sbatch: error: Batch job submission failed: Invalid partition name" in done.stderr
    assert "Traceback" not in done.stderr
    assert elapsed < 60, elapsed
    assert slurm.jobs() == {}


def test_unconfigured_sbatch_ends_the_run(survey: Path, tmp_path):
    """sbatch installed but not configured (an empty slurm.conf): exit 2 quoting its fatal
    error, instead of waiting for ``start_timeout`` (no cluster needed)."""
    commands = slurm_commands()
    empty = tmp_path / "empty.conf"
    empty.write_text("")
    cluster = {"kind": "slurm", "jobs": 1, "options": {"cores": 1, "memory": "2GB"}}
    env = {**os.environ, "SLURM_CONF": str(empty)}
    env["PATH"] = f"{Path(commands['sbatch']).parent}:{env.get('PATH', '')}"
    done = _run(_config(survey, tmp_path, cluster), env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "sbatch: fatal: Unable to process configuration file" in done.stderr
    assert "Traceback" not in done.stderr
