"""Isolation: damage or a store error confined to one dataset marks that dataset and the run goes
on. A torn ``datasets/<name>/zarr.json`` is prepared again, a missing operator metadata document
is found by ``--verify`` and repaired, manifest rows named like Zarr's own files are refused
alone, a full disk fails the datasets it hits (the summary is printed, the lock released), and
``lenspipe status`` lists everything it can read and names what it cannot."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.exc import DamagedDatasetError
from pipeline.io.store import list_datasets, open_imaging
from pipeline.mock import simulate_survey
from tests.reliability.support import assert_stores_equal, read_lock, summary_counts

pytestmark = pytest.mark.timeout(400)


def _append_rows(manifest: Path, names: list[str]) -> None:
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for name in names:
        rows.append({**rows[0], "name": name})
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _small_survey(folder: Path, n: int = 4) -> Path:
    config = simulate_survey(
        folder, n, seed=80, shape_range=(40, 40), psf_shapes=(5,), batch_size=200, n_workers=1
    )
    data = yaml.safe_load(config.read_text())
    data["run"] = {**data.get("run", {}), "progress": False}
    config.write_text(yaml.safe_dump(data))
    return config


def test_damage_in_one_dataset_stays_in_that_dataset(tmp_path, capsys):
    config = _small_survey(tmp_path)
    store = tmp_path / "survey.zarr"
    assert main(["run", str(config)]) == 0
    pristine = tmp_path / "pristine.zarr"
    shutil.copytree(store, pristine)
    capsys.readouterr()

    # lens_00080: torn group document; lens_00081: its operator's metadata document is gone
    torn = store / "datasets" / "lens_00080" / "zarr.json"
    torn.write_bytes(torn.read_bytes()[: len(torn.read_bytes()) // 2])
    (store / "datasets" / "lens_00081" / "sparse_operator" / "zarr.json").unlink()
    # two rows whose names collide with Zarr's own files
    _append_rows(tmp_path / "manifest.csv", ["zarr.json", "C"])

    # status lists what it can read and names what it cannot
    assert main(["status", str(store)]) == 0
    out = capsys.readouterr().out
    assert "4 datasets" in out and "lens_00080: damaged" in out, out
    statuses = list_datasets(store)
    assert statuses["lens_00080"] == "damaged" and statuses["lens_00082"] == "complete"
    # reads name the dataset, the node and the repair
    with pytest.raises(DamagedDatasetError, match=r"lens_00081.*sparse_operator.*--verify"):
        open_imaging(store, "lens_00081")

    # a plain re-run: the torn dataset is prepared again, the reserved names fail alone (exit 3)
    assert main(["run", str(config)]) == 3
    out = capsys.readouterr().out
    counts = summary_counts(out)
    assert counts["damaged (prepared again)"] == 1 and counts["failed"] == 2, out
    assert "zarr.json: " in out and "C: " in out and "reserved" in out
    assert list_datasets(store)["lens_00080"] == "complete"
    # --verify finds the missing operator document and repairs it
    assert main(["run", str(config), "--verify"]) == 3
    counts = summary_counts(capsys.readouterr().out)
    assert counts["damaged (prepared again)"] == 1 and counts["failed"] == 2
    assert set(list_datasets(store).values()) == {"complete"}
    assert_stores_equal(store, pristine)
    assert not (store / "datasets" / "zarr.json" / "data").exists()
    json.loads((store / "datasets" / "zarr.json").read_text())  # the group's own document


@pytest.fixture
def tiny_disk(tmp_path):
    """A 3 MiB tmpfs (a real full disk: ENOSPC from the kernel)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", os.fspath(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root with CAP_SYS_ADMIN: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", os.fspath(mount)], check=False)


def test_a_full_disk_fails_the_datasets_it_hits_and_the_run_ends_with_a_summary(
    tmp_path, tiny_disk, capsys
):
    config = _small_survey(tmp_path / "in", n=12)
    data = yaml.safe_load(config.read_text())
    data["output"]["store"] = os.fspath(tiny_disk / "survey.zarr")
    config.write_text(yaml.safe_dump(data))
    code = main(["run", str(config)])
    captured = capsys.readouterr()
    out = captured.out
    counts = summary_counts(out)
    assert code == 3, out + captured.err
    assert counts["datasets"] == 12
    assert 0 < counts["failed"] < 12 and counts["complete (this run)"] == 12 - counts["failed"]
    assert "No space left on device" in out
    assert "Traceback" not in captured.err
    store = tiny_disk / "survey.zarr"
    assert read_lock(store) is None
    # status still works; what it reports complete opens and reads whole
    assert main(["status", os.fspath(store)]) == 0
    capsys.readouterr()
    complete = [name for name, state in list_datasets(store).items() if state == "complete"]
    assert len(complete) == 12 - counts["failed"]
    for name in complete:
        open_imaging(store, name).sparse_operator.values[...]
