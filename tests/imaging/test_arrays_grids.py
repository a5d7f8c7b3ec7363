"""Array2D, Grid2D and over-sampling against explicit loops over pixels and sub-pixels."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import (
    Array2D,
    Grid2D,
    Mask2D,
    over_sample_size_via_adapt_from,
    over_sample_size_via_radial_bins_from,
    over_sample_size_via_snr_from,
)
from pipeline.exc import ArrayError, OverSamplingError
from pipeline.imaging.over_sampling import OverSampler, over_sample_size_from


@pytest.fixture
def mask():
    # non-square, anisotropic, touching the array edge on the left
    m = np.ones((7, 9), dtype=bool)
    m[1:6, 0:6] = False
    m[3, 2] = True
    return Mask2D(m, (0.1, 0.25), origin=(0.3, -0.2))


def test_array_slim_native_round_trip_never_mutates(mask):
    native = np.arange(63.0).reshape(7, 9)
    before = native.copy()
    arr = Array2D(native, mask)
    np.testing.assert_array_equal(native, before)  # the reference zeroes masked input in place
    expected_slim = [native[r, c] for r in range(7) for c in range(9) if not mask[r, c]]
    np.testing.assert_array_equal(arr.slim, expected_slim)
    np.testing.assert_array_equal(arr.native, np.where(np.asarray(mask), 0.0, native))
    np.testing.assert_array_equal(Array2D(arr.slim, mask).native, arr.native)
    assert arr.shape_slim == mask.pixels_in_mask and arr.shape_native == (7, 9)
    with pytest.raises(ValueError):
        arr.slim[0] = 5.0
    with pytest.raises(ArrayError, match="fit neither"):
        Array2D(np.zeros(5), mask)


def test_array_arithmetic_stays_on_mask(mask):
    a = Array2D(np.arange(mask.pixels_in_mask, dtype=float), mask)
    b = (a * 2.0 + 1.0) / a.with_values(np.full(a.shape_slim, 2.0))
    assert isinstance(b, Array2D) and b.mask is mask
    np.testing.assert_allclose(b.slim, (np.arange(a.shape_slim) * 2.0 + 1.0) / 2.0)
    assert np.max(a) == a.shape_slim - 1


def test_array_resize_and_trim(mask):
    arr = Array2D(np.arange(63.0).reshape(7, 9), mask)
    trimmed = arr.trimmed_after_convolution_from((3, 5))
    assert trimmed.shape_native == (5, 5)
    np.testing.assert_array_equal(trimmed.native, arr.native[1:6, 2:7])
    np.testing.assert_array_equal(trimmed.mask, np.asarray(mask)[1:6, 2:7])
    padded = arr.resized_from((9, 11))
    np.testing.assert_array_equal(padded.native[1:8, 1:10], arr.native)
    assert padded.native[0].sum() == 0


def test_array_fits_round_trip(tmp_path, mask):
    arr = Array2D.no_mask(np.random.default_rng(0).normal(size=(6, 4)), (0.1, 0.2))
    arr.output_to_fits(tmp_path / "a.fits")
    back = Array2D.from_fits(tmp_path / "a.fits", pixel_scales=(0.1, 0.2))
    np.testing.assert_array_equal(back.native, arr.native)
    header = Array2D.from_fits(tmp_path / "a.fits", pixel_scales="header")
    assert header.pixel_scales == (0.1, 0.2)


def test_grid_coordinates_loop(mask):
    grid = Grid2D.from_mask(mask)
    i = 0
    for r in range(7):
        for c in range(9):
            if mask[r, c]:
                continue
            y = (3.0 - r) * 0.1 + 0.3
            x = (c - 4.0) * 0.25 - 0.2
            assert tuple(grid.slim[i]) == pytest.approx((y, x), abs=1e-15)
            assert tuple(grid.native[r, c]) == pytest.approx((y, x), abs=1e-15)
            i += 1
    assert i == grid.shape_slim


def _sub_grid_loop(mask, sizes):
    out = []
    grid = Grid2D.from_mask(mask).slim
    sy, sx = mask.pixel_scales
    for i, s in enumerate(sizes):
        for a in range(s):
            for b in range(s):
                out.append(
                    (
                        grid[i, 0] + sy / 2 - (a + 0.5) * sy / s,
                        grid[i, 1] - sx / 2 + (b + 0.5) * sx / s,
                    )
                )
    return np.array(out)


def test_over_sampled_grid_uniform_and_per_pixel(mask):
    n = mask.pixels_in_mask
    uniform = Grid2D.from_mask(mask, over_sample_size=3)
    np.testing.assert_allclose(uniform.over_sampled, _sub_grid_loop(mask, [3] * n), atol=1e-15)
    sizes = (np.arange(n) % 4) + 1
    per_pixel = Grid2D.from_mask(mask, over_sample_size=sizes)
    np.testing.assert_allclose(per_pixel.over_sampled, _sub_grid_loop(mask, sizes), atol=1e-15)
    assert per_pixel.over_sampler.sub_total == int((sizes**2).sum())


def test_binning_is_block_mean(mask):
    n = mask.pixels_in_mask
    sizes = (np.arange(n) % 3) + 1
    sampler = OverSampler(mask, sizes)
    values = np.random.default_rng(2).normal(size=sampler.sub_total)
    expected, start = [], 0
    for s in sizes:
        expected.append(sum(values[start : start + s * s]) / (s * s))
        start += s * s
    np.testing.assert_allclose(sampler.binned_array_2d_from(values).slim, expected, rtol=1e-14)
    with pytest.raises(OverSamplingError, match="sub-pixel values"):
        sampler.binned_array_2d_from(values[:-1])


def test_over_sample_size_validation(mask):
    assert (over_sample_size_from(np.int64(2), mask).slim == 2).all()  # reference: IndexError
    for bad in (0, -1, 2.5, True):
        with pytest.raises(OverSamplingError):
            over_sample_size_from(bad, mask)
    native = np.full(mask.shape, 2)
    native[np.asarray(mask)] = 0  # masked entries are ignored
    assert (over_sample_size_from(native, mask).slim == 2).all()
    slim = np.full(mask.pixels_in_mask, 2)
    slim[3] = 0
    with pytest.raises(OverSamplingError, match="row"):
        over_sample_size_from(slim, mask)


def test_radial_bins_helper_loop():
    mask = Mask2D.circular(shape_native=(15, 15), pixel_scales=0.1, radius=0.7)
    grid = Grid2D.from_mask(mask)
    sizes = over_sample_size_via_radial_bins_from(
        grid, sub_size_list=[8, 4, 2], radial_list=[0.2, 0.4], centre_list=[(0.0, 0.0), (0.3, 0.3)]
    )
    for i, (y, x) in enumerate(grid.slim):
        best = 0
        for cy, cx in [(0.0, 0.0), (0.3, 0.3)]:
            r = np.hypot(y - cy, x - cx)
            best = max(best, 8 if r <= 0.2 else 4 if r <= 0.4 else 2)
        assert sizes.slim[i] == best


def test_adapt_and_snr_helpers():
    mask = Mask2D.all_false((4, 5), 0.1)
    data = Array2D(np.arange(20.0), mask)
    noise = Array2D(np.ones(20), mask)
    sizes = over_sample_size_via_adapt_from(data, noise, signal_to_noise_cut=5.0)
    np.testing.assert_array_equal(sizes.slim, np.where(np.arange(20.0) > 5.0, 4, 2))
    low = over_sample_size_via_adapt_from(data * 0.1, noise, signal_to_noise_cut=5.0)
    # max S/N 1.9 < 2 * cut: the cut becomes 0.95
    np.testing.assert_array_equal(low.slim, np.where(np.arange(20.0) * 0.1 > 0.95, 4, 2))
    snr = over_sample_size_via_snr_from(
        data, signal_to_noise_cut=3.0, sub_size_lower=1, sub_size_upper=3
    )
    np.testing.assert_array_equal(snr.slim, np.where(np.arange(20.0) > 3.0, 3, 1))
