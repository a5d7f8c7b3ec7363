"""A store written before the store package split (main at d261856, `lenspipe run` on two mock
lenses, float64, three over-sampling/mask settings from ``survey.yaml``) opens unchanged after it:
``tests/data/store_d261856/`` holds the inputs, the config and the store as written then.

Every dataset reads back, checks clean, and equals what the in-memory API computes today from
the same FITS files (W against the dense brute force to 1e-12); ``status`` lists both complete;
a rerun over a copy writes the same values again (W to 1e-12: BLAS rounds by CPU).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.imaging import Imaging, Mask2D
from pipeline.io.store import check_dataset, dataset_attrs, list_datasets, open_imaging
from pipeline.operators.reference import sparse_operator_dense

LEGACY = Path(__file__).resolve().parents[2] / "data" / "store_d261856"
PIXEL_SCALE = 0.1


@pytest.fixture
def survey(tmp_path: Path) -> Path:
    """A copy of the legacy survey (inputs, config, store): tests never write to tests/data."""
    target = tmp_path / "survey"
    shutil.copytree(LEGACY, target)
    return target


def _manifest(folder: Path) -> list[dict[str, str]]:
    with open(folder / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_legacy_store_lists_and_checks_clean(survey: Path) -> None:
    store = survey / "survey.zarr"
    assert list_datasets(store) == {"lens_00003": "complete", "lens_00004": "complete"}
    for name in ("lens_00003", "lens_00004"):
        check = check_dataset(store, name)
        assert check.ok, check.problems
        attrs = dataset_attrs(store, name)
        assert attrs["status"] == "complete"
        assert attrs["check_noise_map"] is True


def test_legacy_store_values_equal_todays_computation(survey: Path) -> None:
    store = survey / "survey.zarr"
    for row in _manifest(survey):
        name = row["name"]
        stored = open_imaging(store, name)
        expected = Imaging.from_fits(
            data_path=survey / row["data"],
            noise_map_path=survey / row["noise_map"],
            psf_path=survey / row["psf"],
            pixel_scales=PIXEL_SCALE,
        )
        mask = Mask2D.circular(
            shape_native=expected.data.shape_native,
            pixel_scales=PIXEL_SCALE,
            radius=float(row["mask_radius"]),
        )
        expected = expected.apply_mask(mask).apply_over_sampling(
            over_sample_size_lp=4, over_sample_size_pixelization=4
        )
        np.testing.assert_array_equal(stored.mask, expected.mask)
        np.testing.assert_array_equal(stored.data.native, expected.data.native)
        np.testing.assert_array_equal(stored.noise_map.native, expected.noise_map.native)
        np.testing.assert_array_equal(stored.psf.kernel.native, expected.psf.kernel.native)
        np.testing.assert_array_equal(
            np.asarray(stored.grids.lp.over_sample_size),
            np.asarray(expected.grids.lp.over_sample_size),
        )
        operator = stored.sparse_operator
        assert operator is not None
        dense = operator.to_dense()
        brute = sparse_operator_dense(
            np.asarray(expected.mask),
            np.asarray(expected.psf.kernel.native),
            expected.noise_map.native,
        )
        scale = np.sqrt(np.outer(np.diag(brute), np.diag(brute)))
        assert np.max(np.abs(dense - brute) / scale) < 1e-12


def test_legacy_store_rerun_writes_the_same_numbers(survey: Path, capsys, monkeypatch) -> None:
    """The store records absolute input paths, so in its copied folder every input counts as
    changed: today's run prepares both datasets again, and writes exactly the old values."""
    monkeypatch.chdir(survey)
    store = survey / "survey.zarr"
    before = {}
    for name in ("lens_00003", "lens_00004"):
        old = open_imaging(store, name)
        assert old.sparse_operator is not None
        before[name] = (old.data.native.copy(), old.sparse_operator.to_dense())
    assert main(["status", "survey.zarr", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "lens_00003": "complete",
        "lens_00004": "complete",
    }
    code = main(["run", "survey.yaml", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert _summary_value(out, "changed inputs (prepared again)") == 2
    for name, (data, dense) in before.items():
        new = open_imaging(store, name)
        np.testing.assert_array_equal(new.data.native, data)
        assert new.sparse_operator is not None
        # W's products go through BLAS, whose kernels (and so the last bit of a sum) depend on
        # the CPU it runs on: the same to 1e-12 of each entry's scale, not bit for bit
        scale = np.sqrt(np.outer(np.diag(dense), np.diag(dense)))
        assert np.max(np.abs(new.sparse_operator.to_dense() - dense) / scale) < 1e-12


def _summary_value(stdout: str, label: str) -> int:
    for line in stdout.splitlines():
        if line.strip().startswith(label):
            return int(line.split()[-1])
    raise AssertionError(f"{label!r} not in the summary:\n{stdout}")
