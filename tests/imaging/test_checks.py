"""Input checks at unmasked pixels (pipeline.imaging.checks): counts, first pixel, the fix."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.exc import DatasetError, InvalidValueError
from pipeline.imaging import Array2D, Mask2D
from pipeline.imaging.checks import check_finite, check_positive, checked_covariance


def _masked(values: np.ndarray) -> Array2D:
    mask = np.zeros(values.shape, dtype=bool)
    mask[0, 0] = True  # a masked pixel holding a bad value is never reported
    return Array2D.no_mask(values, 0.1).apply_mask(Mask2D(mask, 0.1))


def test_non_finite_values_name_the_count_and_the_first_unmasked_pixel():
    values = np.ones((4, 5))
    values[0, 0] = np.nan  # masked
    values[2, 3], values[3, 1] = np.inf, np.nan
    with pytest.raises(
        InvalidValueError,
        match=r"lens_7: data has 2 non-finite values .*"
        r"first: inf at row 2, col 3\); mask those pixels",
    ):
        check_finite(_masked(values), "data", "lens_7")
    values[2, 3] = values[3, 1] = 1.0
    check_finite(_masked(values), "data", "lens_7")  # the masked NaN is fine


def test_non_positive_noise_is_refused_at_unmasked_pixels_only():
    noise = np.full((4, 5), 0.5)
    noise[0, 0] = -1.0  # masked
    noise[1, 2] = 0.0
    with pytest.raises(InvalidValueError, match=r"1 values <= 0 .*first: 0.0 at row 1, col 2"):
        check_positive(_masked(noise), "lens_7")
    noise[1, 2] = 1e-300
    check_positive(_masked(noise), "lens_7")


def test_checked_covariance():
    mask = Mask2D.all_false((2, 3), 0.1)
    assert checked_covariance(None, mask, "x") is None
    cov = np.eye(6) * 2.0
    out = checked_covariance(cov, mask, "x")
    assert out is not None and out is not cov and not out.flags.writeable
    np.testing.assert_array_equal(out, cov)
    with pytest.raises(DatasetError, match=r"shape \(5, 5\); it must be \(6, 6\)"):
        checked_covariance(np.eye(5), mask, "x")
    cov[1, 2] = np.nan
    with pytest.raises(InvalidValueError, match="non-finite"):
        checked_covariance(cov, mask, "x")
