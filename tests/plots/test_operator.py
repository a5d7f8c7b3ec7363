"""The sparse operator figure and the numbers behind it (row window, band magnitude, example
mapping), checked against the dense W."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.exc import DatasetError
from pipeline.imaging import Imaging
from pipeline.plots import example_mapping_matrix, extent_of, operator_panel, operator_row_window
from tests.plots.support import (
    assert_finite_where_shown,
    assert_titles_clear,
    main_axes,
    panel_title,
    save_png,
)


def test_operator_panel(imaging, tmp_path):
    operator = imaging.sparse_operator
    figure = operator_panel(imaging)
    save_png(figure, tmp_path / "operator.png")
    axes = main_axes(figure)
    assert len(axes) == 3 and len(figure.axes) == 6
    row_ax, band_ax, curvature_ax = axes
    assert panel_title(row_ax).startswith("Row of W")
    assert panel_title(band_ax).startswith("Band magnitude")
    assert panel_title(curvature_ax).startswith("Curvature matrix F")
    assert_titles_clear(figure)
    for ax in axes:
        assert_finite_where_shown(ax.images[0])
        assert "(data units)$^{-2}$" in ax.images[0].colorbar.ax.get_ylabel()  # no BUNIT

    ky, kx = operator.kernel_shape
    ry, rx = 2 * (ky // 2), 2 * (kx // 2)
    sy, sx = imaging.pixel_scales
    window_frame = (-(rx + 0.5) * sx, (rx + 0.5) * sx, -(ry + 0.5) * sy, (ry + 0.5) * sy)
    np.testing.assert_allclose(row_ax.images[0].get_extent(), window_frame, atol=1e-12)
    assert (row_ax.get_xlabel(), row_ax.get_ylabel()) == ("Δx (arcsec)", "Δy (arcsec)")
    frame = extent_of(imaging.shape_native, imaging.pixel_scales, imaging.mask.origin)
    np.testing.assert_allclose(band_ax.images[0].get_extent(), frame, atol=1e-12)

    dense = operator.to_dense()
    band = np.ma.getdata(band_ax.images[0].get_array())[~np.asarray(imaging.mask)]
    np.testing.assert_allclose(band, np.abs(dense).sum(axis=1), rtol=1e-12)
    expected_f = operator.curvature_matrix_from(example_mapping_matrix(imaging))
    np.testing.assert_array_equal(curvature_ax.images[0].get_array(), expected_f)


def test_operator_row_window_is_the_row_of_w(imaging):
    operator = imaging.sparse_operator
    dense = operator.to_dense()
    layout = operator.layout
    ky, kx = operator.kernel_shape
    ry, rx = 2 * (ky // 2), 2 * (kx // 2)
    ny, nx = layout.shape_native
    for i in (0, layout.n_pixels // 2, layout.n_pixels - 1):
        window = operator_row_window(operator, i)
        row, col = layout.native_for_slim[i]
        expected = np.full(window.shape, np.nan)
        for dy in range(-ry, ry + 1):
            for dx in range(-rx, rx + 1):
                r, c = row + dy, col + dx
                if 0 <= r < ny and 0 <= c < nx and not layout.mask[r, c]:
                    expected[dy + ry, dx + rx] = dense[i, layout.slim_for_native[r, c]]
        np.testing.assert_array_equal(window.filled(np.nan), expected)
        # every nonzero of the row is inside the window
        assert np.count_nonzero(dense[i]) == np.count_nonzero(window.filled(0.0))


def test_operator_panel_pixel_choice_and_errors(stored):
    mask = np.asarray(stored.mask)
    row, col = np.argwhere(~mask)[3]
    figure = operator_panel(stored, pixel=(row, col))
    assert f"(row {row}, col {col})" in panel_title(figure.axes[0])
    masked = tuple(np.argwhere(mask)[0])
    with pytest.raises(DatasetError, match="masked or outside"):
        operator_panel(stored, pixel=masked)
    without = Imaging(stored.data, stored.noise_map, stored.psf, name="bare")
    with pytest.raises(DatasetError, match="no sparse operator"):
        operator_panel(without)


def test_example_mapping_matrix(imaging):
    mapping = example_mapping_matrix(imaging, shape=(4, 5))
    assert mapping.shape[0] == imaging.shape_slim and 1 <= mapping.shape[1] <= 20
    np.testing.assert_array_equal(mapping.sum(axis=1).A1, 1.0)
    assert np.all(mapping.sum(axis=0).A1 >= 1)  # no empty source pixel
    # source cells are ordered from the top-left, as image rows are: first cell is above the last
    grid = imaging.grid.slim
    cells = mapping.indices
    assert grid[cells == 0, 0].mean() > grid[cells == cells.max(), 0].mean()
