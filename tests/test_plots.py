"""Figures of ``pipeline.plots`` rendered to PNG from a small store (and from an in-memory dataset
with non-square pixels and a shifted origin), with their content checked: axes, titles, arcsec
extents, orientation (y up), finite values at unmasked pixels, and the numbers behind the panels."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from matplotlib.backend_bases import MouseEvent

from pipeline import Mask2D
from pipeline.cli import main
from pipeline.exc import DatasetError
from pipeline.flow.config import load_config
from pipeline.flow.run import run_survey
from pipeline.flow.simulate import simulate_survey
from pipeline.imaging import Array2D, Imaging
from pipeline.imaging.geometry import pixel_centre_coordinates
from pipeline.imaging.simulator import simulate_lens
from pipeline.io.store import list_datasets, open_imaging, open_store
from pipeline.plots import (
    dataset_panel,
    example_mapping_matrix,
    extent_of,
    operator_panel,
    operator_row_window,
    survey_overview,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BROKEN = "lens_00012"  # its noise map is not a FITS file: the dataset fails


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """Three simulated lenses run on a one-worker LocalCluster: two complete, one failed."""
    folder = tmp_path_factory.mktemp("survey")
    config_path = simulate_survey(folder, 3, seed=10, shape_range=(40, 50), psf_shapes=(5, 7))
    config = yaml.safe_load(config_path.read_text())
    config["cluster"] = {"kind": "local", "n_workers": 1}
    config["run"]["progress"] = False
    config["over_sampling"] = {
        "kind": "radial",
        "sub_size_list": [4, 2, 1],
        "radial_list": [0.4, 1],
    }
    config_path.write_text(yaml.safe_dump(config))
    (folder / BROKEN / "noise_map.fits").write_bytes(b"not a FITS file")
    summary = run_survey(load_config(config_path))
    assert summary.complete == 2 and summary.failed == 1
    return str(folder / "survey.zarr")


@pytest.fixture(scope="module")
def stored(store) -> Imaging:
    name = next(n for n, status in list_datasets(store).items() if status == "complete")
    return open_imaging(store, name)


@pytest.fixture(scope="module")
def skewed() -> Imaging:
    """Non-square pixels, a non-square frame, a shifted origin, an off-centre mask: any mix-up of
    axes or orientation shows."""
    lens = simulate_lens((31, 24), (0.08, 0.05), psf_shape=(5, 3), seed=4)
    origin = (0.3, -0.2)
    mask = Mask2D.circular(lens.shape_native, lens.pixel_scales, radius=0.9, centre=(0.25, 0.1))
    mask = Mask2D(np.asarray(mask), lens.pixel_scales, origin)
    sizes = np.where(np.arange(mask.size).reshape(mask.shape) % 3 == 0, 3, 1)
    imaging = Imaging(
        Array2D(lens.data.native, mask),
        Array2D(lens.noise_map.native, mask),
        lens.psf,
        over_sample_size_lp=Array2D(sizes, mask),
        name="skewed",
    )
    return imaging.apply_sparse_operator(batch_size=64, backend="numpy")


@pytest.fixture(params=["stored", "skewed"])
def imaging(request) -> Imaging:
    return request.getfixturevalue(request.param)


def _png(figure, path: Path) -> None:
    figure.savefig(path, dpi=50)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert path.stat().st_size > 5_000


def _main_axes(figure):
    """The plotting axes (colour bars excluded)."""
    colorbars = {
        image.colorbar.ax
        for ax in figure.axes
        for image in ax.images
        if getattr(image, "colorbar", None) is not None
    }
    return [ax for ax in figure.axes if ax not in colorbars]


def _assert_finite_where_shown(image) -> None:
    array = image.get_array()
    shown = ~np.ma.getmaskarray(array)
    assert shown.any()
    assert np.all(np.isfinite(np.ma.getdata(array)[shown]))


def _value_at(ax, image, y: float, x: float) -> float:
    """The image value drawn at arcsec (y, x), as the mouse-over readout finds it."""
    display_x, display_y = ax.transData.transform((x, y))
    event = MouseEvent("motion_notify_event", ax.figure.canvas, display_x, display_y)
    return image.get_cursor_data(event)


# ---------------------------------------------------------------------------------------- extents
def test_extent_is_half_a_pixel_beyond_the_pixel_centres():
    shape, scales, origin = (5, 4), (0.2, 0.1), (1.0, -2.0)
    y, x = pixel_centre_coordinates(shape, scales, origin)
    x_min, x_max, y_min, y_max = extent_of(shape, scales, origin)
    assert x_min == pytest.approx(x.min() - 0.05) and x_max == pytest.approx(x.max() + 0.05)
    assert y_min == pytest.approx(y.min() - 0.1) and y_max == pytest.approx(y.max() + 0.1)
    # row 0 is the top (largest y): imshow(origin="upper") puts it at y_max
    assert y[0, 0] > y[-1, 0]


# ---------------------------------------------------------------------------------------- dataset
def test_dataset_panel(imaging, tmp_path):
    figure = dataset_panel(imaging)
    _png(figure, tmp_path / "dataset.png")
    axes = _main_axes(figure)
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
        _assert_finite_where_shown(image)
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
        assert _value_at(data_ax, data_ax.images[0], y, x) == imaging.data.slim[i]
        assert _value_at(over_ax, over_ax.images[0], y, x) == imaging.over_sample_size_lp.slim[i]
    # masked pixels are blank, and the mask panel draws its outline
    assert np.array_equal(np.ma.getmaskarray(data_ax.images[0].get_array()), imaging.mask)
    mask_ax = next(ax for ax in axes if ax.get_title().startswith("Mask outline"))
    assert len(mask_ax.collections) >= 1


# ---------------------------------------------------------------------------------------- operator
def test_operator_panel(imaging, tmp_path):
    operator = imaging.sparse_operator
    figure = operator_panel(imaging)
    _png(figure, tmp_path / "operator.png")
    axes = _main_axes(figure)
    assert len(axes) == 3 and len(figure.axes) == 6
    row_ax, band_ax, curvature_ax = axes
    assert row_ax.get_title().startswith("Row of W")
    assert band_ax.get_title().startswith("Band magnitude")
    assert curvature_ax.get_title().startswith("Curvature matrix F")
    for ax in axes:
        _assert_finite_where_shown(ax.images[0])
        assert "(electrons per second)$^{-2}$" in ax.images[0].colorbar.ax.get_ylabel()

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
    assert f"(row {row}, col {col})" in figure.axes[0].get_title()
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


# ---------------------------------------------------------------------------------------- survey
def test_survey_overview(store, tmp_path):
    figure = survey_overview(store)
    _png(figure, tmp_path / "survey.png")
    assert len(figure.axes) == 4
    status_ax, pixels_ax, kernels_ax, time_ax = figure.axes
    assert status_ax.get_title().startswith("Datasets by status")
    heights = {
        tick.get_text(): patch.get_height()
        for tick, patch in zip(status_ax.get_xticklabels(), status_ax.patches, strict=True)
    }
    assert heights == {"complete": 2, "prepared": 0, "failed": 1}
    assert pixels_ax.get_title().startswith("Unmasked pixels per dataset")
    assert sum(p.get_height() for p in pixels_ax.patches) == 2  # the failed one has no pixels
    kernel_counts = {
        tick.get_text(): patch.get_height()
        for tick, patch in zip(kernels_ax.get_xticklabels(), kernels_ax.patches, strict=True)
    }
    assert kernel_counts == {"5×5": 1, "7×7": 1}
    assert time_ax.get_title().startswith("Task time per dataset")
    points = np.concatenate([c.get_offsets() for c in time_ax.collections])
    assert points.shape == (2, 2) and np.all(np.isfinite(points)) and np.all(points[:, 1] > 0)
    last_run = open_store(store).attrs["last_run"]
    assert last_run["run_id"] in figure.get_suptitle()


# ---------------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("kind", ["dataset", "operator", "survey"])
def test_cli_plot_writes_a_png(store, stored, tmp_path, kind, capsys):
    output = tmp_path / "out" / f"{kind}.png"
    code = main(["plot", store, stored.name, "-o", str(output), "--kind", kind, "--dpi", "40"])
    assert code == 0, capsys.readouterr()
    assert output.read_bytes()[:8] == PNG_SIGNATURE and output.stat().st_size > 2_000


def test_cli_plot_defaults_and_errors(store, stored, tmp_path, capsys):
    survey_png, dataset_png = tmp_path / "survey.png", tmp_path / "dataset.png"
    assert main(["plot", store, "-o", str(survey_png), "--dpi", "40"]) == 0  # no NAME: survey
    assert main(["plot", store, stored.name, "-o", str(dataset_png), "--dpi", "40"]) == 0
    assert survey_png.stat().st_size > 0 and dataset_png.stat().st_size > 0
    capsys.readouterr()
    assert main(["plot", store, "-o", str(tmp_path / "x.png"), "--kind", "operator"]) == 2
    assert "needs the dataset NAME" in capsys.readouterr().err
    assert main(["plot", store, BROKEN, "-o", str(tmp_path / "x.png")]) == 2
    assert "failed" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_plots_never_touch_pyplot(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        from pipeline.imaging.simulator import simulate_lens
        from pipeline import Mask2D, plots
        lens = simulate_lens((24, 24), 0.1, psf_shape=(3, 3), seed=1)
        lens = lens.apply_mask(Mask2D.circular((24, 24), 0.1, radius=1.0))
        lens = lens.apply_sparse_operator(backend="numpy")
        plots.dataset_panel(lens).savefig({str(tmp_path / "a.png")!r})
        plots.operator_panel(lens).savefig({str(tmp_path / "b.png")!r})
        assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
        """
    )
    env_python = sys.executable
    result = subprocess.run(
        [env_python, "-W", "error", "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "a.png").stat().st_size > 0 and (tmp_path / "b.png").stat().st_size > 0
