"""The reference library's own outputs (PyAutoArray) for two datasets: our calls must reproduce
them. See tests/data/README-cases.md for the meaning of every key."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import Array2D, FitImaging, Imaging, Mask2D
from tests.helpers import probe_function


def _load(case, **kwargs) -> Imaging:
    os = case.meta["over_sample"]
    return Imaging.from_fits(
        pixel_scales=case.pixel_scales,
        data_path=case.file("data.fits"),
        noise_map_path=case.file("noise_map.fits"),
        data_hdu=case.data_hdu,
        psf_path=case.file("psf.fits"),
        over_sample_size_lp=os["lp_at_load"],
        over_sample_size_pixelization=os["pixelization_at_load"],
        **kwargs,
    )


@pytest.fixture(scope="module")
def prepared(reference_case):
    case = reference_case
    unmasked = _load(case)
    mask = Mask2D.from_fits(case.file("mask.fits"), pixel_scales=case.pixel_scales)
    return case, unmasked, unmasked.apply_mask(mask)


def test_inputs_read_exactly(prepared):
    case, unmasked, _ = prepared
    exp = case.expected
    np.testing.assert_array_equal(unmasked.data.native, exp["input_data_native"])
    np.testing.assert_array_equal(unmasked.noise_map.native, exp["input_noise_native"])
    np.testing.assert_array_equal(
        Mask2D.from_fits(case.file("mask.fits"), case.pixel_scales), exp["input_mask_native"]
    )
    snr = unmasked.signal_to_noise_map.native
    np.testing.assert_array_equal(snr, exp["unmasked_signal_to_noise_native"])


def test_masked_dataset_arrays(prepared):
    case, _, ds = prepared
    exp = case.expected
    np.testing.assert_array_equal(ds.mask, exp["mask_native"])
    np.testing.assert_array_equal(ds.mask.native_for_slim, exp["native_for_slim"])
    np.testing.assert_array_equal(ds.data.slim, exp["data_slim"])
    np.testing.assert_array_equal(ds.noise_map.slim, exp["noise_slim"])
    np.testing.assert_array_equal(ds.data.native, exp["data_native"])
    np.testing.assert_array_equal(ds.noise_map.native, exp["noise_native"])
    assert ds.shape_slim == int(exp["shape_slim"])
    assert ds.shape_native == tuple(exp["shape_native"])
    assert ds.pixel_scales == tuple(exp["pixel_scales"])
    np.testing.assert_allclose(ds.signal_to_noise_map.slim, exp["signal_to_noise_slim"], rtol=1e-15)
    assert ds.signal_to_noise_max == pytest.approx(float(exp["signal_to_noise_max"]), rel=1e-15)


def test_psf_normalised_without_mutating_input(prepared):
    case, _, ds = prepared
    exp = case.expected
    np.testing.assert_allclose(ds.psf.kernel.native, exp["psf_kernel_normalised"], rtol=1e-15)
    assert ds.psf.kernel.native.sum() == pytest.approx(1.0, abs=1e-14)
    # the input kernel as read is untouched (the reference normalises it in place)
    np.testing.assert_array_equal(
        exp["input_psf_kernel"].sum(), case.meta["verification"]["psf_input_sum"]
    )


def test_grids_and_over_sampling(prepared):
    case, _, ds = prepared
    exp = case.expected
    np.testing.assert_allclose(ds.grid.slim, exp["grid_slim"], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(ds.over_sample_size_lp.slim, exp["over_sample_size_lp_slim"])
    np.testing.assert_array_equal(
        ds.over_sample_size_pixelization.slim, exp["over_sample_size_pixelization_slim"]
    )
    np.testing.assert_allclose(ds.grids.lp.over_sampled, exp["grid_lp_over_sampled"], atol=1e-15)
    np.testing.assert_allclose(
        ds.grids.pixelization.over_sampled, exp["grid_pixelization_over_sampled"], atol=1e-15
    )
    np.testing.assert_array_equal(ds.grids.blurring.mask, exp["blurring_mask_native"])
    np.testing.assert_allclose(ds.grids.blurring.slim, exp["blurring_grid_slim"], atol=1e-15)


def test_binning_matches_reference(prepared):
    case, _, ds = prepared
    exp = case.expected
    sub = ds.grids.lp.over_sampled
    values = probe_function(sub[:, 0], sub[:, 1])
    np.testing.assert_allclose(values, exp["lp_test_values_over_sampled"], rtol=1e-14, atol=1e-15)
    binned = ds.grids.lp.over_sampler.binned_array_2d_from(exp["lp_test_values_over_sampled"])
    np.testing.assert_allclose(binned.slim, exp["lp_test_values_binned"], rtol=1e-14, atol=1e-15)
    pix = ds.grids.pixelization.over_sampled
    binned_pix = ds.grids.pixelization.over_sampler.binned_array_2d_from(
        probe_function(pix[:, 0], pix[:, 1])
    )
    np.testing.assert_allclose(
        binned_pix.slim, exp["pixelization_test_values_binned"], rtol=1e-13, atol=1e-15
    )


def test_convolution_matches_reference(prepared):
    case, _, ds = prepared
    exp = case.expected
    image = Array2D(exp["lp_test_values_binned"], ds.mask)
    blurring = Array2D(exp["blurring_test_values"], ds.grids.blurring.mask)
    scale = np.abs(exp["convolved_test_image_slim"]).max()
    np.testing.assert_allclose(
        ds.psf.convolved_image_from(image, blurring).slim,
        exp["convolved_test_image_slim"],
        rtol=1e-12,
        atol=1e-14 * scale,
    )
    np.testing.assert_allclose(
        ds.psf.convolved_image_from(image).slim,
        exp["convolved_test_image_no_blurring_slim"],
        rtol=1e-12,
        atol=1e-14 * scale,
    )


def test_trimming_masked_and_unmasked(prepared):
    case, unmasked, ds = prepared
    exp = case.expected
    kernel_shape = tuple(exp["trim_kernel_shape"])
    trimmed = ds.trimmed_after_convolution_from(kernel_shape)
    np.testing.assert_array_equal(trimmed.data.native, exp["trim_masked_data_native"])
    np.testing.assert_array_equal(trimmed.noise_map.native, exp["trim_masked_noise_native"])
    np.testing.assert_array_equal(trimmed.mask, exp["trim_masked_mask_native"])
    np.testing.assert_array_equal(
        trimmed.over_sample_size_lp.native, exp["trim_masked_os_lp_native"]
    )
    np.testing.assert_array_equal(
        trimmed.over_sample_size_pixelization.native, exp["trim_masked_os_pixelization_native"]
    )
    # deliberate difference: grids follow the trimmed mask (the reference keeps stale grids)
    assert trimmed.grid.shape_slim == trimmed.shape_slim
    np.testing.assert_array_equal(trimmed.grid.slim, trimmed.mask.grid_slim)

    trimmed_u = unmasked.trimmed_after_convolution_from(kernel_shape)
    np.testing.assert_array_equal(trimmed_u.data.native, exp["trim_unmasked_data_native"])
    np.testing.assert_array_equal(trimmed_u.noise_map.native, exp["trim_unmasked_noise_native"])
    np.testing.assert_array_equal(trimmed_u.mask, exp["trim_unmasked_mask_native"])
    np.testing.assert_array_equal(
        trimmed_u.over_sample_size_lp.native, exp["trim_unmasked_os_lp_native"]
    )


def test_fit_matches_reference(prepared):
    case, _, ds = prepared
    exp = case.expected
    fit = FitImaging(ds, model_data=exp["fit_model_slim"])
    np.testing.assert_allclose(
        fit.residual_map.slim, exp["fit_residual_slim"], rtol=1e-15, atol=1e-300
    )
    np.testing.assert_allclose(
        fit.chi_squared_map.slim, exp["fit_chi_squared_map_slim"], rtol=1e-14
    )
    assert fit.chi_squared == pytest.approx(float(exp["fit_chi_squared"]), rel=1e-13)
    assert fit.noise_normalization == pytest.approx(
        float(exp["fit_noise_normalization"]), rel=1e-13
    )
    assert fit.log_likelihood == pytest.approx(float(exp["fit_log_likelihood"]), rel=1e-13)
