"""Shared pieces of the reliability tests: surveys on disk, configs, ``lenspipe`` subprocesses,
store comparison and clean-up of the processes a test started (by pid, never by name)."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psutil
import yaml
import zarr

from pipeline.mock import simulate_survey

LENSPIPE = str(Path(sys.executable).with_name("lenspipe"))

# The "busy" survey: real work that lasts a few seconds on two workers (8 lenses, 140x140, 21x21
# PSF, radius 6" -> ~11,300 unmasked pixels each, 23 batches of 500 rows: 184 operator tasks,
# ~500 MB of operator values), so that a worker or the driver can be killed mid-run.
BUSY_N, BUSY_SHAPE, BUSY_PSF, BUSY_RADIUS, BUSY_BATCH = 8, 140, 21, 6.0, 500


def set_manifest_column(manifest: Path, column: str, value) -> None:
    """Set one column of every row of a manifest CSV."""
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row[column] = str(value)
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def make_busy_inputs(folder: Path) -> Path:
    """Write the busy survey's FITS files and manifest; returns the manifest."""
    simulate_survey(
        folder,
        BUSY_N,
        seed=11,
        shape_range=(BUSY_SHAPE, BUSY_SHAPE),
        psf_shapes=(BUSY_PSF,),
        batch_size=BUSY_BATCH,
    )
    manifest = folder / "manifest.csv"
    set_manifest_column(manifest, "mask_radius", BUSY_RADIUS)
    return manifest


def write_config(
    path: Path,
    manifest: Path,
    store: Path,
    *,
    n_workers: int = 2,
    batch_size: int | str = BUSY_BATCH,
    mask: dict | None = None,
    **sections,
) -> Path:
    """A survey config over ``manifest`` writing ``store`` (absolute paths), local cluster of
    ``n_workers``; ``sections`` replace whole top-level sections."""
    config = {
        "inputs": {"kind": "manifest", "path": str(manifest)},
        "pixel_scales": 0.1,
        "mask": mask or {"kind": "circular", "radius": 3.0},
        "over_sampling": {"kind": "uniform", "lp": 4, "pixelization": 4},
        "sparse_operator": {"backend": "numpy", "batch_size": batch_size, "dtype": "float64"},
        "output": {"store": str(store)},
        "cluster": {"kind": "local", "n_workers": n_workers},
        "run": {"retries": 2, "max_tasks_in_flight": 64, "progress": False},
    }
    config.update(sections)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------- store
def marker_files(store: Path) -> list[Path]:
    """The completion-marker chunk files present in a local store (one per finished batch).

    Only chunk files (named by their batch index): Zarr writes each chunk to a temporary
    ``<index>.<uuid>.partial`` file beside it and then renames it, and a worker that dies between
    the two (a worker process ends with ``os._exit`` as soon as its driver is gone) leaves that
    file behind; it is no marker (Zarr never reads it)."""
    found = store.glob("datasets/*/sparse_operator/batches_done/c/*")
    return [path for path in found if path.name.isdigit()]


def total_batches(store: Path) -> int:
    root = zarr.open_group(store, mode="r")
    datasets = root["datasets"]
    return sum(
        int(datasets[name]["sparse_operator"].attrs["n_batches"])
        for name in datasets.group_keys()
        if "sparse_operator" in datasets[name]
    )


def _arrays(group: zarr.Group, prefix: str = "") -> Iterator[tuple[str, zarr.Array]]:
    for key, node in sorted(group.members(), key=lambda item: item[0]):
        if isinstance(node, zarr.Group):
            yield from _arrays(node, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", node


COMPARED_ATTRS = ("status", "shape_native", "pixel_scales", "n_pixels", "psf_shape")


def assert_stores_equal(store: Path, reference: Path) -> None:
    """Every dataset complete in both, same arrays (bit for bit: compared as raw bytes), same
    descriptive attributes, same operator chunking."""
    got = zarr.open_group(store, mode="r")["datasets"]
    want = zarr.open_group(reference, mode="r")["datasets"]
    assert sorted(got.group_keys()) == sorted(want.group_keys())
    for name in sorted(want.group_keys()):
        assert got[name].attrs["status"] == "complete", (name, dict(got[name].attrs))
        for key in COMPARED_ATTRS:
            assert got[name].attrs[key] == want[name].attrs[key], (name, key)
        assert dict(got[name]["sparse_operator"].attrs) == dict(want[name]["sparse_operator"].attrs)
        got_arrays, want_arrays = dict(_arrays(got[name])), dict(_arrays(want[name]))
        assert sorted(got_arrays) == sorted(want_arrays), name
        for key, array in want_arrays.items():
            a, b = got_arrays[key][...], array[...]
            assert a.dtype == b.dtype and a.shape == b.shape, (name, key)
            # bytes, not values: bit for bit (and NaN-safe)
            assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes(), (
                f"dataset {name}: array {key} differs from the undisturbed run"
            )


def summary_counts(stdout: str) -> dict[str, int]:
    """The integer rows of a run summary table, by label."""
    counts = {}
    for line in stdout.splitlines():
        match = re.match(r"^\s+(\S.*?)\s{2,}(\d+)$", line)
        if match:
            counts[match.group(1)] = int(match.group(2))
    return counts


def read_lock(store: Path) -> dict | None:
    path = store / "lenspipe.lock"
    return json.loads(path.read_text()) if path.exists() else None


# ---------------------------------------------------------------------------------------- processes
def start_run(config: Path, log_dir: Path, label: str, *extra: str, **popen) -> subprocess.Popen:
    """``lenspipe run CONFIG --no-progress`` as a subprocess, output to files in ``log_dir``
    (``popen``: e.g. ``env``, ``cwd``)."""
    out = open(log_dir / f"{label}.out", "w")
    err = open(log_dir / f"{label}.err", "w")
    try:
        return subprocess.Popen(
            [LENSPIPE, "run", str(config), "--no-progress", *extra],
            stdout=out,
            stderr=err,
            **popen,
        )
    finally:
        out.close()
        err.close()


def run_cli(
    config: Path, *extra: str, timeout: float = 240, **popen
) -> subprocess.CompletedProcess:
    """``lenspipe run CONFIG --no-progress`` to completion (``popen``: e.g. ``env``, ``cwd``)."""
    return subprocess.run(
        [LENSPIPE, "run", str(config), "--no-progress", *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def logs(log_dir: Path, label: str) -> str:
    return (log_dir / f"{label}.out").read_text() + (log_dir / f"{label}.err").read_text()


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                out.append(process)
        except psutil.NoSuchProcess:
            pass
    return out


def reap(processes: list[psutil.Process], timeout: float = 20.0) -> list[int]:
    """Wait up to ``timeout`` s for ``processes`` to end by themselves, then SIGKILL each one
    still running (by pid); returns the pids that had to be killed."""
    deadline = time.monotonic() + timeout
    while alive(processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    killed = []
    for process in alive(processes):
        try:
            process.send_signal(signal.SIGKILL)
            killed.append(process)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(killed, timeout=10)
    return [process.pid for process in killed]


@contextmanager
def owned(process: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """Whatever happens in the block, ``process`` and every process it started end with it."""
    tree: list[psutil.Process] = []
    try:
        yield process
    finally:
        if process.poll() is None:
            tree = descendants(process.pid)
            process.kill()
        process.wait(timeout=30)
        reap(tree, timeout=5)


def wait_for(
    condition,
    timeout: float,
    what: str,
    process: subprocess.Popen | None = None,
    every: float = 0.02,
):
    """Poll ``condition()`` every ``every`` seconds until it is truthy; fail after ``timeout`` s
    or when ``process`` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended (exit {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)
