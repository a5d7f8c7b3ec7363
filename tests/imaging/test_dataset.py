"""Imaging: construction, validation, masking, noise scaling, over-sampling, trimming, FITS."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from pipeline import Array2D, Convolver, FitImaging, Imaging, Mask2D
from pipeline.exc import DatasetError, InvalidValueError, KernelError, MaskError, OverSamplingError

SHAPE = (12, 16)
SCALES = (0.1, 0.08)


def _dataset(rng_seed=0, **kwargs) -> Imaging:
    rng = np.random.default_rng(rng_seed)
    data = Array2D.no_mask(rng.normal(size=SHAPE), SCALES)
    noise = Array2D.no_mask(rng.uniform(0.5, 1.5, size=SHAPE), SCALES)
    kernel = rng.uniform(0.1, 1.0, size=(3, 5))
    return Imaging(data, noise, Convolver(kernel, pixel_scales=SCALES), **kwargs)


def _mask():
    return Mask2D.circular(shape_native=SHAPE, pixel_scales=SCALES, radius=0.4)


def test_psf_normalised_in_a_copy():
    kernel = np.arange(1.0, 16.0).reshape(3, 5)
    psf = Convolver(kernel, pixel_scales=SCALES)
    before = psf.kernel.native.copy()
    data = Array2D.no_mask(np.ones(SHAPE), SCALES)
    ds = Imaging(data, data, psf)
    np.testing.assert_array_equal(psf.kernel.native, before)
    np.testing.assert_allclose(ds.psf.kernel.native, kernel / kernel.sum(), rtol=1e-15)
    raw = Imaging(data, data, psf, use_normalized_psf=False)
    np.testing.assert_array_equal(raw.psf.kernel.native, kernel)
    # repeated rebuilds do not drift (the reference re-normalises every time)
    again = ds.apply_mask(_mask()).apply_over_sampling(2)
    np.testing.assert_array_equal(again.psf.kernel.native, ds.psf.kernel.native)


def test_noise_from_covariance_is_sqrt_of_diagonal():
    data = Array2D.no_mask(np.ones((3, 4)), 0.1)
    cov = np.diag(np.arange(1.0, 13.0) ** 2)
    ds = Imaging(data, noise_covariance_matrix=cov)
    np.testing.assert_allclose(ds.noise_map.slim, np.arange(1.0, 13.0), rtol=1e-15)
    assert ds.pixel_scales == (0.1, 0.1)
    np.testing.assert_allclose(ds.noise_covariance_matrix_inv, np.linalg.inv(cov), rtol=1e-14)
    with pytest.raises(DatasetError, match=r"\(12, 12\)"):
        Imaging(data, noise_covariance_matrix=np.eye(5))
    with pytest.raises(DatasetError, match="no noise_map"):
        Imaging(data)


def test_invalid_inputs_name_the_pixel():
    rng = np.random.default_rng(1)
    values = rng.normal(size=SHAPE)
    noise = np.ones(SHAPE)
    values[4, 7] = np.nan
    with pytest.raises(InvalidValueError, match=r"dataset 'lens_1'.*data.*row 4, col 7"):
        Imaging(Array2D.no_mask(values, SCALES), Array2D.no_mask(noise, SCALES), name="lens_1")
    values[4, 7] = 0.0
    noise[2, 3] = np.inf
    with pytest.raises(InvalidValueError, match=r"noise_map.*row 2, col 3"):
        Imaging(Array2D.no_mask(values, SCALES), Array2D.no_mask(noise, SCALES))
    noise[2, 3] = 0.0
    with pytest.raises(InvalidValueError, match=r"<= 0.*row 2, col 3"):
        Imaging(Array2D.no_mask(values, SCALES), Array2D.no_mask(noise, SCALES))
    # a masked zero / NaN is fine, and check_noise_map=False skips the positivity check
    mask = Mask2D.all_false(SHAPE, SCALES)
    mask[2, 3] = True
    noise[2, 3] = np.nan
    Imaging(Array2D(values, mask), Array2D(noise, mask))
    noise[2, 3] = -1.0
    Imaging(Array2D.no_mask(values, SCALES), Array2D.no_mask(noise, SCALES), check_noise_map=False)
    with pytest.raises(DatasetError, match="same shape"):
        Imaging(Array2D.no_mask(values, SCALES), Array2D.no_mask(np.ones((3, 3)), SCALES))
    with pytest.raises(DatasetError, match="Array2D"):
        Imaging(values, Array2D.no_mask(noise, SCALES))
    with pytest.raises(KernelError, match="larger than the image"):
        Imaging(
            Array2D.no_mask(values, SCALES),
            Array2D.no_mask(np.ones(SHAPE), SCALES),
            Convolver(np.ones((13, 3)), pixel_scales=SCALES),
        )


def test_over_sample_sizes_accept_numpy_ints_and_reject_bad():
    ds = _dataset(over_sample_size_lp=np.int64(3), over_sample_size_pixelization=np.int32(2))
    assert (ds.over_sample_size_lp.slim == 3).all() and (
        ds.over_sample_size_pixelization.slim == 2
    ).all()
    for bad in (0, -2, 1.5):
        with pytest.raises(OverSamplingError):
            _dataset(over_sample_size_lp=bad)
    with pytest.raises(OverSamplingError, match="not supported"):
        _dataset(convolve_over_sample_size_lp=2)


def test_apply_mask():
    ds = _dataset(over_sample_size_lp=2)
    mask = _mask()
    masked = ds.apply_mask(mask)
    assert masked.shape_slim == mask.pixels_in_mask
    np.testing.assert_array_equal(
        masked.data.native, np.where(np.asarray(mask), 0.0, ds.data.native)
    )
    np.testing.assert_array_equal(masked.noise_map.slim, ds.noise_map.native[~np.asarray(mask)])
    assert masked.grid.shape_slim == mask.pixels_in_mask
    assert (masked.over_sample_size_lp.slim == 2).all()
    np.testing.assert_array_equal(masked.grids.blurring.mask, mask.blurring_mask_from((3, 5)))
    # inputs untouched
    assert ds.shape_slim == SHAPE[0] * SHAPE[1]
    # masks can only shrink
    with pytest.raises(DatasetError, match="only shrink"):
        masked.apply_mask(Mask2D.circular(shape_native=SHAPE, pixel_scales=SCALES, radius=0.6))
    with pytest.raises(MaskError, match="shape"):
        ds.apply_mask(Mask2D.all_false((12, 15), SCALES))
    with pytest.raises(MaskError, match="pixel_scales"):
        ds.apply_mask(Mask2D.circular(shape_native=SHAPE, pixel_scales=0.1, radius=0.4))


def test_apply_mask_twice_keeps_covariance_consistent():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(SHAPE[0] * SHAPE[1],) * 2)
    cov = a @ a.T + np.eye(a.shape[0])
    data = Array2D.no_mask(rng.normal(size=SHAPE), SCALES)
    ds = Imaging(data, noise_covariance_matrix=cov)
    m1 = Mask2D.circular(shape_native=SHAPE, pixel_scales=SCALES, radius=0.5)
    m2 = Mask2D.circular(shape_native=SHAPE, pixel_scales=SCALES, radius=0.3)
    twice = ds.apply_mask(m1).apply_mask(m2)
    keep = np.flatnonzero(~np.asarray(m2))  # flat full-frame indexes
    np.testing.assert_array_equal(twice.noise_covariance_matrix, cov[np.ix_(keep, keep)])
    np.testing.assert_allclose(twice.noise_map.slim, np.sqrt(np.diag(cov))[keep], rtol=1e-15)


def test_apply_noise_scaling_both_variants():
    ds = _dataset()
    region_mask = Mask2D.circular(
        shape_native=SHAPE, pixel_scales=SCALES, radius=0.25
    )  # scaled where False
    scaled = ds.apply_noise_scaling(region_mask, noise_value=1e6)
    region = ~np.asarray(region_mask)
    np.testing.assert_array_equal(scaled.noise_map.native[region], 1e6)
    np.testing.assert_array_equal(scaled.noise_map.native[~region], ds.noise_map.native[~region])
    np.testing.assert_array_equal(scaled.data.native[region], 0.0)
    np.testing.assert_array_equal(scaled.mask, ds.mask)
    kept = ds.apply_noise_scaling(region_mask, should_zero_data=False)
    np.testing.assert_array_equal(kept.data.native, ds.data.native)

    snr = ds.apply_noise_scaling(region_mask, signal_to_noise_value=5.0)
    edge = ~np.asarray(region_mask.edge)
    expected = np.median(ds.data.native[edge]) / 5.0
    np.testing.assert_allclose(snr.noise_map.native[region], expected, rtol=1e-15)


def test_operator_dropped_or_kept(caplog):
    ds = _dataset()
    marker = object()
    with_op = ds._replace(sparse_operator=marker)
    assert with_op.apply_over_sampling(over_sample_size_lp=2).sparse_operator is marker
    with caplog.at_level(logging.WARNING, logger="pipeline.imaging.dataset"):
        assert with_op.apply_mask(_mask()).sparse_operator is None
    assert "discards the sparse operator" in caplog.text


def test_apply_over_sampling_per_pixel():
    ds = _dataset().apply_mask(_mask())
    sizes = (np.arange(ds.shape_slim) % 3) + 1
    new = ds.apply_over_sampling(over_sample_size_pixelization=sizes)
    np.testing.assert_array_equal(new.over_sample_size_pixelization.slim, sizes)
    np.testing.assert_array_equal(new.over_sample_size_lp.slim, ds.over_sample_size_lp.slim)
    assert new.grids.pixelization.over_sampled.shape == (int((sizes**2).sum()), 2)


def test_trimmed_dataset_is_consistent():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(192, 192))
    ds = Imaging(
        Array2D.no_mask(rng.normal(size=SHAPE), SCALES),
        noise_covariance_matrix=a @ a.T + np.eye(192),
        psf=Convolver(np.ones((3, 5)), pixel_scales=SCALES),
    ).apply_mask(Mask2D.circular(shape_native=SHAPE, pixel_scales=SCALES, radius=0.45))
    trimmed = ds.trimmed_after_convolution_from((3, 5))
    assert trimmed.shape_native == (10, 12)
    assert trimmed.grid.shape_slim == trimmed.shape_slim == trimmed.noise_covariance_matrix.shape[0]
    np.testing.assert_array_equal(trimmed.grid.slim, trimmed.mask.grid_slim)
    # the covariance rows are those of the surviving pixels
    old_index = ds.mask.slim_for_native[1:11, 2:14][~np.asarray(trimmed.mask)]
    np.testing.assert_array_equal(
        trimmed.noise_covariance_matrix, ds.noise_covariance_matrix[np.ix_(old_index, old_index)]
    )
    np.testing.assert_array_equal(trimmed.data.slim, ds.data.slim[old_index])


def test_from_fits_by_extname_and_header_pixel_scales(tmp_path):
    from pipeline.io.fits import write_fits_hdus

    rng = np.random.default_rng(7)
    data, rms = rng.normal(size=SHAPE), rng.uniform(1, 2, size=SHAPE)
    psf = rng.uniform(size=(5, 5))
    path = tmp_path / "cutout.fits"
    write_fits_hdus(path, {"VIS_BGSUB": data, "VIS_RMS": rms, "VIS_PSF": psf}, pixel_scales=SCALES)
    ds = Imaging.from_fits(
        pixel_scales="header",
        data_path=path,
        data_hdu="VIS_BGSUB",
        noise_map_path=path,
        noise_map_hdu="VIS_RMS",
        psf_path=path,
        psf_hdu="VIS_PSF",
        name="euclid_1",
    )
    assert ds.pixel_scales == SCALES and ds.name == "euclid_1"
    np.testing.assert_array_equal(ds.data.native, data)
    np.testing.assert_array_equal(ds.noise_map.native, rms)
    np.testing.assert_allclose(ds.psf.kernel.native, psf / psf.sum(), rtol=1e-15)
    by_index = Imaging.from_fits(SCALES, path, path, data_hdu=1, noise_map_hdu=2)
    np.testing.assert_array_equal(by_index.data.native, data)
    assert by_index.psf is None and by_index.grids.blurring is None


def test_fit_with_covariance_equals_dense_formula():
    rng = np.random.default_rng(9)
    ds = _dataset().apply_mask(_mask())
    n = ds.shape_slim
    a = rng.normal(size=(n, n))
    cov = a @ a.T / n + np.diag(np.asarray(ds.noise_map.slim) ** 2)
    ds_cov = Imaging(ds.data, ds.noise_map, ds.psf, noise_covariance_matrix=cov)
    model = rng.normal(size=n)
    fit = FitImaging(ds_cov, model)
    r = np.asarray(ds.data.slim) - model
    assert fit.chi_squared == pytest.approx(float(r @ np.linalg.solve(cov, r)), rel=1e-10)
    sigma = np.asarray(ds.noise_map.slim)
    assert fit.noise_normalization == pytest.approx(
        float(np.sum(np.log(2 * np.pi * sigma**2))), rel=1e-14
    )
    plain = FitImaging(ds, model)
    assert plain.chi_squared == pytest.approx(float(np.sum((r / sigma) ** 2)), rel=1e-14)
    assert plain.log_likelihood == pytest.approx(
        -0.5 * (plain.chi_squared + plain.noise_normalization), rel=1e-15
    )
    np.testing.assert_allclose(plain.normalized_residual_map.slim, r / sigma, rtol=1e-15)


def test_normalising_is_idempotent_bit_for_bit():
    kernel = np.random.default_rng(11).uniform(0.1, 1.0, size=(7, 5)) * 3.7
    psf = Convolver(kernel, pixel_scales=SCALES).normalized
    assert psf.is_normalized and psf.normalized is psf
    data = Array2D.no_mask(np.ones(SHAPE), SCALES)
    ds = Imaging(data, data, psf)
    for _ in range(3):
        ds = ds.apply_over_sampling(2).apply_noise_scaling(_mask(), noise_value=5.0)
    np.testing.assert_array_equal(ds.psf.kernel.native, psf.kernel.native)


@pytest.mark.parametrize("check", [True, False])
def test_every_apply_keeps_check_noise_map(check, tmp_path):
    """Regression (issue 12): ``_replace`` defaulted ``check_noise_map`` to False, so every
    ``apply_*`` dropped it and every stored dataset recorded ``check_noise_map: false``."""
    from pipeline.io.store import dataset_attrs, open_imaging, write_imaging

    ds = _dataset(check_noise_map=check).apply_mask(_mask())
    steps = {
        "apply_over_sampling": ds.apply_over_sampling(over_sample_size_lp=2),
        "apply_noise_scaling": ds.apply_noise_scaling(~np.asarray(ds.mask), noise_value=10.0),
        "apply_sparse_operator": ds.apply_sparse_operator(backend="numpy"),
        "trimmed_after_convolution_from": ds.trimmed_after_convolution_from((3, 3)),
    }
    assert {name: new.check_noise_map for name, new in steps.items()} == dict.fromkeys(steps, check)
    write_imaging(tmp_path / "s.zarr", "d", steps["apply_sparse_operator"])
    assert dataset_attrs(tmp_path / "s.zarr", "d")["check_noise_map"] is check
    assert open_imaging(tmp_path / "s.zarr", "d").check_noise_map is check
