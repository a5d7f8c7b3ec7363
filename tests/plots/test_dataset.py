"""The dataset figure rendered to PNG, its content checked: axes, titles clear of the colour bars,
arcsec extents, orientation (y up), finite values at unmasked pixels, units and stretches."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import AsinhNorm

from pipeline import Mask2D
from pipeline.exc import DatasetError
from pipeline.imaging import Array2D, Imaging
from pipeline.mock import simulate_lens
from pipeline.plots import dataset_panel, extent_of, operator_panel
from tests.plots.support import (
    assert_finite_where_shown,
    assert_titles_clear,
    main_axes,
    panel_title,
    save_png,
    value_at,
)


def test_dataset_panel(imaging, tmp_path):
    figure = dataset_panel(imaging)
    save_png(figure, tmp_path / "dataset.png")
    axes = main_axes(figure)
    assert len(axes) == 6 and len(figure.axes) == 12  # six images, six colour bars
    titles = [panel_title(ax) for ax in axes]
    for start in ("Data", "Noise map", "Signal-to-noise", "PSF", "Mask outline", "Over-sampling"):
        assert sum(t.startswith(start) for t in titles) == 1, (start, titles)
    assert imaging.name in figure.get_suptitle()

    frame = extent_of(imaging.shape_native, imaging.pixel_scales, imaging.mask.origin)
    ky, kx = imaging.psf.shape_native
    sy, sx = imaging.psf.pixel_scales
    psf_frame = (-kx * sx / 2, kx * sx / 2, -ky * sy / 2, ky * sy / 2)
    labels = {}
    for ax in axes:
        (image,) = ax.images
        expected = psf_frame if panel_title(ax).startswith("PSF") else frame
        np.testing.assert_allclose(image.get_extent(), expected, rtol=0, atol=1e-12)
        assert image.origin == "upper"
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("x (arcsec)", "y (arcsec)")
        assert_finite_where_shown(image)
        labels[panel_title(ax).split(" ")[0]] = image.colorbar.ax.get_ylabel()
    assert labels["Data"] == labels["Noise"] == labels["Mask"] == "data units"  # no BUNIT known
    assert labels["Signal-to-noise"] == "S/N"
    assert labels["Over-sampling"] == "sub-pixels per axis"

    # y up: the value drawn at each unmasked pixel's (y, x) in arcsec is that pixel's
    data_ax = next(ax for ax in axes if panel_title(ax) == "Data")
    over_ax = next(ax for ax in axes if panel_title(ax).startswith("Over-sampling"))
    grid = imaging.grid.slim
    rng = np.random.default_rng(0)
    for i in rng.choice(len(grid), size=12, replace=False):
        y, x = grid[i]
        assert value_at(data_ax, data_ax.images[0], y, x) == imaging.data.slim[i]
        assert value_at(over_ax, over_ax.images[0], y, x) == imaging.over_sample_size_lp.slim[i]
    # masked pixels are blank, and the mask panel draws its outline
    assert np.array_equal(np.ma.getmaskarray(data_ax.images[0].get_array()), imaging.mask)
    mask_ax = next(ax for ax in axes if panel_title(ax).startswith("Mask outline"))
    assert len(mask_ax.collections) >= 1
    assert_titles_clear(figure)


@pytest.fixture(scope="module")
def narrow() -> Imaging:
    """A tall, narrow frame with a long name: the case whose titles ran into the colour bars."""
    lens = simulate_lens((71, 30), (0.08, 0.05), psf_shape=(5, 3), seed=4)
    mask = Mask2D.circular(
        shape_native=lens.shape_native, pixel_scales=lens.pixel_scales, radius=1.2
    )
    imaging = Imaging(
        Array2D(lens.data.native, mask),
        Array2D(lens.noise_map.native, mask),
        lens.psf,
        name="a_lens_with_a_rather_long_survey_name_00001",
    )
    return imaging.apply_sparse_operator(backend="numpy")


def test_titles_never_run_into_colour_bars(narrow, tmp_path):
    for figure in (dataset_panel(narrow), operator_panel(narrow)):
        assert_titles_clear(figure)
        save_png(figure, tmp_path / "narrow.png")
    assert narrow.name in dataset_panel(narrow).get_suptitle().replace("\n", " ")


def test_units_come_from_bunit(narrow):
    figure = dataset_panel(narrow, bunit="MJy/sr")
    labels = {panel_title(ax).split(" ")[0]: ax.images[0].colorbar for ax in main_axes(figure)}
    assert labels["Data"].ax.get_ylabel() == labels["Noise"].ax.get_ylabel() == "MJy/sr"
    assert labels["Signal-to-noise"].ax.get_ylabel() == "S/N"
    operator = operator_panel(narrow, bunit="electron/s")
    units = [ax.images[0].colorbar.ax.get_ylabel() for ax in main_axes(operator)]
    assert len(units) == 3 and all("(electron/s)$^{-2}$" in u for u in units), units
    # a dollar sign in a BUNIT is text, not mathtext
    figure = dataset_panel(narrow, bunit="$ per pixel")
    figure.canvas.draw()
    assert main_axes(figure)[0].images[0].colorbar.ax.get_ylabel() == r"\$ per pixel"


def test_stretches(narrow):
    values = {}
    for stretch in ("asinh", "percentile", "linear"):
        figure = dataset_panel(narrow, stretch=stretch)
        data_ax = next(ax for ax in main_axes(figure) if panel_title(ax) == "Data")
        values[stretch] = data_ax.images[0].norm
    data = narrow.data.slim
    assert isinstance(values["asinh"], AsinhNorm)
    assert values["asinh"].vmax == pytest.approx(data.max())
    assert values["percentile"].vmin == pytest.approx(np.percentile(data, 0.5))
    assert values["percentile"].vmax == pytest.approx(np.percentile(data, 99.5))
    assert (values["linear"].vmin, values["linear"].vmax) == (data.min(), data.max())
    # asinh lifts the faint end: the median pixel is brighter on it than on the linear scale
    median = np.median(data)
    assert values["asinh"](median) > 2 * values["linear"](median)
    with pytest.raises(DatasetError, match="asinh, percentile, linear"):
        dataset_panel(narrow, stretch="log")
