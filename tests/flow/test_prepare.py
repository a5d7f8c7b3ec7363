"""Config + dataset spec -> Imaging, on its own (no Dask, no store): every mask kind, the manifest's
per-dataset mask radius, every over-sampling kind, each equal to the same dataset built directly
with the in-memory API (``Imaging.from_fits(...).apply_mask(...).apply_over_sampling(...)``)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from pipeline.exc import DatasetError
from pipeline.flow.config import config_from_dict
from pipeline.flow.discover import discover
from pipeline.flow.prepare import PrepareSettings, prepare_imaging
from pipeline.imaging import (
    Imaging,
    Mask2D,
    over_sample_size_via_adapt_from,
    over_sample_size_via_radial_bins_from,
)
from pipeline.mock import simulate_survey

SCALE = 0.1  # arcsec per pixel
SHAPE = (40, 40)


@pytest.fixture(scope="module")
def survey(tmp_path_factory) -> Path:
    """One mock lens (40x40 pixels, 5x5 PSF) in ``lens_*/``, with a manifest whose
    ``mask_radius`` column is 1.7 arcsec."""
    folder = tmp_path_factory.mktemp("survey")
    simulate_survey(folder, 1, seed=5, shape_range=SHAPE, psf_shapes=(5,))
    return folder


@pytest.fixture(scope="module")
def lens(survey) -> Path:
    (found,) = survey.glob("lens_*")
    return found


@pytest.fixture(scope="module")
def unmasked(lens) -> Imaging:
    """The lens read with the in-memory API, nothing masked yet."""
    return Imaging.from_fits(
        SCALE,
        lens / "data.fits",
        lens / "noise_map.fits",
        psf_path=lens / "psf.fits",
    )


def _prepared(survey: Path, inputs: dict | None = None, **sections) -> Imaging:
    """``prepare_imaging`` of the survey's one dataset under a config of ``sections``."""
    config = config_from_dict(
        {
            "inputs": inputs or {"kind": "folders", "root": str(survey), "pattern": "lens_*"},
            "pixel_scales": SCALE,
            "output": {"store": "survey.zarr"},
            **sections,
        },
        base_dir=survey,
    )
    found = discover(config)
    assert found.problems == []
    (spec,) = found.specs
    return prepare_imaging(spec, PrepareSettings.from_config(config))


def assert_same(got: Imaging, want: Imaging) -> None:
    """Same pixels, mask, PSF, grid and over-sampling, value for value."""
    np.testing.assert_array_equal(np.asarray(got.mask), np.asarray(want.mask))
    assert got.shape_slim == want.shape_slim > 0
    np.testing.assert_array_equal(got.data.native, want.data.native)
    np.testing.assert_array_equal(got.noise_map.native, want.noise_map.native)
    np.testing.assert_array_equal(got.psf.kernel.native, want.psf.kernel.native)
    np.testing.assert_array_equal(np.asarray(got.grid), np.asarray(want.grid))
    for sizes in ("over_sample_size_lp", "over_sample_size_pixelization"):
        np.testing.assert_array_equal(
            np.asarray(getattr(got, sizes)), np.asarray(getattr(want, sizes))
        )
    assert got.pixel_scales == want.pixel_scales == (SCALE, SCALE)


UNIFORM = {"kind": "uniform", "lp": 2, "pixelization": 3}


# ---------------------------------------------------------------------------------------- masks
def test_circular_mask(survey, unmasked):
    got = _prepared(
        survey,
        mask={"kind": "circular", "radius": 1.2, "centre": [0.1, -0.2]},
        over_sampling=UNIFORM,
    )
    mask = Mask2D.circular(shape_native=SHAPE, pixel_scales=SCALE, radius=1.2, centre=(0.1, -0.2))
    assert_same(got, unmasked.apply_mask(mask).apply_over_sampling(2, 3))
    # pixels within 1.2" of the centre: about pi * 12**2
    assert 400 < got.shape_slim < 500
    assert np.all(np.asarray(got.over_sample_size_lp) == 2)


def test_annular_mask(survey, unmasked):
    got = _prepared(
        survey,
        mask={"kind": "annular", "inner_radius": 0.4, "outer_radius": 1.5},
        over_sampling=UNIFORM,
    )
    mask = Mask2D.circular_annular(
        shape_native=SHAPE, pixel_scales=SCALE, inner_radius=0.4, outer_radius=1.5
    )
    assert_same(got, unmasked.apply_mask(mask).apply_over_sampling(2, 3))
    assert bool(np.asarray(got.mask)[20, 20])  # the centre is inside the hole


def test_elliptical_mask(survey, unmasked):
    got = _prepared(
        survey,
        mask={"kind": "elliptical", "major_axis_radius": 1.6, "axis_ratio": 0.5, "angle": 30.0},
        over_sampling=UNIFORM,
    )
    mask = Mask2D.elliptical(
        shape_native=SHAPE, pixel_scales=SCALE, major_axis_radius=1.6, axis_ratio=0.5, angle=30.0
    )
    assert_same(got, unmasked.apply_mask(mask).apply_over_sampling(2, 3))


def test_file_mask(survey, lens, unmasked, tmp_path):
    folder = tmp_path / lens.name
    shutil.copytree(lens, folder)
    masked = np.ones(SHAPE, dtype=np.uint8)
    masked[10:30, 12:25] = 0  # non-zero = masked
    fits.PrimaryHDU(masked).writeto(folder / "mask.fits")
    inputs = {"kind": "folders", "root": str(tmp_path), "pattern": "lens_*", "mask": "mask.fits"}
    got = _prepared(tmp_path, inputs, mask={"kind": "file"}, over_sampling=UNIFORM)
    mask = Mask2D.from_fits(folder / "mask.fits", SCALE)
    assert_same(got, unmasked.apply_mask(mask).apply_over_sampling(2, 3))
    assert got.shape_slim == 20 * 13


def test_manifest_mask_radius_overrides_the_config(survey, unmasked):
    with open(survey / "manifest.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert float(row["mask_radius"]) == 1.7
    inputs = {"kind": "manifest", "path": str(survey / "manifest.csv")}
    got = _prepared(survey, inputs, mask={"kind": "circular", "radius": 3.0}, over_sampling=UNIFORM)
    mask = Mask2D.circular(shape_native=SHAPE, pixel_scales=SCALE, radius=1.7)
    assert_same(got, unmasked.apply_mask(mask).apply_over_sampling(2, 3))
    assert (
        got.shape_slim
        < Mask2D.circular(shape_native=SHAPE, pixel_scales=SCALE, radius=3.0).pixels_in_mask
    )


# ---------------------------------------------------------------------------------------- sampling
CIRCLE = {"kind": "circular", "radius": 1.5}


def test_uniform_over_sampling(survey, unmasked):
    got = _prepared(survey, mask=CIRCLE, over_sampling={"kind": "uniform", "lp": 5})
    masked = unmasked.apply_mask(
        Mask2D.circular(shape_native=SHAPE, pixel_scales=SCALE, radius=1.5)
    )
    assert_same(got, masked.apply_over_sampling(5, 4))  # pixelization: 4 by default


def test_radial_over_sampling(survey, unmasked):
    over = {"kind": "radial", "sub_size_list": [8, 4, 2], "radial_list": [0.3, 0.8]}
    got = _prepared(survey, mask=CIRCLE, over_sampling=over)
    masked = unmasked.apply_mask(
        Mask2D.circular(shape_native=SHAPE, pixel_scales=SCALE, radius=1.5)
    )
    sizes = over_sample_size_via_radial_bins_from(masked.grid, [8, 4, 2], [0.3, 0.8])
    assert_same(got, masked.apply_over_sampling(sizes, 4))
    lp = np.asarray(got.over_sample_size_lp)
    radius = np.hypot(*np.asarray(got.grid).T)
    assert set(np.unique(lp)) == {8, 4, 2}
    assert np.all(lp[radius < 0.3] == 8) and np.all(lp[radius > 0.8] == 2)


def test_adaptive_over_sampling(survey, unmasked):
    over = {
        "kind": "adaptive",
        "signal_to_noise_cut": 3.0,
        "sub_size_lower": 1,
        "sub_size_upper": 6,
        "pixelization": 2,
    }
    got = _prepared(survey, mask=CIRCLE, over_sampling=over)
    masked = unmasked.apply_mask(
        Mask2D.circular(shape_native=SHAPE, pixel_scales=SCALE, radius=1.5)
    )
    sizes = over_sample_size_via_adapt_from(masked.data, masked.noise_map, 3.0, 1, 6)
    assert_same(got, masked.apply_over_sampling(sizes, 2))
    lp = np.asarray(got.over_sample_size_lp)
    assert set(np.unique(lp)) <= {1, 6} and (lp == 6).any()
    assert np.all(np.asarray(got.over_sample_size_pixelization) == 2)


# ---------------------------------------------------------------------------------------- errors
def test_file_mask_without_a_mask_file_is_a_dataset_error(survey):
    with pytest.raises(DatasetError, match="mask.kind is 'file' but the dataset .* no mask file"):
        _prepared(survey, mask={"kind": "file"})


def test_mask_of_the_wrong_shape_is_a_dataset_error(lens, tmp_path):
    folder = tmp_path / lens.name
    shutil.copytree(lens, folder)
    fits.PrimaryHDU(np.zeros((10, 10), dtype=np.uint8)).writeto(folder / "mask.fits")
    inputs = {"kind": "folders", "root": str(tmp_path), "pattern": "lens_*", "mask": "mask.fits"}
    with pytest.raises(DatasetError, match=r"has shape \(10, 10\) but the data are \(40, 40\)"):
        _prepared(tmp_path, inputs, mask={"kind": "file"})
