"""Inputs that changed: every run compares the size and mtime recorded for each input file of a
prepared or complete dataset (then its sha256 when those differ), and its per-dataset settings (a
manifest's mask_radius, ...); a dataset whose inputs changed is prepared again from the new files
and counted; a file only touched (same bytes) is not."""

from __future__ import annotations

import csv
import os
import shutil

import numpy as np
import pytest

from pipeline.flow.cluster import cluster_client
from pipeline.flow.config import LocalClusterConfig, load_config
from pipeline.flow.run import run_survey
from pipeline.imaging import Mask2D
from pipeline.io.fits import read_fits_array, write_fits_array
from pipeline.io.store import dataset_attrs, open_imaging
from pipeline.mock import simulate_survey

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def client():
    with cluster_client(LocalClusterConfig(n_workers=1)) as client:
        yield client


def _survey(folder):
    return load_config(
        simulate_survey(folder, 3, seed=40, shape_range=(40, 40), psf_shapes=(5,), n_workers=1)
    )


def _rows(manifest):
    with open(manifest, newline="") as handle:
        return list(csv.DictReader(handle))


def _write_rows(manifest, rows):
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_a_replaced_noise_map_is_prepared_again_and_counted(tmp_path, client):
    config = _survey(tmp_path)
    first = run_survey(config, client=client, progress=False)
    assert first.exit_code == 0 and first.complete == 3
    store = config.store_location
    before = {name: dataset_attrs(store, name)["token"] for name in ("lens_00040", "lens_00041")}
    old_operator = open_imaging(store, "lens_00041").sparse_operator.values[...]

    # lens_00041: a new noise map (twice the noise), same size, same path
    noise_path = tmp_path / "lens_00041" / "noise_map.fits"
    noise = read_fits_array(noise_path)
    write_fits_array(noise_path, 2.0 * noise, overwrite=True)
    # lens_00040: touched only (new mtime, same bytes): not prepared again
    data_path = tmp_path / "lens_00040" / "data.fits"
    stat = data_path.stat()
    os.utime(data_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))

    second = run_survey(config, client=client, progress=False)
    assert second.exit_code == 0, second.table()
    assert second.changed_inputs == 1 and second.complete == 1
    assert second.skipped_complete == 2
    assert "changed inputs (prepared again)" in second.table()
    assert dataset_attrs(store, "lens_00040")["token"] == before["lens_00040"]
    assert dataset_attrs(store, "lens_00041")["token"] != before["lens_00041"]
    # the stored dataset is the new one: noise from the new file, W = 1/4 of the old one
    imaging = open_imaging(store, "lens_00041")
    unmasked = ~np.asarray(imaging.mask)
    np.testing.assert_array_equal(
        imaging.noise_map.native[unmasked], 2.0 * noise.astype(np.float64)[unmasked]
    )
    np.testing.assert_allclose(
        imaging.sparse_operator.values[...], old_operator / 4.0, rtol=1e-13, atol=0
    )
    recorded = {s["role"]: s for s in dataset_attrs(store, "lens_00041")["sources"]}
    assert recorded["noise_map"]["size"] == noise_path.stat().st_size
    assert recorded["noise_map"]["mtime_ns"] == noise_path.stat().st_mtime_ns

    # and nothing changed since: the next run skips everything, reading no pixel
    third = run_survey(config, client=client, progress=False)
    assert (third.changed_inputs, third.skipped_complete, third.complete) == (0, 3, 0)


def test_a_manifest_pointing_at_other_files_prepares_the_dataset_again(tmp_path, client):
    config = _survey(tmp_path)
    assert run_survey(config, client=client, progress=False).exit_code == 0
    # lens_00042's PSF is now a copy elsewhere (same bytes, other path): other inputs
    manifest = tmp_path / "manifest.csv"
    rows = _rows(manifest)
    moved = tmp_path / "psfs" / "lens_00042.fits"
    moved.parent.mkdir()
    shutil.copy(tmp_path / rows[2]["psf"], moved)
    rows[2]["psf"] = os.fspath(moved)
    _write_rows(manifest, rows)
    summary = run_survey(config, client=client, progress=False)
    assert (summary.changed_inputs, summary.complete, summary.skipped_complete) == (1, 1, 2)
    sources = {
        s["role"]: s["path"] for s in dataset_attrs(config.store_location, "lens_00042")["sources"]
    }
    assert sources["psf"] == os.fspath(moved)


def test_an_edited_manifest_mask_radius_prepares_the_dataset_again(tmp_path, client):
    """A manifest's per-dataset settings are recorded with each dataset (``overrides``): a
    complete dataset whose row now says another mask_radius is not kept with the old mask."""
    config = _survey(tmp_path)
    assert run_survey(config, client=client, progress=False).exit_code == 0
    store = config.store_location
    manifest = tmp_path / "manifest.csv"
    rows = _rows(manifest)
    old = float(rows[1]["mask_radius"])
    assert dataset_attrs(store, "lens_00041")["overrides"] == {"mask_radius": old}
    before = open_imaging(store, "lens_00041").mask
    rows[1]["mask_radius"] = str(old - 0.5)
    _write_rows(manifest, rows)

    second = run_survey(config, client=client, progress=False)
    assert (second.changed_inputs, second.complete, second.skipped_complete) == (1, 1, 2)
    assert dataset_attrs(store, "lens_00041")["overrides"] == {"mask_radius": old - 0.5}
    after = open_imaging(store, "lens_00041").mask
    want = Mask2D.circular(
        shape_native=after.shape_native, pixel_scales=after.pixel_scales, radius=old - 0.5
    )
    np.testing.assert_array_equal(np.asarray(after), np.asarray(want))
    assert after.pixels_in_mask < before.pixels_in_mask
    # unchanged since: skipped
    third = run_survey(config, client=client, progress=False)
    assert (third.changed_inputs, third.skipped_complete) == (0, 3)


def test_a_deleted_input_of_a_complete_dataset_is_reported_not_ignored(tmp_path, client):
    config = _survey(tmp_path)
    assert run_survey(config, client=client, progress=False).exit_code == 0
    (tmp_path / "lens_00040" / "psf.fits").unlink()
    summary = run_survey(config, client=client, progress=False)
    # it is prepared again from its inputs, and that fails naming the missing file
    assert summary.changed_inputs == 1 and summary.failed == 1 and summary.exit_code == 3
    (failure,) = summary.failures
    assert failure["name"] == "lens_00040" and "psf.fits" in failure["message"]
