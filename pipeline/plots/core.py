"""What every figure shares: the Agg figure, arcsec extents, colour maps with blank masked pixels,
colour scales and labels.

Figures are built without ``pyplot``: no figure is registered in pyplot's global state, so a figure
is freed when dropped and scripts, Dask workers and tests need no display.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap, Normalize, SymLogNorm
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colorbar import Colorbar

    from pipeline.imaging.dataset import Imaging

__all__ = [
    "BRIGHTNESS",
    "W_UNITS",
    "arcsec_axes",
    "dataset_title",
    "draw_image",
    "extent_of",
    "masked_cmap",
    "new_figure",
    "no_data",
    "peak_abs",
    "robust_norm",
    "symlog_norm",
    "symmetric_norm",
]

BRIGHTNESS = "electrons per second"
W_UNITS = "(electrons per second)$^{-2}$"
_BLANK = "0.92"  # colour of masked pixels


def extent_of(
    shape_native: tuple[int, int],
    pixel_scales: tuple[float, float],
    origin: tuple[float, float] = (0.0, 0.0),
) -> tuple[float, float, float, float]:
    """``(x_min, x_max, y_min, y_max)`` in arcsec of a frame's outer pixel edges, for ``imshow``
    with ``origin="upper"``.

    Pixel centres are at ``x = (col - (nx-1)/2) sx + origin_x`` and
    ``y = ((ny-1)/2 - row) sy + origin_y``; the edges lie half a pixel further out.
    """
    ny, nx = shape_native
    sy, sx = pixel_scales
    return (
        origin[1] - nx * sx / 2.0,
        origin[1] + nx * sx / 2.0,
        origin[0] - ny * sy / 2.0,
        origin[0] + ny * sy / 2.0,
    )


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure of ``width`` × ``height`` inches on its own Agg canvas."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def masked_cmap(cmap: str | Colormap) -> Colormap:
    """A colour map (by name or object) that draws masked pixels in a light grey."""
    colormap = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    return colormap.with_extremes(bad=_BLANK)


def arcsec_axes(ax: Axes, title: str) -> None:
    """Title ``ax`` and label its axes in arcsec."""
    ax.set_title(title)
    ax.set_xlabel("x (arcsec)")
    ax.set_ylabel("y (arcsec)")


def draw_image(
    figure: Figure,
    ax: Axes,
    values: np.ndarray,
    hidden: np.ndarray | None,
    extent: tuple[float, float, float, float],
    *,
    cmap: str | Colormap = "viridis",
    norm: Normalize | None = None,
    label: str,
) -> Colorbar:
    """Draw ``values`` (``hidden`` pixels blank) with a labelled colour bar; returns the colour bar
    (its ``mappable`` is the image)."""
    values = np.asarray(values, dtype=np.float64)
    blank = np.zeros(values.shape, dtype=bool) if hidden is None else hidden
    image = ax.imshow(
        np.ma.masked_array(values, mask=blank),
        origin="upper",
        extent=extent,
        cmap=masked_cmap(cmap),
        norm=norm,
        interpolation="nearest",
    )
    return figure.colorbar(image, ax=ax, label=label, shrink=0.9)


def robust_norm(values: Any, low: float = 0.5, high: float = 99.5) -> Normalize:
    """A linear scale from percentiles of ``values``: one bright lens galaxy should not hide the
    arcs."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Normalize(0.0, 1.0)
    vmin, vmax = np.percentile(values, [low, high])
    if not vmax > vmin:
        vmin, vmax = float(values.min()), float(values.max())
        if not vmax > vmin:
            vmax = vmin + 1.0
    return Normalize(float(vmin), float(vmax))


def peak_abs(values: Any) -> float:
    """Largest finite ``|value|``, or 1 when there is none (or it is 0)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    top = float(np.abs(finite).max()) if finite.size else 0.0
    return top if top > 0 else 1.0


def symmetric_norm(values: Any) -> Normalize:
    """Zero in the middle of a diverging colour map (W and F keep negative entries)."""
    top = peak_abs(values)
    return Normalize(-top, top)


def symlog_norm(values: Any) -> SymLogNorm:
    """Symmetric and logarithmic beyond 1e-4 of the peak, so the whole band of a row (which falls
    off like the PSF's autocorrelation) stays visible."""
    top = peak_abs(values)
    return SymLogNorm(linthresh=1e-4 * top, vmin=-top, vmax=top, base=10)


def no_data(ax: Axes, text: str) -> None:
    """Write ``text`` in the middle of an empty panel."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def dataset_title(imaging: Imaging) -> str:
    """``"<name>: ny×nx pixels of sy"×sx", N = <unmasked> unmasked"``."""
    name = getattr(imaging, "name", None)
    ny, nx = imaging.shape_native
    sy, sx = imaging.pixel_scales
    label = f"{name}: " if name else ""
    return f'{label}{ny}×{nx} pixels of {sy:g}"×{sx:g}", N = {imaging.shape_slim} unmasked'
