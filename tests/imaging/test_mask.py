"""Mask2D: factories against explicit per-pixel loops, index maps, edge and blurring masks."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from pipeline import Mask2D
from pipeline.exc import MaskError


def _centre_yx(row, col, shape, scales, origin=(0.0, 0.0)):
    ny, nx = shape
    return ((ny - 1) / 2 - row) * scales[0] + origin[0], (col - (nx - 1) / 2) * scales[1] + origin[
        1
    ]


def _loop_mask(shape, scales, unmasked_if):
    out = np.ones(shape, dtype=bool)
    for r in range(shape[0]):
        for c in range(shape[1]):
            y, x = _centre_yx(r, c, shape, scales)
            out[r, c] = not unmasked_if(y, x)
    return out


@pytest.mark.parametrize("shape,scales", [((9, 9), (0.5, 0.5)), ((12, 7), (0.1, 0.08))])
def test_circular_matches_loop(shape, scales):
    radius, centre = 0.33, (0.05, -0.04)
    mask = Mask2D.circular(shape_native=shape, pixel_scales=scales, radius=radius, centre=centre)
    expected = _loop_mask(
        shape, scales, lambda y, x: (y - centre[0]) ** 2 + (x - centre[1]) ** 2 < radius**2 - 1e-12
    )
    np.testing.assert_array_equal(mask, expected)
    assert mask.pixel_scales == scales
    assert mask.pixels_in_mask == int((~expected).sum()) > 0


def test_circular_annular_and_radii_order():
    shape, scales = (15, 13), (0.1, 0.12)
    mask = Mask2D.circular_annular(
        shape_native=shape, pixel_scales=scales, inner_radius=0.25, outer_radius=0.6
    )
    expected = _loop_mask(shape, scales, lambda y, x: 0.25**2 <= y * y + x * x <= 0.6**2)
    np.testing.assert_array_equal(mask, expected)
    with pytest.raises(MaskError, match="inner_radius"):
        Mask2D.circular_annular(
            shape_native=shape, pixel_scales=scales, inner_radius=0.7, outer_radius=0.6
        )


def _ellipse_radius(y, x, q, angle):
    phi = math.radians(angle)
    xr = x * math.cos(phi) + y * math.sin(phi)
    yr = -x * math.sin(phi) + y * math.cos(phi)
    return math.sqrt(xr**2 + (yr / q) ** 2)


def test_elliptical_matches_rotated_ellipse_loop():
    shape, scales = (21, 17), (0.1, 0.1)
    mask = Mask2D.elliptical(
        shape_native=shape, pixel_scales=scales, major_axis_radius=0.8, axis_ratio=0.5, angle=30.0
    )
    expected = _loop_mask(shape, scales, lambda y, x: _ellipse_radius(y, x, 0.5, 30.0) <= 0.8)
    np.testing.assert_array_equal(mask, expected)
    # counter-clockwise rotation: the pixel near r=0.7 along +30 deg lies inside the ellipse
    assert not mask[10 - round(0.35 / 0.1), 8 + round(0.6 / 0.1)]


def test_elliptical_annular_matches_loop():
    shape, scales = (19, 23), (0.1, 0.1)
    mask = Mask2D.elliptical_annular(
        shape_native=shape,
        pixel_scales=scales,
        inner_major_axis_radius=0.3,
        inner_axis_ratio=0.7,
        inner_phi=10.0,
        outer_major_axis_radius=0.9,
        outer_axis_ratio=0.6,
        outer_phi=60.0,
    )
    expected = _loop_mask(
        shape,
        scales,
        lambda y, x: (
            _ellipse_radius(y, x, 0.7, 10.0) >= 0.3 and _ellipse_radius(y, x, 0.6, 60.0) <= 0.9
        ),
    )
    np.testing.assert_array_equal(mask, expected)


def test_bad_parameters_raise():
    with pytest.raises(MaskError, match="axis_ratio"):
        Mask2D.elliptical(
            shape_native=(5, 5), pixel_scales=0.1, major_axis_radius=0.3, axis_ratio=0.0, angle=0.0
        )
    with pytest.raises(MaskError, match="pixel_scales"):
        Mask2D.all_false((5, 5), -0.1)
    with pytest.raises(MaskError, match="2-D"):
        Mask2D(np.zeros(5), 0.1)


def test_index_maps_are_row_major_and_inverse():
    mask = Mask2D(np.random.default_rng(1).random((7, 5)) > 0.5, (0.2, 0.3))
    nfs = mask.native_for_slim
    expected = [(r, c) for r in range(7) for c in range(5) if not mask[r, c]]
    np.testing.assert_array_equal(nfs, np.array(expected))
    sfn = mask.slim_for_native
    for i, (r, c) in enumerate(nfs):
        assert sfn[r, c] == i
    assert (sfn[np.asarray(mask)] == -1).all()
    np.testing.assert_array_equal(mask.unmasked_flat_indexes, nfs[:, 0] * 5 + nfs[:, 1])
    np.testing.assert_array_equal(mask.derive_indexes.masked_slim, np.flatnonzero(np.asarray(mask)))


def test_grid_and_mask_centre():
    mask = Mask2D.circular(
        shape_native=(10, 14),
        pixel_scales=(0.1, 0.2),
        radius=0.45,
        centre=(0.1, 0.3),
        origin=(1.0, -2.0),
    )
    for i, (r, c) in enumerate(mask.native_for_slim):
        y, x = _centre_yx(r, c, (10, 14), (0.1, 0.2), origin=(1.0, -2.0))
        assert mask.grid_slim[i] == pytest.approx((y, x), abs=1e-15)
    g = mask.grid_slim
    assert mask.mask_centre == pytest.approx(
        ((g[:, 0].max() + g[:, 0].min()) / 2, (g[:, 1].max() + g[:, 1].min()) / 2)
    )


def test_edge_mask_loop():
    mask = Mask2D.circular_annular(
        shape_native=(12, 12), pixel_scales=0.1, inner_radius=0.15, outer_radius=0.5
    )
    ny, nx = mask.shape
    expected = np.ones_like(np.asarray(mask))
    for r in range(ny):
        for c in range(nx):
            if mask[r, c]:
                continue
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    rr, cc = r + dy, c + dx
                    if not (0 <= rr < ny and 0 <= cc < nx) or mask[rr, cc]:
                        expected[r, c] = False
    np.testing.assert_array_equal(mask.edge, expected)
    np.testing.assert_array_equal(mask.derive_mask.edge, expected)


def _blurring_loop(mask, ky, kx):
    ny, nx = mask.shape
    out = np.ones_like(mask)
    for r in range(ny):
        for c in range(nx):
            if not mask[r, c]:
                continue
            for dy in range(-(ky // 2), ky // 2 + 1):
                for dx in range(-(kx // 2), kx // 2 + 1):
                    rr, cc = r + dy, c + dx
                    if 0 <= rr < ny and 0 <= cc < nx and not mask[rr, cc]:
                        out[r, c] = False
    return out


def test_blurring_mask_non_square_kernel():
    mask = Mask2D.circular(shape_native=(20, 17), pixel_scales=(0.1, 0.08), radius=0.45)
    blurring = mask.blurring_mask_from((5, 3))
    np.testing.assert_array_equal(blurring, _blurring_loop(np.asarray(mask), 5, 3))
    assert blurring.pixel_scales == mask.pixel_scales


def test_blurring_mask_pads_when_mask_reaches_the_edge():
    mask = Mask2D.all_false((6, 5), 0.1)
    with pytest.warns(UserWarning, match="padded"):
        blurring = mask.blurring_mask_from((5, 3))
    # 5x3 kernel: 2 rows and 1 column needed around the unmasked region -> (10, 7)
    assert blurring.shape == (10, 7)
    padded = np.pad(np.asarray(mask), ((2, 2), (1, 1)), constant_values=True)
    np.testing.assert_array_equal(blurring, _blurring_loop(padded, 5, 3))
    with pytest.raises(MaskError, match="allow_padding"):
        mask.blurring_mask_from((5, 3), allow_padding=False)


def test_resized_and_pickle():
    mask = Mask2D.circular(shape_native=(9, 8), pixel_scales=0.1, radius=0.25)
    small = mask.resized_from((5, 4))
    np.testing.assert_array_equal(small, np.asarray(mask)[4 - 2 : 4 + 3, 4 - 2 : 4 + 2])
    big = mask.resized_from((11, 10))
    assert big[0].all() and big[:, 0].all()
    np.testing.assert_array_equal(big[1:10, 1:9], mask)
    again = pickle.loads(pickle.dumps(mask))
    assert again.pixel_scales == mask.pixel_scales and np.array_equal(again, mask)


def test_fits_round_trip(tmp_path):
    mask = Mask2D.circular(shape_native=(9, 12), pixel_scales=(0.1, 0.2), radius=0.5)
    mask.output_to_fits(tmp_path / "mask.fits")
    back = Mask2D.from_fits(tmp_path / "mask.fits", pixel_scales=(0.1, 0.2))
    np.testing.assert_array_equal(back, mask)
    inverted = Mask2D.from_fits(tmp_path / "mask.fits", pixel_scales=(0.1, 0.2), invert=True)
    np.testing.assert_array_equal(inverted, ~np.asarray(mask))


def test_check_compatible_names_the_problem():
    mask = Mask2D.all_false((5, 6), 0.1)
    with pytest.raises(MaskError, match=r"shape \(5, 5\)"):
        mask.check_compatible(Mask2D.all_false((5, 5), 0.1))
    with pytest.raises(MaskError, match="pixel_scales"):
        mask.check_compatible(Mask2D.all_false((5, 6), 0.2))
