from __future__ import annotations

import numpy as np
import pytest

from pipeline.exc import DatasetError
from pipeline.imaging.arrays import Array2D
from pipeline.imaging.convolver import Convolver
from pipeline.imaging.dataset import Imaging
from pipeline.imaging.grids import Grid2D
from pipeline.imaging.mask import Mask2D
from pipeline.imaging.simulator import SimulatorImaging

PIXEL_SCALES = (0.1, 0.1)


def _image(shape=(21, 17), seed=5, low=1.0, high=5.0) -> Array2D:
    values = np.random.default_rng(seed).uniform(low, high, size=shape)
    return Array2D.no_mask(values, PIXEL_SCALES)


def _asymmetric_psf() -> Convolver:
    # asymmetric and not unit-sum, so correlation or a missed normalisation would show
    kernel = np.array(
        [[0.0, 0.1, 0.3], [0.2, 1.0, 0.05], [0.4, 0.0, 0.1], [0.0, 0.2, 0.0], [0.1, 0.0, 0.0]]
    )
    return Convolver(kernel, pixel_scales=PIXEL_SCALES)


def _brute_force_convolution(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """out[k] = sum_i in[i] K[k - i + c], zero outside the frame."""
    ny, nx = image.shape
    ky, kx = kernel.shape
    cy, cx = ky // 2, kx // 2
    out = np.zeros_like(image)
    for r in range(ny):
        for c in range(nx):
            total = 0.0
            for i in range(ny):
                for j in range(nx):
                    a, b = r - i + cy, c - j + cx
                    if 0 <= a < ky and 0 <= b < kx:
                        total += image[i, j] * kernel[a, b]
            out[r, c] = total
    return out


# ---------------------------------------------------------------------------------- randomness
def test_same_seed_gives_identical_data_and_each_call_repeats():
    image = _image()
    a = SimulatorImaging(exposure_time=300.0, background_sky_level=0.5, noise_seed=7)
    b = SimulatorImaging(exposure_time=300.0, background_sky_level=0.5, noise_seed=7)
    first, second, again = a.via_image_from(image), b.via_image_from(image), a.via_image_from(image)
    np.testing.assert_array_equal(first.data.native, second.data.native)
    np.testing.assert_array_equal(first.noise_map.native, second.noise_map.native)
    np.testing.assert_array_equal(first.data.native, again.data.native)


def test_different_seeds_give_different_data():
    image = _image()
    a = SimulatorImaging(exposure_time=300.0, noise_seed=1).via_image_from(image)
    b = SimulatorImaging(exposure_time=300.0, noise_seed=2).via_image_from(image)
    assert not np.array_equal(a.data.native, b.data.native)


def test_seed_minus_one_is_random_on_every_call():
    image = _image()
    sim = SimulatorImaging(exposure_time=300.0)
    assert not np.array_equal(
        sim.via_image_from(image).data.native, sim.via_image_from(image).data.native
    )


def test_a_shared_generator_advances_and_draws_from_that_generator():
    image = _image()
    sim = SimulatorImaging(exposure_time=300.0, rng=np.random.default_rng(11))
    first, second = sim.via_image_from(image), sim.via_image_from(image)
    assert not np.array_equal(first.data.native, second.data.native)
    signal = image.native
    expected = signal + (np.random.default_rng(11).poisson(signal * 300.0) / 300.0 - signal)
    np.testing.assert_array_equal(first.data.native, expected)


def test_the_global_legacy_rng_is_not_touched():
    state = np.random.get_state()  # noqa: NPY002 (the legacy RNG is what is checked)
    SimulatorImaging(exposure_time=300.0).via_image_from(_image())
    SimulatorImaging(exposure_time=300.0, noise_seed=3).via_image_from(_image())
    after = np.random.get_state()  # noqa: NPY002
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2:] == after[2:]


# ---------------------------------------------------------------------------------- the model
@pytest.mark.parametrize("normalize_psf", [True, False])
def test_without_poisson_noise_data_is_the_brute_force_convolution(normalize_psf):
    image = _image(shape=(9, 8))
    psf = _asymmetric_psf()
    sim = SimulatorImaging(
        exposure_time=100.0,
        psf=psf,
        normalize_psf=normalize_psf,
        add_poisson_noise_to_data=False,
        noise_seed=0,
    )
    dataset = sim.via_image_from(image)
    kernel = psf.kernel.native / (psf.kernel.native.sum() if normalize_psf else 1.0)
    expected = _brute_force_convolution(image.native, kernel)
    np.testing.assert_allclose(dataset.data.native, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dataset.psf.kernel.native, kernel, rtol=1e-15)
    assert isinstance(dataset, Imaging) and dataset.mask.is_all_false


def test_without_psf_and_noise_the_data_is_the_image_and_the_noise_is_uniform():
    image = _image()
    sim = SimulatorImaging(
        exposure_time=100.0,
        background_sky_level=2.0,
        add_poisson_noise_to_data=False,
        include_poisson_noise_in_noise_map=False,
        noise_if_add_noise_false=0.25,
    )
    dataset = sim.via_image_from(image)
    np.testing.assert_allclose(dataset.data.native, image.native, rtol=1e-14)
    np.testing.assert_array_equal(dataset.noise_map.native, 0.25)
    kept = SimulatorImaging(
        exposure_time=100.0,
        background_sky_level=2.0,
        subtract_background_sky=False,
        add_poisson_noise_to_data=False,
        include_poisson_noise_in_noise_map=False,
    ).via_image_from(image)
    np.testing.assert_allclose(kept.data.native, image.native + 2.0, rtol=1e-14)


def test_noise_map_formula_against_an_independent_poisson_draw():
    image = _image()
    psf = Convolver.from_gaussian((5, 5), PIXEL_SCALES, sigma=0.12, normalize=True)
    t, sky, seed = 250.0, 0.3, 123
    dataset = SimulatorImaging(
        exposure_time=t, background_sky_level=sky, psf=psf, noise_seed=seed
    ).via_image_from(image)
    signal = psf.convolved_image_from(image, method="direct").native + sky
    # the reference's legacy stream and arithmetic: seed, then one poisson draw in row-major order
    draw = np.random.RandomState(seed).poisson(signal * t)  # noqa: NPY002
    noisy = signal + (draw / t - signal)
    np.testing.assert_array_equal(dataset.noise_map.native, np.sqrt(np.abs(noisy * t)) / t)
    np.testing.assert_array_equal(dataset.data.native, noisy - sky)


def test_noise_map_keeps_the_poisson_draw_when_the_data_is_noiseless():
    image = _image()
    seed, t = 9, 80.0
    dataset = SimulatorImaging(
        exposure_time=t, add_poisson_noise_to_data=False, noise_seed=seed
    ).via_image_from(image)
    signal = image.native
    noisy = signal + (np.random.RandomState(seed).poisson(signal * t) / t - signal)  # noqa: NPY002
    np.testing.assert_allclose(dataset.data.native, image.native, rtol=1e-14)
    np.testing.assert_array_equal(dataset.noise_map.native, np.sqrt(np.abs(noisy * t)) / t)


def test_poisson_residuals_are_standard_normal():
    # ~1e4 pixels of 5e3-2e4 counts: standard errors 0.01 (mean) and 0.007 (std); the seed is fixed
    image = _image(shape=(100, 100), seed=3, low=5.0, high=20.0)
    psf = Convolver.from_gaussian((7, 7), PIXEL_SCALES, sigma=0.1, normalize=True)
    sim = SimulatorImaging(exposure_time=1000.0, background_sky_level=0.1, psf=psf, noise_seed=2024)
    dataset = sim.via_image_from(image)
    noiseless = psf.convolved_image_from(image).native
    z = (dataset.data.native - noiseless) / dataset.noise_map.native
    assert abs(z.mean()) < 0.05
    assert abs(z.std() - 1.0) < 0.05


def test_inputs_are_not_mutated():
    image = _image()
    image_before = image.native.copy()
    psf = _asymmetric_psf()
    kernel_before = psf.kernel.native.copy()
    sim = SimulatorImaging(exposure_time=100.0, psf=psf, noise_seed=0)
    dataset = sim.via_image_from(image)
    np.testing.assert_array_equal(image.native, image_before)
    np.testing.assert_array_equal(psf.kernel.native, kernel_before)
    assert sim.psf is not psf
    assert sim.psf.kernel.native.sum() == pytest.approx(1.0, rel=1e-14)
    assert dataset.psf.kernel.native.sum() == pytest.approx(1.0, rel=1e-14)


def test_negative_counts_raise_naming_the_pixel():
    values = np.full((6, 5), 1.0)
    values[4, 2] = -3.0
    image = Array2D.no_mask(values, PIXEL_SCALES)
    with pytest.raises(DatasetError, match=r"row 4, col 2"):
        SimulatorImaging(exposure_time=10.0, background_sky_level=1.0, noise_seed=0).via_image_from(
            image
        )
    # without any Poisson draw negative values are fine
    dataset = SimulatorImaging(
        exposure_time=10.0,
        add_poisson_noise_to_data=False,
        include_poisson_noise_in_noise_map=False,
    ).via_image_from(image)
    assert dataset.data.native[4, 2] == -3.0


def test_non_finite_images_raise():
    values = np.ones((5, 5))
    values[1, 3] = np.nan
    with pytest.raises(DatasetError, match=r"row 1, col 3"):
        SimulatorImaging(exposure_time=10.0, noise_seed=0).via_image_from(
            Array2D.no_mask(values, 0.1)
        )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"exposure_time": 0.0},
        {"exposure_time": float("nan")},
        {"exposure_time": 1.0, "background_sky_level": -1.0},
        {"exposure_time": 1.0, "noise_if_add_noise_false": 0.0},
        {"exposure_time": 1.0, "noise_seed": 1.5},
        {"exposure_time": 1.0, "noise_seed": -2},
        {"exposure_time": 1.0, "noise_seed": 3, "rng": np.random.default_rng(3)},
        {"exposure_time": 1.0, "rng": np.random.RandomState(3)},
        {"exposure_time": 1.0, "psf": np.ones((3, 3))},
    ],
)
def test_invalid_settings_are_rejected(kwargs):
    with pytest.raises(DatasetError):
        SimulatorImaging(**kwargs)


def test_masked_images_are_rejected():
    mask = Mask2D.circular(shape_native=(11, 11), pixel_scales=PIXEL_SCALES, radius=0.3)
    image = Array2D(np.ones((11, 11)), mask)
    with pytest.raises(DatasetError, match="unmasked"):
        SimulatorImaging(exposure_time=10.0).via_image_from(image)


def test_over_sample_size_is_applied_to_the_dataset():
    dataset = SimulatorImaging(exposure_time=10.0, noise_seed=0).via_image_from(
        _image(), over_sample_size=2
    )
    np.testing.assert_array_equal(dataset.over_sample_size_lp.slim, 2)


def test_via_lens_from_takes_any_light_model():
    class Plane:
        """Surface brightness linear in (y, x): the block mean is the value at the pixel centre."""

        def image_2d_from(self, grid: np.ndarray) -> np.ndarray:
            return 2.0 + grid[:, 0] - 0.5 * grid[:, 1]

    grid = Grid2D.uniform((9, 8), PIXEL_SCALES, over_sample_size=3)
    sim = SimulatorImaging(
        exposure_time=100.0,
        add_poisson_noise_to_data=False,
        include_poisson_noise_in_noise_map=False,
    )
    dataset = sim.via_lens_from(Plane(), grid)
    centres = np.asarray(grid.slim)
    np.testing.assert_allclose(dataset.data.slim, Plane().image_2d_from(centres), rtol=1e-13)
