"""The sparse operator figure: one row of W on its offset window, the band magnitude per pixel and
the curvature matrix of an example mapping; and the numbers behind them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from matplotlib.figure import Figure

from pipeline.exc import DatasetError
from pipeline.imaging.geometry import pixel_centre_coordinates
from pipeline.plots.core import (
    arcsec_axes,
    dataset_title,
    draw_image,
    extent_of,
    masked_cmap,
    new_figure,
    new_panels,
    operator_units,
    panel_title,
    peak_abs,
    robust_norm,
    symlog_norm,
    symmetric_norm,
)

if TYPE_CHECKING:
    from pipeline.imaging.dataset import Imaging
    from pipeline.operators.sparse_operator import ImagingSparseOperator

__all__ = ["example_mapping_matrix", "operator_panel", "operator_row_window"]


def _operator_of(imaging: Imaging) -> ImagingSparseOperator:
    operator = getattr(imaging, "sparse_operator", None)
    if operator is None:
        raise DatasetError(
            f"{dataset_title(imaging)}: the dataset has no sparse operator; call "
            "apply_sparse_operator() or open a complete dataset with pipeline.open_imaging"
        )
    return operator


def _central_pixel(mask: np.ndarray) -> int:
    """Slim index of the unmasked pixel nearest the centroid of the unmasked pixels."""
    rows_cols = np.argwhere(~mask)
    centre = rows_cols.mean(axis=0)
    return int(np.argmin(((rows_cols - centre) ** 2).sum(axis=1)))


def operator_row_window(operator: ImagingSparseOperator, pixel: int) -> np.ma.MaskedArray:
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


def _row_abs_sums(operator: ImagingSparseOperator) -> np.ndarray:
    """``sum_j |W_ij|`` for every row (slim order), from the band without building W."""
    values = np.abs(np.asarray(operator.values, dtype=np.float64))
    totals = values.sum(axis=1)
    neighbours = operator.layout.neighbours()[:, 1:]
    ok = neighbours >= 0
    # the lower half of row j is the upper half of earlier rows: values[i, o] = W[j, i]
    totals += np.bincount(neighbours[ok], weights=values[:, 1:][ok], minlength=len(totals))
    return totals


def example_mapping_matrix(imaging: Imaging, shape: tuple[int, int] = (10, 10)) -> sp.csr_matrix:
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
    imaging: Imaging,
    pixel: tuple[int, int] | None = None,
    *,
    source_shape: tuple[int, int] = (10, 10),
    bunit: str | None = None,
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
    bunit
        The unit of the data and noise map (the data HDU's ``BUNIT``, as the store records it:
        ``DatasetRecord.bunit``); ``None``: "data units".

    Returns
    -------
    Figure
        Three panels: the row ``W[i, :]`` on its offset window (Δx, Δy in arcsec around pixel i,
        y up), the band magnitude ``sum_j |W_ij|`` over the image, and the curvature matrix
        ``F = Aᵀ W A`` of the example mapping, each with a colour bar in (BUNIT)⁻².
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

    units = operator_units(bunit)
    figure = new_figure(17.5, 6.0)
    ax_row, ax_band, ax_curv = (panel.subplots() for panel in new_panels(figure, 1, 3))

    window = operator_row_window(operator, index)
    window_extent = (-(rx + 0.5) * sx, (rx + 0.5) * sx, -(ry + 0.5) * sy, (ry + 0.5) * sy)
    row_bar = draw_image(
        ax_row,
        window.filled(np.nan),
        np.ma.getmaskarray(window),
        window_extent,
        cmap="RdBu_r",
        norm=symlog_norm(window.compressed()),
        label=f"$W_{{ij}}$ {units}, symmetric log scale",
    )
    top = peak_abs(window.compressed())  # the ends of the colour scale
    ticks = [t * top for t in (-1.0, -1e-2, 0.0, 1e-2, 1.0)]
    row_bar.set_ticks(ticks, labels=[f"{t:.2g}" for t in ticks])
    ax_row.plot(0.0, 0.0, marker="+", color="black", markersize=10)
    panel_title(
        ax_row.figure,
        f"Row of W at (row {row}, col {col})\n{window.count()} unmasked pixels in its window",
    )
    ax_row.set_xlabel("Δx (arcsec)")
    ax_row.set_ylabel("Δy (arcsec)")

    extent = extent_of(imaging.shape_native, imaging.pixel_scales, imaging.mask.origin)
    band = np.zeros(layout.shape_native)
    band[~mask] = _row_abs_sums(operator)
    draw_image(
        ax_band,
        band,
        mask,
        extent,
        cmap="viridis",
        norm=robust_norm(band[~mask], 0.0, 100.0),
        label=f"$\\sum_j |W_{{ij}}|$ {units}",
    )
    y, x = pixel_centre_coordinates(imaging.shape_native, imaging.pixel_scales, imaging.mask.origin)
    ax_band.plot(x[0, col], y[row, 0], marker="+", color="red", markersize=12, mew=2)
    arcsec_axes(
        ax_band, f"Band magnitude per pixel\nPSF {ky}×{kx}, {layout.n_offsets} stored offsets"
    )

    mapping = example_mapping_matrix(imaging, source_shape)
    curvature = operator.curvature_matrix_from(mapping)
    image = ax_curv.imshow(
        curvature,
        cmap=masked_cmap("RdBu_r"),
        norm=symmetric_norm(curvature),
        interpolation="nearest",
    )
    ax_curv.figure.colorbar(image, ax=ax_curv, label=f"$F_{{pq}}$ {units}", shrink=0.9)
    n_source = curvature.shape[0]
    panel_title(
        ax_curv.figure,
        f"Curvature matrix F = AᵀWA of an example mapping\n{n_source} occupied cells of a "
        f"{source_shape[0]}×{source_shape[1]} source grid",
    )
    ax_curv.set_xlabel("source pixel q")
    ax_curv.set_ylabel("source pixel p")

    panel_title(figure, f"Sparse operator W = HᵀN⁻¹H — {dataset_title(imaging)}", fontsize=13.0)
    return figure
