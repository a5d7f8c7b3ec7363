"""``cluster: {kind: slurm}`` on a real one-node SLURM (:mod:`tests.flow.slurm`).

* ``lenspipe run`` submits worker jobs through dask-jobqueue and ``sbatch``, their workers join,
  the survey completes and the store equals a LocalCluster run's bit for bit;
* ``cluster.adapt``: jobs follow the work (two while many tasks wait, one released in the
  survey's long tail, none left);
* faults: a worker job cancelled (``scancel``) mid-run is survived; every worker job cancelled
  ends the run after ``cluster.start_timeout`` (exit 1, lock released, the store resumable);
  a submission that fails ends the run at once with exit code 2, quoting sbatch (also under
  ``adapt``); the driver stopped by SIGINT or SIGTERM leaves no job in ``squeue``;
* the whole run inside one allocation: ``lenspipe run`` itself submitted with ``sbatch``.

The node has 2 cores: worker jobs of 1 core each, so that two run at once."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.mock import simulate_survey
from tests.flow.slurm import Slurm, slurm_commands
from tests.reliability.support import (
    LENSPIPE,
    assert_stores_equal,
    logs,
    marker_files,
    owned,
    read_lock,
    run_cli,
    set_manifest_column,
    start_run,
    summary_counts,
    wait_for,
)

RUN_TIMEOUT = 240.0  # seconds for one `lenspipe run` (about 10 here)
JOB_TIMEOUT = 60.0  # seconds for the worker job to be RUNNING after the run started
POLL = 0.1  # seconds between two looks at squeue or the store

# The long-tail survey: small lenses of one task each, then one big lens whose single task
# (41x41 PSF, radius 6": ~11,000 rows) lasts a few seconds, alone at the end of the run.
TAIL_SMALL = 8
# Dask's adaptive settings for the driver of the adaptive test: a look every 200 ms, and a job
# per 0.5 s of queued work (default 1 s and 5 s: made for tasks of minutes, not of 0.1 s)
ADAPT_ENV = {
    "DASK_DISTRIBUTED__ADAPTIVE__INTERVAL": "200ms",
    "DASK_DISTRIBUTED__ADAPTIVE__TARGET_DURATION": "0.5s",
}


@pytest.fixture(scope="module")
def survey(tmp_path_factory) -> Path:
    """A 4-lens mock survey (``lenspipe simulate DIR --n 4``): its config."""
    folder = tmp_path_factory.mktemp("slurm-survey") / "mock"
    assert main(["simulate", str(folder), "--n", "4"]) == 0
    return folder / "survey.yaml"


@pytest.fixture(scope="module")
def reference(survey: Path, tmp_path_factory) -> Path:
    """The 4-lens survey run on a LocalCluster of 2 workers: its store."""
    folder = tmp_path_factory.mktemp("slurm-reference")
    done = _run(_config(survey, folder, {"kind": "local", "n_workers": 2}, "local"), None)
    assert done.returncode == 0, done.stdout + done.stderr
    return folder / "local.zarr"


def _merge_manifests(folder: Path, parts: list[str]) -> Path:
    """One manifest over the surveys simulated in ``folder/part`` (paths made relative to
    ``folder``)."""
    rows = []
    for part in parts:
        with open(folder / part / "manifest.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                rows += [{**row, **{k: f"{part}/{row[k]}" for k in ("data", "noise_map", "psf")}}]
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


@pytest.fixture(scope="module")
def tail_survey(tmp_path_factory) -> Path:
    """:data:`TAIL_SMALL` small lenses, then one big one, one task per dataset (a batch size
    above every dataset's rows): its config."""
    folder = tmp_path_factory.mktemp("slurm-tail")
    small = simulate_survey(
        folder / "small", TAIL_SMALL, seed=21, shape_range=(60, 80), psf_shapes=(11,)
    )
    simulate_survey(folder / "big", 1, seed=50, shape_range=(200, 200), psf_shapes=(41,))
    set_manifest_column(folder / "big" / "manifest.csv", "mask_radius", 6.0)
    config = yaml.safe_load(small.read_text())
    config["inputs"]["path"] = str(_merge_manifests(folder, ["small", "big"]))
    config["sparse_operator"]["batch_size"] = 1_000_000
    path = folder / "survey.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def tail_reference(tail_survey: Path, tmp_path_factory) -> Path:
    """The long-tail survey run on a LocalCluster of 2 workers: its store."""
    folder = tmp_path_factory.mktemp("slurm-tail-reference")
    done = _run(_config(tail_survey, folder, {"kind": "local", "n_workers": 2}, "local"), None)
    assert done.returncode == 0, done.stdout + done.stderr
    return folder / "local.zarr"


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


def _single_core_jobs(slurm: Slurm, folder: Path, **cluster) -> dict:
    """Jobs of one single-threaded worker each (two fit on the node); ``cluster``: ``jobs``,
    ``adapt``, ``start_timeout``."""
    options = {
        "cores": 1,
        "memory": "2GB",
        "queue": slurm.partition,
        "walltime": "00:05:00",
        "local_directory": str(folder / "scratch"),
        "log_directory": str(folder / "job-logs"),
    }
    return {"kind": "slurm", "start_timeout": 120, **cluster, "options": options}


def _run(config: Path, env: dict[str, str] | None) -> subprocess.CompletedProcess[str]:
    """``lenspipe run CONFIG --no-progress`` to the end, from the config's folder."""
    return run_cli(config, timeout=RUN_TIMEOUT, env=env, cwd=config.parent)


def _start(config: Path, env: dict[str, str]) -> subprocess.Popen:
    """``lenspipe run CONFIG --no-progress`` in the background, its output in
    ``driver.out``/``driver.err`` beside the config."""
    return start_run(config, config.parent, "driver", env=env, cwd=config.parent)


def _finish(driver: subprocess.Popen, folder: Path) -> str:
    """Wait for the driver to end (at most ``RUN_TIMEOUT``); its output."""
    try:
        driver.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"the run did not end within {RUN_TIMEOUT:g} s:\n{logs(folder, 'driver')}"
        ) from None
    return logs(folder, "driver")


def _running(slurm: Slurm) -> list[str]:
    """The jobs RUNNING in squeue, oldest first."""
    return sorted((job for job, state in slurm.jobs().items() if state == "RUNNING"), key=int)


def _job_logs(folder: Path) -> dict[str, str]:
    """The worker jobs' stderr (dask-jobqueue's ``dask-worker-<job id>.err``), by job id."""
    found = (folder / "job-logs").glob("dask-worker-*.err")
    return {p.stem.removeprefix("dask-worker-"): p.read_text(errors="replace") for p in found}


def test_the_cluster_runs_a_batch_job(slurm: Slurm, tmp_path):
    out = tmp_path / "hostname.out"
    job = slurm.command("sbatch", "--parsable", f"--output={out}", "--wrap", "hostname").strip()
    assert job.split(";")[0].isdigit(), job
    slurm.wait_for_no_jobs()
    assert out.read_text().strip().split(".")[0] == slurm.node


def test_survey_on_slurm_equals_local_run(slurm: Slurm, survey: Path, reference: Path, tmp_path):
    config = _config(survey, tmp_path, _slurm_cluster(slurm, tmp_path), "slurm")
    done = _run(config, slurm.env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert summary_counts(done.stdout)["complete (this run)"] == 4
    assert_stores_equal(tmp_path / "slurm.zarr", reference)
    slurm.wait_for_no_jobs()

    # the job's two workers joined the driver's scheduler, logging to the job's log folder, and
    # worked in the scratch folder (both temporary), and sbatch wrote nothing beside the config
    logs = list((tmp_path / "job-logs").glob("dask-worker-*.err"))
    assert len(logs) == 1, logs
    log = logs[0].read_text(errors="replace")
    assert log.count("Registered to:") == 2, log[-3000:]
    assert (tmp_path / "scratch" / "dask-scratch-space").is_dir()
    assert not list(tmp_path.glob("slurm-*.out"))


def test_adaptive_jobs_follow_the_work(slurm: Slurm, tail_survey: Path, tail_reference, tmp_path):
    """``adapt: {minimum: 0, maximum: 2}``: two jobs run at once while many tasks wait, and none
    is left after the run; the store equals the LocalCluster run's."""
    cluster = _single_core_jobs(slurm, tmp_path, adapt={"minimum": 0, "maximum": 2})
    config = _config(tail_survey, tmp_path, cluster)
    most_running = 0
    with owned(_start(config, {**slurm.env, **ADAPT_ENV})) as driver:
        deadline = time.monotonic() + RUN_TIMEOUT
        while driver.poll() is None and time.monotonic() < deadline:
            most_running = max(most_running, len(_running(slurm)))
            time.sleep(POLL)
        output = _finish(driver, tmp_path)
    assert driver.returncode == 0, output
    assert summary_counts(output)["complete (this run)"] == TAIL_SMALL + 1
    assert_stores_equal(tmp_path / "survey.zarr", tail_reference)
    assert most_running == 2, f"at most {most_running} job(s) RUNNING at once"
    slurm.wait_for_no_jobs()

    # the work ran on the jobs' workers. Whether the second job's worker registers before the
    # scaler releases it again depends on how fast a worker starts on a loaded machine (a clean
    # CI saw it released unregistered), so which worker was retired is not asserted
    registered = [job for job, log in _job_logs(tmp_path).items() if "Registered to:" in log]
    assert registered, "no job's worker joined the scheduler"


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


def _wait_for_progress(slurm: Slurm, driver, folder: Path, jobs: int, batches: int) -> None:
    """Wait until ``jobs`` worker jobs are RUNNING and ``batches`` operator batches written."""
    store = folder / "survey.zarr"

    def progressed() -> bool:
        return len(_running(slurm)) >= jobs and len(marker_files(store)) >= batches

    try:
        wait_for(progressed, JOB_TIMEOUT, f"{jobs} job(s) RUNNING, {batches} batches", driver, POLL)
    except AssertionError as err:
        raise AssertionError(f"{err}; squeue: {slurm.jobs()}\n{logs(folder, 'driver')}") from None


def test_a_cancelled_worker_job_is_survived(
    slurm: Slurm, tail_survey: Path, tail_reference: Path, tmp_path
):
    """Two worker jobs; once both run and a few batches are written, ``scancel`` one: its
    worker's tasks are computed again on the other, the run completes (exit 0) and the store
    equals the LocalCluster run's bit for bit."""
    config = _config(tail_survey, tmp_path, _single_core_jobs(slurm, tmp_path, jobs=2))
    with owned(_start(config, slurm.env)) as driver:
        _wait_for_progress(slurm, driver, tmp_path, jobs=2, batches=2)
        victim = _running(slurm)[-1]
        slurm.command("scancel", victim)
        output = _finish(driver, tmp_path)
    assert driver.returncode == 0, output
    counts = summary_counts(output)
    assert counts["complete (this run)"] == TAIL_SMALL + 1 and counts["failed"] == 0, output
    assert_stores_equal(tmp_path / "survey.zarr", tail_reference)
    assert f"JOB {victim} ON {slurm.node} CANCELLED" in _job_logs(tmp_path)[victim]
    slurm.wait_for_no_jobs()


def test_every_worker_job_cancelled_ends_the_run(
    slurm: Slurm, tail_survey: Path, tail_reference: Path, tmp_path
):
    """The only worker job cancelled mid-run (nothing submits another: ``jobs`` is fixed): the
    run ends after ``cluster.start_timeout`` with a message and exit 1, the lock released, no
    job left; a later run resumes the store to the LocalCluster run's result."""
    start_timeout = 10
    cluster = _single_core_jobs(slurm, tmp_path, jobs=1, start_timeout=start_timeout)
    config = _config(tail_survey, tmp_path, cluster)
    with owned(_start(config, slurm.env)) as driver:
        _wait_for_progress(slurm, driver, tmp_path, jobs=1, batches=1)
        slurm.command("scancel", *slurm.jobs())
        cancelled = time.monotonic()
        output = _finish(driver, tmp_path)
    waited = time.monotonic() - cancelled
    assert driver.returncode == 1, output
    assert (
        f"Stopped early: no Dask worker was alive for {start_timeout} s (cluster.start_timeout)"
        in output
    )
    assert "batch jobs still queued, cancelled (scancel, qdel)" in output
    assert f"Resume with: lenspipe run {config}" in output
    assert "Traceback" not in output
    assert start_timeout < waited < start_timeout + 30, waited
    assert summary_counts(output)["complete (this run)"] < TAIL_SMALL + 1
    assert read_lock(tmp_path / "survey.zarr") is None
    slurm.wait_for_no_jobs()

    resumed = _run(_config(tail_survey, tmp_path, {"kind": "local", "n_workers": 2}), None)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert summary_counts(resumed.stdout)["skipped (already complete)"] >= 1
    assert_stores_equal(tmp_path / "survey.zarr", tail_reference)


@pytest.mark.parametrize("scaling", [{"jobs": 1}, {"adapt": {"maximum": 2}}], ids=["jobs", "adapt"])
def test_failed_submission_ends_the_run(slurm: Slurm, survey: Path, tmp_path, scaling):
    """An unknown partition: exit 2 within seconds, quoting sbatch (it used to wait for
    ``start_timeout``), with a fixed number of jobs as under ``adapt`` (whose first job is
    submitted before the run starts); nothing left in squeue."""
    cluster = _slurm_cluster(slurm, tmp_path, queue="no-such-partition")
    del cluster["jobs"]
    cluster.update(scaling, start_timeout=3600)
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


def test_the_whole_run_inside_one_batch_job(slurm: Slurm, survey: Path, reference, tmp_path):
    """``lenspipe run`` itself submitted with ``sbatch`` (a LocalCluster of 2 workers in a job
    of 2 cores): the job's exit code is 0, its output holds the summary, and the store equals
    the one of a run outside SLURM. (Not ``sbatch --wait``: it looks at the job ever less
    often, up to every 32 s, and took 40 s for a run of 12.)"""
    config = _config(survey, tmp_path, {"kind": "local", "n_workers": 2})
    script = tmp_path / "lenspipe.sbatch"
    script.write_text(
        "#!/bin/bash\n"
        "#SBATCH --job-name=lenspipe\n"
        f"#SBATCH --partition={slurm.partition}\n"
        "#SBATCH --cpus-per-task=2\n"
        "#SBATCH --mem=4G\n"
        "#SBATCH --time=00:10:00\n"
        f"#SBATCH --output={tmp_path / 'lenspipe-%j.out'}\n"
        f"{LENSPIPE} run {config} --no-progress\n"
    )
    job = slurm.command("sbatch", "--parsable", str(script)).strip().split(";")[0]
    wait_for(lambda: job not in slurm.jobs(), RUN_TIMEOUT, f"job {job} to end", every=POLL)
    output = (tmp_path / f"lenspipe-{job}.out").read_text(errors="replace")
    # a finished job stays in slurmctld's memory for MinJobAge (300 s): no accounting needed
    state = slurm.command("scontrol", "show", "job", job)
    assert "JobState=COMPLETED" in state and "ExitCode=0:0" in state, state + output
    assert summary_counts(output)["complete (this run)"] == 4, output
    assert_stores_equal(tmp_path / "survey.zarr", reference)
