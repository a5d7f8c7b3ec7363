"""Wrong values are never stored as "complete" (issue 11, scope 2): real survey runs, one worker
process, real FITS files and a real Zarr store.

* ``sparse_operator.dtype: float32`` with a noise map in physical flux units (sigma ~ 1e-21: W ~
  1e42, beyond float32's 3.4e38) used to store inf in 11-34% of W; sigma = 1e-200 gave inf/NaN
  weights and sigma = 1e300 all-zero W, every one "complete", exit 0. Now each fails alone with
  the cause and the remedy in its error (the noise ones naming their files), a lens whose noise
  is out of float32's range only in its last rows fails from the operator batch that overflows,
  the good lens completes within the documented float32 bound, and the run exits 3.
* The same physical-units lens with ``dtype: float64`` completes, its W finite and equal to the
  brute force to 1e-12 of ``sqrt(W_ii W_jj)``.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import zarr

from pipeline.cli import main
from pipeline.io.fits import read_fits_array, write_fits_array
from pipeline.io.store import dataset_attrs, list_datasets, open_imaging, open_operator
from pipeline.mock import simulate_survey
from pipeline.operators.reference import sparse_operator_dense
from tests.reliability.support import write_config

SHAPE, PSF, RADIUS, BATCH = 48, 11, 1.0, 64  # ~314 unmasked pixels, 5 operator batches


class Lenses:
    """One simulated lens, and variants of it written as separate datasets."""

    def __init__(self, folder: Path):
        simulate_survey(folder / "sim", 1, seed=3, shape_range=(SHAPE, SHAPE), psf_shapes=(PSF,))
        sim = folder / "sim" / "lens_00003"
        self.data = read_fits_array(sim / "data.fits")
        self.noise = read_fits_array(sim / "noise_map.fits")
        self.psf = read_fits_array(sim / "psf.fits")
        self.folder = folder
        self.rows: list[dict[str, str]] = []

    def add(self, name: str, data: np.ndarray, noise: np.ndarray) -> dict[str, str]:
        row = {"name": name}
        for role, array in (("data", data), ("noise_map", noise), ("psf", self.psf)):
            path = self.folder / "inputs" / name / f"{role}.fits"
            write_fits_array(path, array)
            row[role] = str(path)
        self.rows.append(row)
        return row

    def manifest(self, label: str) -> Path:
        path = self.folder / f"{label}.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["name", "data", "noise_map", "psf"])
            writer.writeheader()
            writer.writerows(self.rows)
        return path


def _run(lenses: Lenses, label: str, dtype: str, capsys) -> tuple[int, str, Path]:
    store = lenses.folder / f"{label}.zarr"
    config = write_config(
        lenses.folder / f"{label}.yaml",
        lenses.manifest(label),
        store,
        n_workers=1,
        mask={"kind": "circular", "radius": RADIUS},
        sparse_operator={"backend": "numpy", "batch_size": BATCH, "dtype": dtype},
    )
    capsys.readouterr()
    code = main(["run", str(config), "--no-progress"])
    return code, capsys.readouterr().out, store


def _failures(stdout: str) -> dict[str, str]:
    assert "Failures:" in stdout, stdout
    out = {}
    for line in stdout[stdout.index("Failures:") :].splitlines()[1:]:
        match = re.match(r"^  (\S+?): (.*)$", line)
        if match:
            out.setdefault(match.group(1), match.group(2))
    return out


def _all_operator_values_finite(store: Path) -> dict[str, int]:
    """Every stored operator value of every dataset is finite; returns each dataset's count of
    values read."""
    datasets = zarr.open_group(store, mode="r")["datasets"]
    counts = {}
    for name in sorted(datasets.group_keys()):
        if "sparse_operator" in datasets[name]:
            values = datasets[name]["sparse_operator"]["values"][...]
            assert np.all(np.isfinite(values)), name
            counts[name] = values.size
    return counts


def _normalised_difference(store: Path, name: str, row: dict[str, str]) -> float:
    """max |W_stored - W_brute| / sqrt(W_ii W_jj), the brute force computed from the input FITS
    files (PSF normalised, as the pipeline uses it) over the dataset's stored mask."""
    mask = np.asarray(open_imaging(store, name).mask)
    kernel = read_fits_array(row["psf"])
    exact = sparse_operator_dense(mask, kernel / kernel.sum(), read_fits_array(row["noise_map"]))
    got = open_operator(store, name).to_dense()
    diagonal = np.sqrt(np.diag(exact))
    assert np.all(np.isfinite(got))
    return float((np.abs(got - exact) / np.outer(diagonal, diagonal)).max())


def test_values_out_of_range_fail_alone_and_complete_means_correct(tmp_path, capsys):
    lenses = Lenses(tmp_path)
    data, noise = lenses.data, lenses.noise
    good = lenses.add("good", data, noise)
    flux = lenses.add("physical_flux", data * 1e-21, noise * 1e-21)
    tiny = lenses.add("noise_1e-200", data * 1e-200, np.full_like(noise, 1e-200))
    huge = lenses.add("noise_1e300", data * 1e300, np.full_like(noise, 1e300))
    # out of float32's range only in the bottom rows: batch 0 (computed by the prepare task) is
    # fine, a later operator batch overflows
    hot_data, hot_noise = data.copy(), noise.copy()
    hot_data[SHAPE // 2 + 6 :] *= 1e-21
    hot_noise[SHAPE // 2 + 6 :] *= 1e-21
    lenses.add("hot_rows", hot_data, hot_noise)

    code, stdout, store = _run(lenses, "float32", "float32", capsys)
    assert code == 3, stdout
    failures = _failures(stdout)
    statuses = list_datasets(store)
    assert statuses["good"] == "complete" and set(failures) == set(statuses) - {"good"}, stdout
    for name in failures:
        assert statuses[name] == "failed", name
        assert dataset_attrs(store, name)["error"] in failures[name] or (
            failures[name] in dataset_attrs(store, name)["error"]
        )

    # sigma ~ 1e-21: the float32 cast overflows; remedy: a factor that brings every unmasked
    # sigma into the documented safe range, or float64
    n_unmasked = int((~np.asarray(open_imaging(store, "good").mask)).sum())
    error = dataset_attrs(store, "physical_flux")["error"]
    assert "float32 storage overflows" in error and "diagonal W_ii in this batch from" in error
    factor = float(re.search(r"multiply both by one factor, e\.g\. (1e[+-]\d+)", error)[1])
    sigma = noise[~np.asarray(open_imaging(store, "good").mask)] * 1e-21
    assert 1e-19 <= (sigma * factor).min() and (sigma * factor).max() <= 1e15, factor
    assert "safe for 1e-19 <= sigma <= 1e+15" in error
    assert "sparse_operator.dtype: float64" in error
    # 1/sigma**2 overflows (1e-200) or underflows (1e300) float64: refused at prepare, with files
    for row, factor in ((tiny, "1e+200"), (huge, "1e-300")):
        error = dataset_attrs(store, row["name"])["error"]
        assert "1/sigma**2 is not a finite normal float64" in error, error
        assert f"at {n_unmasked} unmasked pixel(s)" in error
        assert "first: row" in error and f"multiply both by {factor}" in error
        assert "mask those pixels" in error
        assert row["noise_map"] in error and row["data"] in error
    error = dataset_attrs(store, "hot_rows")["error"]
    assert re.search(r"operator batch [1-9]", error) and "overflows" in error, error

    # no inf/NaN anywhere in the stored operator values (the failed lenses' written batches too)
    counts = _all_operator_values_finite(store)
    assert counts["good"] > 0
    # complete means correct: the good lens within 2**-24 sqrt(W_ii W_jj) of the brute force
    assert dataset_attrs(store, "good")["status"] == "complete"
    assert open_operator(store, "good").dtype == np.float32
    assert _normalised_difference(store, "good", good) <= 2.0**-24 + 1e-12

    # the same physical-units lens stored as float64 completes, equal to the brute force
    lenses.rows = [flux]
    code, stdout, store = _run(lenses, "float64", "float64", capsys)
    assert code == 0, stdout
    assert list_datasets(store) == {"physical_flux": "complete"}
    assert open_operator(store, "physical_flux").dtype == np.float64
    _all_operator_values_finite(store)
    assert _normalised_difference(store, "physical_flux", flux) <= 1e-12
