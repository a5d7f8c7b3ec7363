"""What every figure shares: the Agg figure and its panels, arcsec extents, colour maps with blank
masked pixels, colour scales (stretches) and labels (units from the data's BUNIT).

Figures are built without ``pyplot``: no figure is registered in pyplot's global state, so a figure
is freed when dropped and scripts, Dask workers and tests need no display.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import AsinhNorm, Colormap, Normalize, SymLogNorm
from matplotlib.figure import Figure, SubFigure
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import TextToPath
from matplotlib.ticker import MaxNLocator

from pipeline.exc import DatasetError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colorbar import Colorbar

    from pipeline.imaging.dataset import Imaging

__all__ = [
    "NO_UNIT",
    "STRETCHES",
    "arcsec_axes",
    "asinh_ticks",
    "brightness_label",
    "dataset_title",
    "draw_image",
    "extent_of",
    "image_norm",
    "masked_cmap",
    "new_figure",
    "new_panels",
    "no_data",
    "operator_units",
    "panel_title",
    "parse_stretch",
    "peak_abs",
    "robust_norm",
    "symlog_norm",
    "symmetric_norm",
    "wrap_to_width",
]

NO_UNIT = "data units"  # the label of data and noise whose unit (BUNIT) is not known
# colour scales of image panels: asinh (the default) shows faint arcs and a bright lens together
STRETCHES = ("asinh", "percentile", "linear")
_BLANK = "0.92"  # colour of masked pixels
_TEXT = TextToPath()


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


def new_panels(figure: Figure, rows: int, cols: int) -> list[SubFigure]:
    """``rows`` × ``cols`` panels (row by row), each a sub-figure for one image, its colour bar
    and its title (:func:`panel_title`): the title is centred over the whole panel and wrapped
    to its width, so it never runs into a colour bar or a neighbour, however narrow the image."""
    return list(np.ravel(np.asarray(figure.subfigures(rows, cols, squeeze=False))))


def wrap_to_width(text: str, width_points: float, fontsize: float) -> str:
    """``text`` with line breaks between words so that no line is wider than ``width_points``
    (measured in the default font at ``fontsize`` points); a word wider than that keeps its own
    line. Existing line breaks are kept."""
    font = FontProperties(size=fontsize)

    def fits(line: str) -> bool:
        return _TEXT.get_text_width_height_descent(line, font, ismath=False)[0] <= width_points

    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and not fits(candidate):
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return "\n".join(lines)


def panel_title(panel: Figure | SubFigure, text: str, *, fontsize: float = 12.0) -> None:
    """Title a panel (or a whole figure) with ``text`` wrapped to its width."""
    width = panel.bbox.width * 72.0 / panel.dpi * 0.94  # points, a margin for the edges
    panel.suptitle(wrap_to_width(text, width, fontsize), fontsize=fontsize)


def masked_cmap(cmap: str | Colormap) -> Colormap:
    """A colour map (by name or object) that draws masked pixels in a light grey."""
    colormap = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    return colormap.with_extremes(bad=_BLANK)


def arcsec_axes(ax: Axes, title: str) -> None:
    """Title the panel of ``ax`` (:func:`panel_title`) and label its axes in arcsec."""
    panel_title(ax.figure, title)
    ax.set_xlabel("x (arcsec)")
    ax.set_ylabel("y (arcsec)")


def brightness_label(bunit: str | None) -> str:
    """The colour-bar label of data and noise values: the unit recorded from the data HDU's
    ``BUNIT`` card (e.g. ``"electron/s"``, ``"MJy/sr"``), or ``"data units"`` when none is."""
    unit = (bunit or "").strip()
    return unit.replace("$", r"\$") if unit else NO_UNIT  # a literal $ is no mathtext


def operator_units(bunit: str | None) -> str:
    """The unit of W = Hᵀ N⁻¹ H and of curvature matrices: ``(BUNIT)⁻²``."""
    return f"({brightness_label(bunit)})$^{{-2}}$"


def draw_image(
    ax: Axes,
    values: np.ndarray,
    hidden: np.ndarray | None,
    extent: tuple[float, float, float, float],
    *,
    cmap: str | Colormap = "viridis",
    norm: Normalize | None = None,
    label: str,
) -> Colorbar:
    """Draw ``values`` (``hidden`` pixels blank) with a labelled colour bar beside ``ax`` (in its
    panel); returns the colour bar (its ``mappable`` is the image)."""
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
    bar = ax.figure.colorbar(image, ax=ax, label=label, shrink=0.9)
    if isinstance(norm, AsinhNorm):
        ticks = asinh_ticks(norm)
        bar.set_ticks(ticks, labels=[f"{t:.3g}" for t in ticks])
    return bar


def asinh_ticks(norm: AsinhNorm, min_gap: float = 0.08) -> list[float]:
    """Round colour-bar ticks of an asinh scale, at least ``min_gap`` of the bar apart: 0, then
    1, 5 and 2 times powers of ten, then linear steps, taken in that order where they fit (the
    scale's own locator leaves a narrow range with one tick, or none)."""
    vmin, vmax = float(norm.vmin), float(norm.vmax)  # type: ignore[arg-type]
    top = max(abs(vmin), abs(vmax), 1e-300)
    exponents = range(int(np.floor(np.log10(top))) - 8, int(np.floor(np.log10(top))) + 1)
    candidates = [0.0]
    for mantissa in (1.0, 5.0, 2.0):
        candidates += [
            sign * mantissa * 10.0**e for e in reversed(exponents) for sign in (1.0, -1.0)
        ]
    candidates += [float(t) for t in MaxNLocator(nbins=6).tick_values(vmin, vmax)]
    chosen: list[float] = []
    where: list[float] = []
    for value in candidates:
        if not vmin <= value <= vmax:
            continue
        position = float(norm(value))
        if all(abs(position - p) >= min_gap for p in where):
            chosen.append(value)
            where.append(position)
    return sorted(chosen)


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


def parse_stretch(stretch: str) -> str:
    """``stretch`` if it is one of :data:`STRETCHES`, else a :class:`DatasetError` naming them."""
    if stretch not in STRETCHES:
        raise DatasetError(
            f"stretch {stretch!r} is not one of {', '.join(STRETCHES)} (asinh: faint and bright "
            "together; percentile: linear between the 0.5 and 99.5 percentiles; linear: min "
            "to max)"
        )
    return stretch


def image_norm(
    values: Any, stretch: str = "asinh", *, low: float = 0.5, high: float = 99.5
) -> Normalize:
    """The colour scale of an image panel.

    Parameters
    ----------
    values
        The values shown (non-finite ones are ignored).
    stretch
        ``"asinh"``: from the ``low`` percentile to the maximum, linear within about the noise
        level around 0 and logarithmic beyond (``asinh(x / w)`` with ``w`` 1.4826 times the
        median absolute deviation of the values, a robust noise estimate), so faint arcs and a
        bright lens core show together; ``"percentile"``: linear between the ``low`` and
        ``high`` percentiles; ``"linear"``: linear from the minimum to the maximum.
    """
    parse_stretch(stretch)
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if stretch == "percentile":
        return robust_norm(values, low, high)
    if stretch == "linear":
        return robust_norm(values, 0.0, 100.0)
    scale = robust_norm(values, low, 100.0)
    vmin, vmax = float(scale.vmin), float(scale.vmax)  # type: ignore[arg-type]
    spread = 1.4826 * float(np.median(np.abs(values - np.median(values)))) if values.size else 0.0
    # a flat image (MAD 0): soften at a thousandth of the range instead
    width = spread if spread > 0 else 1e-3 * (vmax - vmin)
    return AsinhNorm(linear_width=width, vmin=vmin, vmax=vmax)


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
