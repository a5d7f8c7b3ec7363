"""Helpers of the figure tests: PNG output, the plotting axes of a figure and their panels' titles,
what an image shows, titles clear of every axes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backend_bases import MouseEvent

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BROKEN = "lens_00012"  # its noise map is not a FITS file: the dataset fails


def save_png(figure, path: Path) -> None:
    figure.savefig(path, dpi=50)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert path.stat().st_size > 5_000


def main_axes(figure):
    """The plotting axes (colour bars excluded)."""
    colorbars = {
        image.colorbar.ax
        for ax in figure.axes
        for image in ax.images
        if getattr(image, "colorbar", None) is not None
    }
    return [ax for ax in figure.axes if ax not in colorbars]


def panel_title(ax) -> str:
    """The title of the panel (sub-figure) holding ``ax``."""
    return ax.figure.get_suptitle()


def assert_titles_clear(figure) -> None:
    """No panel title (nor the figure's) overlaps any axes: images, plots or colour bars."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    titles = [figure._suptitle] + [sub._suptitle for sub in figure.subfigs]
    boxes = [ax.get_window_extent(renderer) for ax in figure.axes]
    for title in titles:
        if title is None or not title.get_text():
            continue
        extent = title.get_window_extent(renderer)
        overlapping = [i for i, box in enumerate(boxes) if extent.overlaps(box)]
        assert overlapping == [], (title.get_text(), overlapping)


def assert_finite_where_shown(image) -> None:
    array = image.get_array()
    shown = ~np.ma.getmaskarray(array)
    assert shown.any()
    assert np.all(np.isfinite(np.ma.getdata(array)[shown]))


def value_at(ax, image, y: float, x: float) -> float:
    """The image value drawn at arcsec (y, x), as the mouse-over readout finds it."""
    display_x, display_y = ax.transData.transform((x, y))
    event = MouseEvent("motion_notify_event", ax.figure.canvas, display_x, display_y)
    return image.get_cursor_data(event)
