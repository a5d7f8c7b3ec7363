"""Mask frames and shapes (pipeline.imaging.frames) against direct pixel-by-pixel definitions."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.exc import MaskError, MaskPaddedWarning
from pipeline.imaging.frames import (
    blurring_mask_from,
    distance_squared,
    elliptical_radius,
    required_shape_for_kernel,
    resized_array_from,
    shape_pair,
)


def test_distance_and_elliptical_radius_pixel_by_pixel():
    shape, scales, centre = (5, 6), (0.1, 0.2), (0.05, -0.3)
    d2 = distance_squared(shape, scales, centre)
    r = elliptical_radius(shape, scales, centre, 0.5, 30.0)
    for row in range(shape[0]):
        for col in range(shape[1]):
            y = ((shape[0] - 1) / 2 - row) * scales[0] - centre[0]  # arcsec, y up
            x = (col - (shape[1] - 1) / 2) * scales[1] - centre[1]
            assert d2[row, col] == pytest.approx(x**2 + y**2, rel=1e-12, abs=1e-15)
            phi = np.radians(30.0)
            major = x * np.cos(phi) + y * np.sin(phi)
            minor = -x * np.sin(phi) + y * np.cos(phi)
            assert r[row, col] == pytest.approx(np.hypot(major, minor / 0.5), rel=1e-12, abs=1e-15)


def test_resized_array_crops_and_pads_around_the_centre_pixel():
    array = np.arange(30.0).reshape(5, 6)
    crop = resized_array_from(array, (3, 4))
    np.testing.assert_array_equal(crop, array[1:4, 1:5])  # centre (2, 3) stays the centre
    pad = resized_array_from(array, (7, 8), pad_value=-1.0)
    assert pad[3, 4] == array[2, 3]
    np.testing.assert_array_equal(pad[1:6, 1:7], array)
    assert (pad[0] == -1.0).all() and (pad[:, 0] == -1.0).all()


def test_required_shape_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(40):
        shape = tuple(int(n) for n in rng.integers(3, 12, size=2))
        mask = rng.random(shape) < 0.7
        mask[rng.integers(shape[0]), rng.integers(shape[1])] = False
        kernel = tuple(int(k) for k in rng.choice([1, 3, 5, 7], size=2))
        rows, cols = np.nonzero(~mask)
        # smallest symmetric padding p per axis with every unmasked pixel >= k // 2 from an edge
        py = next(
            p for p in range(20) if min(rows.min(), shape[0] - 1 - rows.max()) + p >= kernel[0] // 2
        )
        px = next(
            p for p in range(20) if min(cols.min(), shape[1] - 1 - cols.max()) + p >= kernel[1] // 2
        )
        assert required_shape_for_kernel(mask, kernel) == (shape[0] + 2 * py, shape[1] + 2 * px)


def test_blurring_mask_against_its_definition():
    mask = np.ones((9, 10), dtype=bool)
    mask[3:6, 4:7] = False
    mask[4, 5] = True
    blurring = blurring_mask_from(mask, (3, 5))
    for row in range(9):
        for col in range(10):
            near = any(
                not mask[r, c]
                for r in range(max(row - 1, 0), min(row + 2, 9))
                for c in range(max(col - 2, 0), min(col + 3, 10))
            )
            # a blurring pixel (False) is a masked pixel within the kernel of an unmasked one
            assert blurring[row, col] == (not (mask[row, col] and near))


def test_blurring_mask_pads_with_a_warning_or_refuses():
    mask = np.ones((5, 5), dtype=bool)
    mask[0, 2] = False  # on the edge: a 3x3 kernel needs one more row above
    with pytest.warns(MaskPaddedWarning, match=r"\(5, 5\) to \(7, 5\)"):
        assert blurring_mask_from(mask, (3, 3)).shape == (7, 5)
    with pytest.raises(MaskError, match="allow_padding=True"):
        blurring_mask_from(mask, (3, 3), allow_padding=False)


@pytest.mark.parametrize("bad", [(0, 4), (3,), "ab", None, (2.5, "x")])
def test_shape_pair_refuses_what_is_not_a_positive_pair(bad):
    with pytest.raises(MaskError, match="shape_native"):
        shape_pair(bad)
