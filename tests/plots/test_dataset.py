"""The dataset figure rendered to PNG, its content checked: axes, titles, arcsec extents,
orientation (y up), finite values at unmasked pixels."""

from __future__ import annotations

import numpy as np

from pipeline.plots import dataset_panel, extent_of
from tests.plots.support import assert_finite_where_shown, main_axes, save_png, value_at


def test_dataset_panel(imaging, tmp_path):
    figure = dataset_panel(imaging)
    save_png(figure, tmp_path / "dataset.png")
    axes = main_axes(figure)
    assert len(axes) == 6 and len(figure.axes) == 12  # six images, six colour bars
    titles = [ax.get_title() for ax in axes]
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
        expected = psf_frame if ax.get_title().startswith("PSF") else frame
        np.testing.assert_allclose(image.get_extent(), expected, rtol=0, atol=1e-12)
        assert image.origin == "upper"
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("x (arcsec)", "y (arcsec)")
        assert_finite_where_shown(image)
        labels[ax.get_title().split(" ")[0]] = image.colorbar.ax.get_ylabel()
    assert labels["Data"] == labels["Noise"] == "electrons per second"
    assert labels["Signal-to-noise"] == "S/N"
    assert labels["Over-sampling"] == "sub-pixels per axis"

    # y up: the value drawn at each unmasked pixel's (y, x) in arcsec is that pixel's
    data_ax = next(ax for ax in axes if ax.get_title() == "Data")
    over_ax = next(ax for ax in axes if ax.get_title().startswith("Over-sampling"))
    grid = imaging.grid.slim
    rng = np.random.default_rng(0)
    for i in rng.choice(len(grid), size=12, replace=False):
        y, x = grid[i]
        assert value_at(data_ax, data_ax.images[0], y, x) == imaging.data.slim[i]
        assert value_at(over_ax, over_ax.images[0], y, x) == imaging.over_sample_size_lp.slim[i]
    # masked pixels are blank, and the mask panel draws its outline
    assert np.array_equal(np.ma.getmaskarray(data_ax.images[0].get_array()), imaging.mask)
    mask_ax = next(ax for ax in axes if ax.get_title().startswith("Mask outline"))
    assert len(mask_ax.collections) >= 1
