"""Figures of a dataset, of its sparse operator and of a survey store (matplotlib, no display).

Every function returns a ``matplotlib.figure.Figure`` with an Agg canvas, built without
``pyplot``: no figure is registered in pyplot's global state, so a figure is freed when dropped and
scripts, Dask workers and tests need no display. ``fig.savefig("panel.png")`` writes it; in Jupyter
a figure that ends a cell is shown once ``%matplotlib inline`` is active.

Images follow the dataset conventions (DESIGN §3): arcsec axes with y up (row 0 at the top, drawn
with ``origin="upper"``), extents from the pixel-centre convention reaching half a pixel beyond
the outer pixel centres (:func:`extent_of`). Masked pixels (True = masked) are left blank.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import matplotlib
import numpy as np
import scipy.sparse as sp
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, Normalize, SymLogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.exc import DatasetError
from pipeline.imaging.geometry import pixel_centre_coordinates

__all__ = [
    "dataset_panel",
    "example_mapping_matrix",
    "extent_of",
    "operator_panel",
    "operator_row_window",
    "survey_overview",
]

BRIGHTNESS = "electrons per second"
W_UNITS = "(electrons per second)$^{-2}$"
_BLANK = "0.92"  # colour of masked pixels


# ---------------------------------------------------------------------------------------- helpers
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


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _cmap(cmap):
    """A colour map (by name or object) that draws masked pixels in a light grey."""
    colormap = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    return colormap.with_extremes(bad=_BLANK)


def _arcsec_axes(ax, title: str) -> None:
    ax.set_title(title)
    ax.set_xlabel("x (arcsec)")
    ax.set_ylabel("y (arcsec)")


def _image(
    figure: Figure,
    ax,
    values: np.ndarray,
    hidden: np.ndarray | None,
    extent: tuple[float, float, float, float],
    *,
    cmap="viridis",
    norm=None,
    label: str,
):
    """Draw ``values`` (``hidden`` pixels blank) with a labelled colour bar; returns the image."""
    shown = np.ma.masked_array(np.asarray(values, dtype=np.float64), mask=hidden)
    image = ax.imshow(
        shown,
        origin="upper",
        extent=extent,
        cmap=_cmap(cmap),
        norm=norm,
        interpolation="nearest",
    )
    figure.colorbar(image, ax=ax, label=label, shrink=0.9)
    return image


def _robust_norm(values: np.ndarray, low: float = 0.5, high: float = 99.5) -> Normalize:
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


def _symmetric_norm(values: np.ndarray) -> Normalize:
    """Zero in the middle of a diverging colour map (W and F keep negative entries)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    top = float(np.abs(finite).max()) if finite.size else 0.0
    top = top if top > 0 else 1.0
    return Normalize(-top, top)


def _symlog_norm(values: np.ndarray) -> SymLogNorm:
    """Symmetric and logarithmic beyond 1e-4 of the peak, so the whole band of a row (which falls
    off like the PSF's autocorrelation) stays visible."""
    top = _symmetric_norm(values).vmax
    return SymLogNorm(linthresh=1e-4 * top, vmin=-top, vmax=top, base=10)


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def _title(imaging) -> str:
    name = getattr(imaging, "name", None)
    ny, nx = imaging.shape_native
    sy, sx = imaging.pixel_scales
    label = f"{name}: " if name else ""
    return f'{label}{ny}×{nx} pixels of {sy:g}"×{sx:g}", N = {imaging.shape_slim} unmasked'


# ---------------------------------------------------------------------------------------- dataset
def dataset_panel(imaging) -> Figure:
    """Six panels of a masked dataset: data, noise map, signal-to-noise, PSF, mask outline and
    the over-sampling sizes of the light-profile grid.

    Parameters
    ----------
    imaging
        An :class:`~pipeline.Imaging` (e.g. from :func:`pipeline.open_imaging`).

    Returns
    -------
    Figure
        Two rows of three axes (each image with its colour bar); images in arcsec, y up.
    """
    mask = np.asarray(imaging.mask, dtype=bool)
    extent = extent_of(imaging.shape_native, imaging.pixel_scales, imaging.mask.origin)
    data = imaging.data.native
    figure = _figure(15.0, 9.0)
    axes = figure.subplots(2, 3)
    (ax_data, ax_noise, ax_snr), (ax_psf, ax_mask, ax_over) = axes

    _image(
        figure,
        ax_data,
        data,
        mask,
        extent,
        norm=_robust_norm(imaging.data.slim),
        label=BRIGHTNESS,
    )
    _arcsec_axes(ax_data, "Data")
    _image(
        figure,
        ax_noise,
        imaging.noise_map.native,
        mask,
        extent,
        cmap="magma",
        norm=_robust_norm(imaging.noise_map.slim, 0.0, 100.0),
        label=BRIGHTNESS,
    )
    _arcsec_axes(ax_noise, "Noise map (RMS)")
    snr = imaging.signal_to_noise_map
    _image(
        figure,
        ax_snr,
        snr.native,
        mask,
        extent,
        cmap="cividis",
        norm=_robust_norm(snr.slim, 0.0, 99.5),
        label="S/N",
    )
    _arcsec_axes(ax_snr, f"Signal-to-noise (max {imaging.signal_to_noise_max:.1f})")

    if imaging.psf is not None:
        kernel = imaging.psf.kernel.native
        psf_extent = extent_of(kernel.shape, imaging.psf.pixel_scales)
        _image(
            figure,
            ax_psf,
            kernel,
            None,
            psf_extent,
            cmap="inferno",
            label="fraction of the flux" if imaging.psf.is_normalized else "PSF value",
        )
        ky, kx = kernel.shape
        _arcsec_axes(ax_psf, f"PSF {ky}×{kx}, sum {kernel.sum():.3g}")
    else:
        _arcsec_axes(ax_psf, "PSF (none)")
        _no_data(ax_psf, "no PSF")

    # the full frame: masked pixels hold 0 in a prepared dataset, so the outline shows the region
    _image(
        figure, ax_mask, data, None, extent, cmap="gray", norm=_robust_norm(data), label=BRIGHTNESS
    )
    y, x = pixel_centre_coordinates(imaging.shape_native, imaging.pixel_scales, imaging.mask.origin)
    if mask.any() and (~mask).any():
        ax_mask.contour(x.ravel(), y.ravel(), mask.astype(float), levels=[0.5], colors="red")
    _arcsec_axes(ax_mask, f"Mask outline ({int(mask.sum())} masked, True = masked)")

    sizes = imaging.over_sample_size_lp.slim
    levels = np.unique(sizes)  # one colour per size in use
    edges = np.concatenate([[levels[0] - 0.5], (levels[:-1] + levels[1:]) / 2, [levels[-1] + 0.5]])
    over = _image(
        figure,
        ax_over,
        imaging.over_sample_size_lp.native,
        mask,
        extent,
        cmap=matplotlib.colormaps["viridis"].resampled(len(levels)),
        norm=BoundaryNorm(edges, ncolors=len(levels)),
        label="sub-pixels per axis",
    )
    over.colorbar.set_ticks(levels)
    _arcsec_axes(ax_over, f"Over-sampling ({int(np.sum(sizes**2))} sub-pixels)")

    figure.suptitle(_title(imaging))
    return figure


# ---------------------------------------------------------------------------------------- operator
def _operator_of(imaging):
    operator = getattr(imaging, "sparse_operator", None)
    if operator is None:
        raise DatasetError(
            f"{_title(imaging)}: the dataset has no sparse operator; call "
            "apply_sparse_operator() or open a complete dataset with pipeline.open_imaging"
        )
    return operator


def _central_pixel(mask: np.ndarray) -> int:
    """Slim index of the unmasked pixel nearest the centroid of the unmasked pixels."""
    rows_cols = np.argwhere(~mask)
    centre = rows_cols.mean(axis=0)
    return int(np.argmin(((rows_cols - centre) ** 2).sum(axis=1)))


def operator_row_window(operator, pixel: int) -> np.ma.MaskedArray:
    """Row ``pixel`` (slim index) of W on its offset window.

    Returns
    -------
    numpy.ma.MaskedArray
        ``(2 ry + 1, 2 rx + 1)`` with ``ry, rx = 2 (ky//2), 2 (kx//2)``: entry ``[dy + ry, dx + rx]``
        is ``W[i, j]`` for the pixel j at ``native(i) + (dy, dx)`` (dy down the rows, dx along the
        columns); masked where j is masked or off the array. Both halves of the band are read: the
        stored half-plane ``values[i, o]`` and, by symmetry, ``values[j, o]`` of the pixels j before
        i.
    """
    layout = operator.layout
    values = operator.values
    n = layout.n_pixels
    if not 0 <= int(pixel) < n:
        raise DatasetError(f"pixel {pixel} is not a slim index in [0, {n})")
    i = int(pixel)
    ky, kx = layout.kernel_shape
    ry, rx = 2 * (ky // 2), 2 * (kx // 2)
    offsets = layout.offsets
    window = np.full((2 * ry + 1, 2 * rx + 1), np.nan)
    after = layout.neighbours(i, i + 1)[0]
    ok = after >= 0
    window[offsets[ok, 0] + ry, offsets[ok, 1] + rx] = values[i, ok]
    ny, nx = layout.shape_native
    row, col = layout.native_for_slim[i]
    rows, cols = row - offsets[:, 0], col - offsets[:, 1]
    inside = (rows >= 0) & (rows < ny) & (cols >= 0) & (cols < nx)
    before = np.full(len(offsets), -1, dtype=np.int64)
    before[inside] = layout.slim_for_native[rows[inside], cols[inside]]
    ok = before >= 0
    window[ry - offsets[ok, 0], rx - offsets[ok, 1]] = values[before[ok], np.flatnonzero(ok)]
    return np.ma.masked_invalid(window)


def _row_abs_sums(operator) -> np.ndarray:
    """``sum_j |W_ij|`` for every row (slim order), from the band without building W."""
    values = np.abs(np.asarray(operator.values, dtype=np.float64))
    totals = values.sum(axis=1)
    neighbours = operator.layout.neighbours()[:, 1:]
    ok = neighbours >= 0
    # the lower half of row j is the upper half of earlier rows: values[i, o] = W[j, i]
    totals += np.bincount(neighbours[ok], weights=values[:, 1:][ok], minlength=len(totals))
    return totals


def example_mapping_matrix(imaging, shape: tuple[int, int] = (10, 10)) -> sp.csr_matrix:
    """A mapping matrix A ``(N, S)`` of a coarse rectangular source grid, for demonstrations.

    The grid of ``shape`` cells spans the unmasked pixel centres (arcsec); each unmasked pixel
    maps with weight 1 to the cell containing its centre (as if the lens were the identity), and
    cells that receive no pixel are dropped, so every source pixel is constrained.

    Returns
    -------
    scipy.sparse.csr_matrix
        One 1 per row (slim order); ``S`` = number of occupied cells.
    """
    grid = np.asarray(imaging.grid.slim, dtype=np.float64)
    cells_y, cells_x = (int(s) for s in shape)
    if cells_y < 1 or cells_x < 1:
        raise DatasetError(f"the source grid shape must be positive, got {shape}")
    sy, sx = imaging.pixel_scales
    y_top, y_bottom = grid[:, 0].max() + sy / 2, grid[:, 0].min() - sy / 2
    x_left, x_right = grid[:, 1].min() - sx / 2, grid[:, 1].max() + sx / 2
    # source rows count from the top, as image rows do
    row = np.floor((y_top - grid[:, 0]) / (y_top - y_bottom) * cells_y).astype(np.int64)
    col = np.floor((grid[:, 1] - x_left) / (x_right - x_left) * cells_x).astype(np.int64)
    cell = np.clip(row, 0, cells_y - 1) * cells_x + np.clip(col, 0, cells_x - 1)
    occupied, source = np.unique(cell, return_inverse=True)
    n = grid.shape[0]
    return sp.csr_matrix(
        (np.ones(n), (np.arange(n), source)), shape=(n, occupied.size), dtype=np.float64
    )


def operator_panel(
    imaging,
    pixel: tuple[int, int] | None = None,
    *,
    source_shape: tuple[int, int] = (10, 10),
) -> Figure:
    """Three panels of a dataset's sparse operator W = Hᵀ N⁻¹ H.

    Parameters
    ----------
    imaging
        An :class:`~pipeline.Imaging` carrying ``sparse_operator``.
    pixel
        ``(row, col)`` of the unmasked pixel whose row of W is shown; default: the unmasked pixel
        nearest the centre of the unmasked region.
    source_shape
        Cells of the rectangular source grid of the example mapping
        (:func:`example_mapping_matrix`).

    Returns
    -------
    Figure
        The row ``W[i, :]`` on its offset window (Δx, Δy in arcsec around pixel i, y up), the band
        magnitude ``sum_j |W_ij|`` over the image, and the curvature matrix ``F = Aᵀ W A`` of the
        example mapping, each with a colour bar in (electrons per second)⁻².
    """
    operator = _operator_of(imaging)
    mask = np.asarray(imaging.mask, dtype=bool)
    layout = operator.layout
    if pixel is None:
        index = _central_pixel(mask)
    else:
        row, col = (int(p) for p in pixel)
        ny, nx = layout.shape_native
        if not (0 <= row < ny and 0 <= col < nx) or mask[row, col]:
            raise DatasetError(
                f"pixel (row {row}, col {col}) is masked or outside the {ny}×{nx} frame; "
                "choose an unmasked pixel"
            )
        index = int(layout.slim_for_native[row, col])
    row, col = (int(v) for v in layout.native_for_slim[index])
    sy, sx = imaging.pixel_scales
    ky, kx = layout.kernel_shape
    ry, rx = 2 * (ky // 2), 2 * (kx // 2)

    figure = _figure(17.5, 5.6)
    ax_row, ax_band, ax_curv = figure.subplots(1, 3)

    window = operator_row_window(operator, index)
    window_extent = (-(rx + 0.5) * sx, (rx + 0.5) * sx, -(ry + 0.5) * sy, (ry + 0.5) * sy)
    row_image = _image(
        figure,
        ax_row,
        window.filled(np.nan),
        np.ma.getmaskarray(window),
        window_extent,
        cmap="RdBu_r",
        norm=_symlog_norm(window.compressed()),
        label=f"$W_{{ij}}$ {W_UNITS}, symmetric log scale",
    )
    norm = row_image.norm
    ticks = [t * norm.vmax for t in (-1.0, -1e-2, 0.0, 1e-2, 1.0)]
    row_image.colorbar.set_ticks(ticks, labels=[f"{t:.2g}" for t in ticks])
    ax_row.plot(0.0, 0.0, marker="+", color="black", markersize=10)
    ax_row.set_title(
        f"Row of W at (row {row}, col {col})\n{window.count()} unmasked pixels in its window"
    )
    ax_row.set_xlabel("Δx (arcsec)")
    ax_row.set_ylabel("Δy (arcsec)")

    extent = extent_of(imaging.shape_native, imaging.pixel_scales, imaging.mask.origin)
    band = np.zeros(layout.shape_native)
    band[~mask] = _row_abs_sums(operator)
    _image(
        figure,
        ax_band,
        band,
        mask,
        extent,
        cmap="viridis",
        norm=_robust_norm(band[~mask], 0.0, 100.0),
        label=f"$\\sum_j |W_{{ij}}|$ {W_UNITS}",
    )
    y, x = pixel_centre_coordinates(imaging.shape_native, imaging.pixel_scales, imaging.mask.origin)
    ax_band.plot(x[0, col], y[row, 0], marker="+", color="red", markersize=12, mew=2)
    _arcsec_axes(
        ax_band, f"Band magnitude per pixel\nPSF {ky}×{kx}, {layout.n_offsets} stored offsets"
    )

    mapping = example_mapping_matrix(imaging, source_shape)
    curvature = operator.curvature_matrix_from(mapping)
    image = ax_curv.imshow(
        curvature,
        cmap=_cmap("RdBu_r"),
        norm=_symmetric_norm(curvature),
        interpolation="nearest",
    )
    figure.colorbar(image, ax=ax_curv, label=f"$F_{{pq}}$ {W_UNITS}", shrink=0.9)
    n_source = curvature.shape[0]
    ax_curv.set_title(
        f"Curvature matrix F = AᵀWA of an example mapping\n{n_source} occupied cells of a "
        f"{source_shape[0]}×{source_shape[1]} source grid"
    )
    ax_curv.set_xlabel("source pixel q")
    ax_curv.set_ylabel("source pixel p")

    figure.suptitle(f"Sparse operator W = HᵀN⁻¹H — {_title(imaging)}")
    return figure


# ---------------------------------------------------------------------------------------- survey
_STATUS_COLOURS = {"complete": "tab:green", "prepared": "tab:orange", "failed": "tab:red"}


def _survey_attrs(store, storage_options: dict | None) -> tuple[dict[str, dict], dict]:
    from pipeline.io.store import open_store

    root = open_store(store, storage_options=storage_options)
    datasets = root["datasets"]
    attrs = {name: dict(datasets[name].attrs) for name in sorted(datasets.group_keys())}
    return attrs, dict(root.attrs.get("last_run") or {})


def _describe_store(store: Any) -> str:
    return os.fspath(store) if isinstance(store, str | os.PathLike) else type(store).__name__


def survey_overview(store, *, storage_options: dict | None = None) -> Figure:
    """Four panels of a survey store: datasets per status, pixels per dataset, PSF sizes, and the
    task time per dataset.

    Parameters
    ----------
    store
        A store location (path or fsspec URL), a ``zarr.abc.store.Store`` or an open group.
    storage_options
        For fsspec URLs (e.g. s3fs options).

    Returns
    -------
    Figure
        2×2 axes; the title summarises the store's last run.
    """
    attrs, last_run = _survey_attrs(store, storage_options)
    figure = _figure(13.0, 9.0)
    (ax_status, ax_pixels), (ax_kernels, ax_time) = figure.subplots(2, 2)

    statuses = Counter(str(a.get("status")) for a in attrs.values())
    order = ["complete", "prepared", "failed"]  # zeros shown too: "0 failed" is news
    order += sorted(s for s in statuses if s not in order)
    bars = ax_status.bar(
        order,
        [statuses[s] for s in order],
        color=[_STATUS_COLOURS.get(s, "tab:gray") for s in order],
        width=0.5,
    )
    ax_status.bar_label(bars)
    ax_status.set_title(f"Datasets by status ({len(attrs)} in all)")
    ax_status.set_ylabel("datasets")
    ax_status.yaxis.set_major_locator(MaxNLocator(integer=True))
    if not attrs:
        _no_data(ax_status, "no datasets")

    pixels = np.array([a["n_pixels"] for a in attrs.values() if a.get("n_pixels") is not None])
    if pixels.size:
        bins = int(np.clip(np.sqrt(pixels.size) * 2, 5, 40))
        ax_pixels.hist(pixels, bins=bins, color="tab:blue", edgecolor="white")
        ax_pixels.set_title(f"Unmasked pixels per dataset (median {int(np.median(pixels))})")
    else:
        ax_pixels.set_title("Unmasked pixels per dataset")
        _no_data(ax_pixels, "no prepared datasets")
    ax_pixels.set_xlabel("unmasked pixels N")
    ax_pixels.set_ylabel("datasets")
    ax_pixels.yaxis.set_major_locator(MaxNLocator(integer=True))

    def kernel_label(a: dict) -> str | None:
        shape = a.get("psf_shape")
        return f"{shape[0]}×{shape[1]}" if shape else None

    kernels = Counter(k for k in map(kernel_label, attrs.values()) if k)
    labels = sorted(kernels, key=lambda k: tuple(int(v) for v in k.split("×")))
    bars = ax_kernels.bar(labels, [kernels[k] for k in labels], color="tab:purple", width=0.5)
    ax_kernels.bar_label(bars)
    ax_kernels.set_title("PSF kernel sizes")
    ax_kernels.set_xlabel("kernel (pixels)")
    ax_kernels.set_ylabel("datasets")
    ax_kernels.yaxis.set_major_locator(MaxNLocator(integer=True))
    if not kernels:
        _no_data(ax_kernels, "no prepared datasets")

    by_kernel: dict[str, list[tuple[float, float]]] = {}
    for a in attrs.values():
        timings = a.get("timings") or {}
        seconds = sum(float(v) for k, v in timings.items() if k.endswith("_seconds"))
        if timings and a.get("n_pixels") is not None:
            by_kernel.setdefault(kernel_label(a) or "no PSF", []).append((a["n_pixels"], seconds))
    for label in sorted(by_kernel, key=lambda k: (len(k), k)):
        points = np.array(by_kernel[label])
        ax_time.scatter(points[:, 0], points[:, 1], label=f"PSF {label}", alpha=0.8)
    if by_kernel:
        ax_time.legend(loc="upper left")
    else:
        _no_data(ax_time, "no timings recorded")
    ax_time.set_title("Task time per dataset (prepare + operator batches)")
    ax_time.set_xlabel("unmasked pixels N")
    ax_time.set_ylabel("wall time of its tasks (s)")
    ax_time.set_ylim(bottom=0.0)

    title = f"Survey store {_describe_store(store)}"
    if last_run:
        title += (
            f"\nlast run {last_run.get('run_id')}: {last_run.get('complete', 0)} complete, "
            f"{last_run.get('failed', 0)} failed, {last_run.get('skipped_complete', 0)} skipped, "
            f"{float(last_run.get('wall_seconds', 0.0)):.1f} s wall"
        )
    figure.suptitle(title)
    return figure
