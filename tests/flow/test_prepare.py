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
    with pytest.raises(DatasetError) as err:
        _prepared(survey, mask={"kind": "file"})
    message = str(err.value)
    assert "dataset 'lens_00005': the mask uses a mask file (kind 'file'" in message
    assert f"data '{survey / 'lens_00005' / 'data.fits'}' has no mask file" in message
    assert "give one (folders: inputs.mask, manifest: mask column" in message


def test_mask_of_the_wrong_shape_is_a_dataset_error(lens, tmp_path):
    folder = tmp_path / lens.name
    shutil.copytree(lens, folder)
    fits.PrimaryHDU(np.zeros((10, 10), dtype=np.uint8)).writeto(folder / "mask.fits")
    inputs = {"kind": "folders", "root": str(tmp_path), "pattern": "lens_*", "mask": "mask.fits"}
    with pytest.raises(DatasetError) as err:
        _prepared(tmp_path, inputs, mask={"kind": "file"})
    assert str(err.value).startswith(
        f"dataset {lens.name!r}: mask file '{folder / 'mask.fits'}' HDU 0 has shape (10, 10) but "
        f"the data '{folder / 'data.fits'}' HDU 0 are (40, 40); give a mask file of the data's "
        "cutout"
    )


# ---------------------------------------------------------------------------------------- psf trim
def test_no_psf_section_keeps_the_settings_a_store_was_made_with(survey):
    """Stores written before the psf section existed keep their settings hash (no recompute)."""
    from pipeline.flow.config import config_from_dict

    base = {
        "inputs": {"kind": "folders", "root": str(survey), "pattern": "lens_*"},
        "pixel_scales": SCALE,
        "mask": {"kind": "circular", "radius": 1.5},
        "output": {"store": "survey.zarr"},
    }
    assert "psf" not in config_from_dict(base, base_dir=survey).dataset_settings()
    trimmed = config_from_dict({**base, "psf": {"trim_to": [3, 3]}}, base_dir=survey)
    assert trimmed.dataset_settings()["psf"] == {"trim_to": [3, 3], "trim_fraction": None}


@pytest.mark.parametrize(
    ("psf", "shape"), [({"trim_to": [3, 5]}, (3, 5)), ({"trim_to": [3, 9]}, (3, 5))]
)
def test_the_psf_is_trimmed_then_normalised(survey, unmasked, psf, shape):
    got = _prepared(survey, mask={"kind": "circular", "radius": 1.5}, psf=psf)
    kernel = np.asarray(unmasked.psf.kernel.native)  # 5x5, normalised
    cy, cx = kernel.shape[0] // 2, kernel.shape[1] // 2
    window = kernel[cy - shape[0] // 2 : cy + shape[0] // 2 + 1, cx - shape[1] // 2 :][
        :, : shape[1]
    ]
    assert got.psf.kernel.shape_native == shape
    np.testing.assert_allclose(got.psf.kernel.native, window / window.sum(), rtol=1e-15)
    assert got.sparse_operator is None or got.sparse_operator.kernel_shape == shape


def test_trim_fraction_keeps_the_smallest_box_holding_the_light(survey, unmasked):
    from pipeline.imaging.trimming import trim_shape_for_fraction

    raw = fits.getdata(next(survey.glob("lens_*")) / "psf.fits").astype(float)
    want = trim_shape_for_fraction(raw, 0.5)
    assert want[0] < raw.shape[0]  # the test trims something
    got = _prepared(survey, mask={"kind": "circular", "radius": 1.5}, psf={"trim_fraction": 0.5})
    assert got.psf.kernel.shape_native == want


@pytest.mark.parametrize(
    ("psf", "message"),
    [
        ({"trim_to": [4, 5]}, "two odd numbers"),
        ({"trim_to": [5]}, "trim_to"),
        ({"trim_fraction": 0}, "greater than 0"),
        ({"trim_fraction": 1.2}, "less than or equal to 1"),
        ({"trim_to": [3, 3], "trim_fraction": 0.99}, "not both"),
        ({"trim": [3, 3]}, "trim"),
    ],
)
def test_bad_psf_settings_are_refused_by_name(survey, psf, message):
    from pipeline.exc import ConfigError

    with pytest.raises(ConfigError, match=message):
        _prepared(survey, mask={"kind": "circular", "radius": 1.5}, psf=psf)


# ---------------------------------------------------------------------------------- bad pixels
def _spoiled_lens(survey: Path, tmp_path: Path) -> tuple[Path, list, list]:
    """A copy of the lens with NaN/inf data at 3 unmasked pixels and zero, negative, NaN and
    1e-200 noise at 4 others (one of them also NaN data)."""
    lens = tmp_path / "spoiled"
    shutil.copytree(next(survey.glob("lens_*")), lens)
    data = fits.getdata(lens / "data.fits").astype(float)
    noise = fits.getdata(lens / "noise_map.fits").astype(float)
    bad_data = [(20, 20), (21, 19), (18, 22)]
    bad_noise = [(19, 19), (22, 21), (20, 22), (18, 22)]
    for (r, c), value in zip(bad_data, [np.nan, np.inf, -np.inf], strict=True):
        data[r, c] = value
    for (r, c), value in zip(bad_noise, [0.0, -1.0, np.nan, 1e-200], strict=True):
        noise[r, c] = value
    fits.writeto(lens / "data.fits", data, overwrite=True)
    fits.writeto(lens / "noise_map.fits", noise, overwrite=True)
    return lens, bad_data, bad_noise


def _prepared_lens(lens: Path, mask: dict, manifest_column: str | None = None):
    from pipeline.flow.prepare import prepare_dataset

    if manifest_column is None:
        inputs = {"kind": "folders", "root": str(lens.parent), "pattern": lens.name}
    else:
        manifest = lens.parent / "manifest.csv"
        manifest.write_text(
            "name,data,noise_map,psf,bad_pixels\n"
            f"spoiled,{lens}/data.fits,{lens}/noise_map.fits,{lens}/psf.fits,{manifest_column}\n"
        )
        inputs = {"kind": "manifest", "path": str(manifest)}
    config = config_from_dict(
        {"inputs": inputs, "pixel_scales": SCALE, "output": {"store": "s.zarr"}, "mask": mask},
        base_dir=lens.parent,
    )
    found = discover(config)
    assert found.problems == []
    (spec,) = found.specs
    return prepare_dataset(spec, PrepareSettings.from_config(config))


def test_bad_pixels_fail_the_dataset_by_default(survey, tmp_path):
    lens, _, _ = _spoiled_lens(survey, tmp_path)
    with pytest.raises(DatasetError, match="non-finite|positive and finite"):
        _prepared_lens(lens, {"kind": "circular", "radius": 1.8})


@pytest.mark.parametrize("how", ["config", "manifest"])
def test_bad_pixels_mask_masks_and_counts_them(survey, unmasked, tmp_path, how):
    lens, bad_data, bad_noise = _spoiled_lens(survey, tmp_path)
    if how == "config":
        got = _prepared_lens(lens, {"kind": "circular", "radius": 1.8, "bad_pixels": "mask"})
    else:
        got = _prepared_lens(lens, {"kind": "circular", "radius": 1.8}, manifest_column="mask")
    # (18, 22) is bad in both: counted once, as data
    assert got.bad_pixels == {"nonfinite_data": 3, "unusable_noise": 3}
    circle = Mask2D.circular(SHAPE, 1.8, SCALE)
    expected = np.asarray(circle).copy()
    for r, c in bad_data + bad_noise:
        assert not circle[r, c]  # the test spoils unmasked pixels
        expected[r, c] = True
    np.testing.assert_array_equal(np.asarray(got.imaging.mask), expected)
    # the kept pixels' values, as read (slim = row-major over the unmasked pixels)
    data = fits.getdata(lens / "data.fits").astype(float)
    noise = fits.getdata(lens / "noise_map.fits").astype(float)
    np.testing.assert_array_equal(got.imaging.data.slim, data[~expected])
    np.testing.assert_array_equal(got.imaging.noise_map.slim, noise[~expected])


def test_a_clean_dataset_under_bad_pixels_mask_counts_zero(survey):
    from pipeline.flow.prepare import prepare_dataset

    config = config_from_dict(
        {
            "inputs": {"kind": "folders", "root": str(survey), "pattern": "lens_*"},
            "pixel_scales": SCALE,
            "output": {"store": "s.zarr"},
            "mask": {"kind": "circular", "radius": 1.8, "bad_pixels": "mask"},
        },
        base_dir=survey,
    )
    (spec,) = discover(config).specs
    got = prepare_dataset(spec, PrepareSettings.from_config(config))
    assert got.bad_pixels == {"nonfinite_data": 0, "unusable_noise": 0}
    assert config.dataset_settings()["mask"]["bad_pixels"] == "mask"


def test_a_bad_manifest_bad_pixels_value_is_a_problem_naming_the_line(survey, tmp_path):
    lens, _, _ = _spoiled_lens(survey, tmp_path)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "name,data,noise_map,psf,bad_pixels\n"
        f"spoiled,{lens}/data.fits,{lens}/noise_map.fits,{lens}/psf.fits,ignore\n"
    )
    config = config_from_dict(
        {
            "inputs": {"kind": "manifest", "path": str(manifest)},
            "pixel_scales": SCALE,
            "output": {"store": "s.zarr"},
            "mask": {"kind": "circular", "radius": 1.8},
        },
        base_dir=tmp_path,
    )
    ((name, message),) = discover(config).problems
    assert name == "spoiled" and "line 2" in message and "'ignore'" in message


# --------------------------------------------------------------------------- pixel scale check
@pytest.mark.parametrize("check", ["warn", "strict"])
def test_a_scale_that_disagrees_with_the_header_fails_only_under_strict(survey, lens, check):
    """The mock's headers say 0.1 arcsec; a config saying 0.03 (JWST's, by mistake)."""
    config = config_from_dict(
        {
            "inputs": {"kind": "folders", "root": str(survey), "pattern": "lens_*"},
            "pixel_scales": 0.03,
            "pixel_scales_check": check,
            "mask": {"kind": "circular", "radius": 0.5},
            "output": {"store": "survey.zarr"},
        },
        base_dir=survey,
    )
    (spec,) = discover(config).specs
    settings = PrepareSettings.from_config(config)
    if check == "warn":  # validate warns; the run uses the scale it was given
        assert prepare_imaging(spec, settings).pixel_scales == (0.03, 0.03)
        return
    with pytest.raises(DatasetError) as err:
        prepare_imaging(spec, settings)
    assert (
        f"pixel scales 0.03x0.03 arcsec differ by 70.0% from the 0.1x0.1 arcsec of data "
        f"'{lens / 'data.fits'}' HDU 0's header (pixel_scales_check: strict)"
    ) in str(err.value)


def test_a_matching_scale_passes_strict(survey, unmasked):
    got = _prepared(
        survey, mask={"kind": "circular", "radius": 1.2}, pixel_scales_check="strict",
        over_sampling=UNIFORM,
    )  # fmt: skip
    mask = Mask2D.circular(shape_native=SHAPE, pixel_scales=SCALE, radius=1.2)
    assert_same(got, unmasked.apply_mask(mask).apply_over_sampling(2, 3))
