"""Porting parity with PyAutoArray: the same calls bind to the same parameters and give the same
masks, ``.array`` works on ``.native``/``.slim``/``.over_sampled``, PyAutoArray's extra keywords are
accepted with their meaning or refused by name, and a ``noise_seed`` gives the reference's noise.

Tests marked ``autoarray`` compare with the reference library itself and run only where it is
importable (``/work/venv312``, ``lenspipe[autoarray]``); the others need only lenspipe.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import numpy as np
import pytest

import pipeline as lp
from pipeline.exc import ArrayError, DatasetError, GridError, KernelError, MaskError
from pipeline.imaging.arrays import ArrayView
from tests.helpers import import_autoarray, quietly

FAKE_JAX_NUMPY = SimpleNamespace(__name__="jax.numpy")


def _coordinates(shape, scales):
    ny, nx = shape
    rows, cols = np.indices(shape)
    return ((ny - 1) / 2 - rows) * scales[0], (cols - (nx - 1) / 2) * scales[1]


# ---------------------------------------------------------------------------------- positional order
def test_autoarray_style_positional_circular_is_a_circle_of_that_radius():
    mask = lp.Mask2D.circular((40, 40), 1.2, 0.1)
    keyword = lp.Mask2D.circular(shape_native=(40, 40), radius=1.2, pixel_scales=0.1)
    np.testing.assert_array_equal(mask, keyword)
    assert mask.pixel_scales == (0.1, 0.1)
    y, x = _coordinates((40, 40), (0.1, 0.1))
    np.testing.assert_array_equal(np.asarray(mask), ~(y**2 + x**2 < 1.2**2))
    assert 400 < mask.pixels_in_mask < 480  # ~pi 12^2 pixels, not an empty or full mask


def test_positional_origin_then_centre_as_the_reference():
    # (shape_native, radius, pixel_scales, origin, centre): the origin does not move the circle
    mask = lp.Mask2D.circular((30, 36), 0.8, (0.1, 0.12), (5.0, -3.0), (0.3, -0.4))
    assert mask.origin == (5.0, -3.0)
    y, x = _coordinates((30, 36), (0.1, 0.12))
    np.testing.assert_array_equal(np.asarray(mask), ~((y - 0.3) ** 2 + (x + 0.4) ** 2 < 0.8**2))


def test_positional_annular_and_elliptical_factories_match_the_keyword_form():
    shape, scales = (40, 44), (0.1, 0.1)
    annular = lp.Mask2D.circular_annular(shape, 0.4, 1.2, scales)
    y, x = _coordinates(shape, scales)
    d2 = y**2 + x**2
    np.testing.assert_array_equal(np.asarray(annular), ~((d2 >= 0.4**2) & (d2 <= 1.2**2)))
    np.testing.assert_array_equal(
        lp.Mask2D.elliptical(shape, 1.5, 0.6, 30.0, scales, (0.0, 0.0), (0.1, 0.2)),
        lp.Mask2D.elliptical(
            shape_native=shape,
            major_axis_radius=1.5,
            axis_ratio=0.6,
            angle=30.0,
            pixel_scales=scales,
            centre=(0.1, 0.2),
        ),
    )
    np.testing.assert_array_equal(
        lp.Mask2D.elliptical_annular(shape, 0.3, 0.7, 10.0, 1.6, 0.6, 60.0, scales),
        lp.Mask2D.elliptical_annular(
            shape_native=shape,
            inner_major_axis_radius=0.3,
            inner_axis_ratio=0.7,
            inner_phi=10.0,
            outer_major_axis_radius=1.6,
            outer_axis_ratio=0.6,
            outer_phi=60.0,
            pixel_scales=scales,
        ),
    )


def test_from_pixel_coordinates_buffer_unmasks_a_square_around_each_pixel():
    mask = lp.Mask2D.from_pixel_coordinates((8, 9), [[1, 1], [5, 6]], 0.1, (0.0, 0.0), 1)
    expected = np.ones((8, 9), dtype=bool)
    expected[0:3, 0:3] = False
    expected[4:7, 5:8] = False
    np.testing.assert_array_equal(np.asarray(mask), expected)
    with pytest.raises(MaskError, match="buffer"):
        lp.Mask2D.from_pixel_coordinates((8, 9), [[1, 1]], 0.1, buffer=-1)


# ---------------------------------------------------------------------------------- .array
@pytest.fixture
def array():
    mask = lp.Mask2D.circular(shape_native=(7, 8), radius=0.3, pixel_scales=0.1)
    values = np.arange(mask.pixels_in_mask, dtype=np.float64) + 1.0
    return lp.Array2D(values, mask)


def test_array_works_on_native_slim_and_over_sampled(array):
    native = array.native
    assert type(native.array) is np.ndarray and native.array.shape == (7, 8)
    np.testing.assert_array_equal(native.array, np.asarray(native))
    assert type(array.slim.array) is np.ndarray
    np.testing.assert_array_equal(array.slim.array, array.array)
    grid = lp.Grid2D.from_mask(array.mask, over_sample_size=2)
    assert type(grid.native.array) is np.ndarray and grid.native.array.shape == (7, 8, 2)
    assert type(grid.slim.array) is np.ndarray
    over = grid.over_sampled.array
    assert type(over) is np.ndarray and over.shape == (4 * array.shape_slim, 2)


def test_numpy_operations_on_native_give_plain_values(array):
    native = array.native
    assert isinstance(native, np.ndarray) and isinstance(native, ArrayView)
    for result in (
        native * 2.0,
        native + native,
        np.sqrt(native),
        np.where(native > 2.0, native, 0.0),
        np.concatenate([native, native]),
        native.sum(axis=0),
        native.mean(axis=1),
    ):
        assert type(result) is np.ndarray
    assert type(native.sum()) is np.float64 and native.sum() == array.sum()
    assert type(native.max()) is np.float64
    assert type(np.asarray(native)) is np.ndarray
    assert type(array.slim - 1.0) is np.ndarray


# ---------------------------------------------------------------------------------- Convolver
def test_convolver_use_fft_chooses_the_method():
    rng = np.random.default_rng(5)
    kernel = rng.uniform(-0.1, 1.0, size=(5, 3))
    mask = lp.Mask2D.circular(shape_native=(15, 14), radius=0.5, pixel_scales=0.1)
    image = lp.Array2D(rng.uniform(size=mask.pixels_in_mask), mask)
    direct = lp.Convolver(kernel, use_fft=False)
    fft = lp.Convolver(kernel, None, False, True)
    assert direct.use_fft is False and fft.use_fft is True and lp.Convolver(kernel).use_fft is None
    out_direct = direct.convolved_image_from(image, None).slim
    np.testing.assert_array_equal(
        out_direct, direct.convolved_image_from(image, None, method="direct").slim
    )
    np.testing.assert_array_equal(
        fft.convolved_image_from(image, None).slim,
        fft.convolved_image_from(image, None, method="fft").slim,
    )
    np.testing.assert_allclose(fft.convolved_image_from(image, None).slim, out_direct, atol=1e-14)
    assert direct.normalized.use_fft is False


def test_convolver_second_positional_is_the_state_as_in_the_reference():
    with pytest.raises(KernelError, match="state=True is not supported"):
        lp.Convolver(np.ones((3, 3)), True)
    with pytest.raises(KernelError, match="use_fft"):
        lp.Convolver(np.ones((3, 3)), use_fft="yes")


# ---------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    ("call", "error", "keyword"),
    [
        (lambda: lp.Mask2D(np.zeros((3, 3)), 0.1, xp=FAKE_JAX_NUMPY), MaskError, "xp"),
        (lambda: lp.Array2D.no_mask(np.ones((3, 3)), 0.1, header={}), ArrayError, "header"),
        (
            lambda: lp.Array2D(np.ones(4), lp.Mask2D.all_false((2, 2), 0.1), store_native=True),
            ArrayError,
            "store_native",
        ),
        (
            lambda: lp.Grid2D.from_mask(lp.Mask2D.all_false((2, 2), 0.1), xp=FAKE_JAX_NUMPY),
            GridError,
            "xp",
        ),
        (
            lambda: lp.Grid2D(np.zeros((4, 2)), lp.Mask2D.all_false((2, 2), 0.1), True),
            GridError,
            "store_native",
        ),
        (lambda: lp.SimulatorImaging(1.0, use_jax=True), DatasetError, "use_jax"),
        (
            lambda: lp.Convolver.no_blur(0.1).convolved_image_from(
                lp.Array2D.no_mask(np.ones((3, 3)), 0.1), None, use_mixed_precision=True
            ),
            KernelError,
            "use_mixed_precision",
        ),
        (
            lambda: lp.Convolver.no_blur(0.1).convolved_image_from(
                lp.Array2D.no_mask(np.ones((3, 3)), 0.1), None, "fft"
            ),
            KernelError,
            "jax_method",
        ),
    ],
)
def test_keywords_without_meaning_are_refused_by_name(call, error, keyword):
    with pytest.raises(error, match=f"{keyword}=.*not supported"):
        call()


def test_simulator_takes_the_reference_positional_order():
    image = lp.Array2D.no_mask(np.full((9, 9), 2.0), 0.1)
    psf = lp.Convolver.from_gaussian((3, 3), 0.1, sigma=0.1)
    # (exposure_time, sky, subtract, psf, use_real_space_convolution, normalize_psf, add_noise)
    sim = lp.SimulatorImaging(100.0, 0.0, True, psf, False, True, False)
    assert sim.use_real_space_convolution is False and sim.add_poisson_noise_to_data is False
    dataset = sim.via_image_from(image)
    np.testing.assert_allclose(
        dataset.data.native, psf.normalized.convolved_image_from(image).native, rtol=1e-13
    )
    same = sim.via_image_from(image, None, True)  # image_is_convolved: no blurring
    np.testing.assert_array_equal(same.data.native, image.native)


# ---------------------------------------------------------------------------------- the reference
def _named(signature: inspect.Signature) -> list[str]:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in signature.parameters.values() if p.kind in kinds]


SHARED_CALLS = [
    "Mask2D",
    "Mask2D.all_false",
    "Mask2D.circular",
    "Mask2D.circular_annular",
    "Mask2D.elliptical",
    "Mask2D.elliptical_annular",
    "Mask2D.from_pixel_coordinates",
    "Mask2D.from_fits",
    "Mask2D.resized_from",
    "Array2D",
    "Array2D.no_mask",
    "Array2D.full",
    "Array2D.ones",
    "Array2D.zeros",
    "Array2D.from_fits",
    "Array2D.apply_mask",
    "Array2D.resized_from",
    "Array2D.trimmed_after_convolution_from",
    "Grid2D",
    "Grid2D.from_mask",
    "Grid2D.uniform",
    "Grid2D.distances_to_coordinate_from",
    "Imaging",
    "Imaging.from_fits",
    "Imaging.apply_mask",
    "Imaging.apply_noise_scaling",
    "Imaging.apply_over_sampling",
    "Imaging.apply_sparse_operator",
    "Imaging.apply_sparse_operator_cpu",
    "Imaging.trimmed_after_convolution_from",
    "Convolver",
    "Convolver.no_blur",
    "Convolver.from_gaussian",
    "Convolver.from_fits",
    "Convolver.convolved_image_from",
    "Convolver.convolved_mapping_matrix_from",
    "SimulatorImaging",
    "SimulatorImaging.via_image_from",
    "OverSampler",
    "OverSampler.binned_array_2d_from",
    "over_sample_size_via_radial_bins_from",
    "over_sample_size_via_adapt_from",
    "over_sample_size_via_snr_from",
]


def _resolve(module, dotted: str):
    head, _, attribute = dotted.partition(".")
    if head.startswith("over_sample_size_via"):
        module = module.util.over_sample if hasattr(module, "util") else module
    obj = getattr(module, head)
    return getattr(obj, attribute) if attribute else obj


@pytest.mark.autoarray
@pytest.mark.parametrize("dotted", SHARED_CALLS)
def test_positional_parameters_are_the_references(dotted):
    aa = import_autoarray()
    ours = _named(inspect.signature(_resolve(lp, dotted)))
    theirs = _named(inspect.signature(_resolve(aa, dotted)))
    # lenspipe's own additions are keyword only, so every positional call binds the same way
    assert ours == theirs, f"{dotted}: ours {ours}, autoarray {theirs}"


def _random_geometry(rng):
    shape = (int(rng.integers(12, 41)), int(rng.integers(12, 41)))
    scales = (float(rng.uniform(0.05, 0.2)), float(rng.uniform(0.05, 0.2)))
    extent = 0.5 * min(shape[0] * scales[0], shape[1] * scales[1])
    origin = (float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1)))
    centre = (float(rng.uniform(-0.2, 0.2)) * extent, float(rng.uniform(-0.2, 0.2)) * extent)
    return shape, scales, extent, origin, centre


@pytest.mark.autoarray
@pytest.mark.parametrize("seed", range(8))
def test_positional_mask_factories_equal_the_references(seed):
    aa = import_autoarray()
    rng = np.random.default_rng(seed)
    shape, scales, extent, origin, centre = _random_geometry(rng)
    r_in, r_out = sorted(rng.uniform(0.1, 1.0, size=2) * extent)
    q, phi = float(rng.uniform(0.3, 1.0)), float(rng.uniform(0, 180))
    q2, phi2 = float(rng.uniform(0.3, 1.0)), float(rng.uniform(0, 180))
    cases = [
        ("circular", (shape, r_out, scales, origin, centre)),
        ("circular_annular", (shape, r_in, r_out, scales, origin, centre)),
        ("elliptical", (shape, r_out, q, phi, scales, origin, centre)),
        ("elliptical_annular", (shape, r_in, q, phi, r_out, q2, phi2, scales, origin, centre)),
        ("all_false", (shape, scales, origin, True)),
        ("from_pixel_coordinates", (shape, [[2, 3], [shape[0] - 3, 5]], scales, origin, 2)),
    ]
    for name, args in cases:
        ours = getattr(lp.Mask2D, name)(*args)
        theirs = getattr(aa.Mask2D, name)(*args)
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs), err_msg=name)
        assert ours.pixel_scales == tuple(theirs.pixel_scales), name
        assert ours.origin == tuple(theirs.origin), name


@pytest.mark.autoarray
@pytest.mark.parametrize("seed", range(6))
def test_a_noise_seed_gives_the_references_noise(seed):
    aa = import_autoarray()
    rng = np.random.default_rng(100 + seed)
    shape = (int(rng.integers(9, 30)), int(rng.integers(9, 30)))
    scales = float(rng.uniform(0.05, 0.2))
    values = rng.uniform(0.0, 3.0, size=shape)
    kernel = rng.uniform(0.0, 1.0, size=(5, 3)) if seed % 2 else None
    settings = {
        "exposure_time": float(rng.uniform(50, 2000)),
        "background_sky_level": float(rng.uniform(0.1, 2.0)),
        "noise_seed": int(rng.integers(0, 2**31)),
        "subtract_background_sky": bool(seed % 3),
    }
    ours = lp.SimulatorImaging(
        psf=None if kernel is None else lp.Convolver(kernel, pixel_scales=scales), **settings
    ).via_image_from(lp.Array2D.no_mask(values, scales))
    their_psf = None
    if kernel is not None:
        their_psf = aa.Convolver(kernel=aa.Array2D.no_mask(kernel.copy(), pixel_scales=scales))
    theirs = quietly(
        aa.SimulatorImaging(psf=their_psf, **settings).via_image_from,
        image=aa.Array2D.no_mask(values.copy(), pixel_scales=scales),
    )
    # without a PSF the blurred images are identical, so every value is: with one, the blurred
    # images agree to rounding (different convolution code) and the draws must still be the same
    rtol = 0.0 if kernel is None else 1e-12
    np.testing.assert_allclose(ours.data.native, theirs.data.native.array, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(
        ours.noise_map.native, theirs.noise_map.native.array, rtol=rtol, atol=rtol
    )
