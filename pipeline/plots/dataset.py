"""The dataset figure: data, noise map, signal-to-noise, PSF, mask outline and over-sampling.

Images follow the dataset conventions (DESIGN §3): arcsec axes with y up (row 0 at the top, drawn
with ``origin="upper"``) and masked pixels (True = masked) left blank.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib
import numpy as np
from matplotlib.colors import BoundaryNorm
from matplotlib.figure import Figure

from pipeline.imaging.geometry import pixel_centre_coordinates
from pipeline.plots.core import (
    arcsec_axes,
    brightness_label,
    dataset_title,
    draw_image,
    extent_of,
    image_norm,
    new_figure,
    new_panels,
    no_data,
    panel_title,
    parse_stretch,
)

if TYPE_CHECKING:
    from pipeline.imaging.dataset import Imaging

__all__ = ["dataset_panel"]


def dataset_panel(imaging: Imaging, *, bunit: str | None = None, stretch: str = "asinh") -> Figure:
    """Six panels of a masked dataset: data, noise map, signal-to-noise, PSF, mask outline and
    the over-sampling sizes of the light-profile grid.

    Parameters
    ----------
    imaging
        An :class:`~pipeline.Imaging` (e.g. from :func:`pipeline.open_imaging`).
    bunit
        The unit of the data and noise map (the data HDU's ``BUNIT``, as the store records it:
        ``DatasetRecord.bunit``); ``None``: labelled "data units".
    stretch
        Colour scale of the images (data, noise, S/N, PSF, mask backdrop): ``"asinh"`` (faint
        arcs and the bright lens together), ``"percentile"`` (linear between the 0.5 and 99.5
        percentiles) or ``"linear"`` (minimum to maximum); see :func:`~pipeline.plots.image_norm`.

    Returns
    -------
    Figure
        Two rows of three panels (each an image with its colour bar and title); images in arcsec,
        y up.
    """
    parse_stretch(stretch)
    unit = brightness_label(bunit)
    mask = np.asarray(imaging.mask, dtype=bool)
    extent = extent_of(imaging.shape_native, imaging.pixel_scales, imaging.mask.origin)
    data = imaging.data.native
    figure = new_figure(15.0, 9.5)
    panels = new_panels(figure, 2, 3)
    ax_data, ax_noise, ax_snr, ax_psf, ax_mask, ax_over = (p.subplots() for p in panels)

    draw_image(
        ax_data,
        data,
        mask,
        extent,
        norm=image_norm(imaging.data.slim, stretch),
        label=unit,
    )
    arcsec_axes(ax_data, "Data")
    draw_image(
        ax_noise,
        imaging.noise_map.native,
        mask,
        extent,
        cmap="magma",
        norm=image_norm(imaging.noise_map.slim, stretch, low=0.0, high=100.0),
        label=unit,
    )
    arcsec_axes(ax_noise, "Noise map (RMS)")
    snr = imaging.signal_to_noise_map
    draw_image(
        ax_snr,
        snr.native,
        mask,
        extent,
        cmap="cividis",
        norm=image_norm(snr.slim, stretch, low=0.0),
        label="S/N",
    )
    arcsec_axes(ax_snr, f"Signal-to-noise (max {imaging.signal_to_noise_max:.1f})")

    if imaging.psf is not None:
        kernel = imaging.psf.kernel.native
        psf_extent = extent_of(kernel.shape, imaging.psf.pixel_scales)
        draw_image(
            ax_psf,
            kernel,
            None,
            psf_extent,
            cmap="inferno",
            norm=image_norm(kernel, stretch, low=0.0, high=100.0),
            label="fraction of the flux" if imaging.psf.is_normalized else "PSF value",
        )
        ky, kx = kernel.shape
        arcsec_axes(ax_psf, f"PSF {ky}×{kx}, sum {kernel.sum():.3g}")
    else:
        arcsec_axes(ax_psf, "PSF (none)")
        no_data(ax_psf, "no PSF")

    # the full frame: masked pixels hold 0 in a prepared dataset, so the outline shows the region
    draw_image(
        ax_mask,
        data,
        None,
        extent,
        cmap="gray",
        norm=image_norm(imaging.data.slim, stretch),
        label=unit,
    )
    y, x = pixel_centre_coordinates(imaging.shape_native, imaging.pixel_scales, imaging.mask.origin)
    if mask.any() and (~mask).any():
        ax_mask.contour(x.ravel(), y.ravel(), mask.astype(float), levels=[0.5], colors="red")
    arcsec_axes(ax_mask, f"Mask outline ({int(mask.sum())} masked, True = masked)")

    sizes = imaging.over_sample_size_lp.slim
    levels = np.unique(sizes)  # one colour per size in use
    edges = np.concatenate([[levels[0] - 0.5], (levels[:-1] + levels[1:]) / 2, [levels[-1] + 0.5]])
    over = draw_image(
        ax_over,
        imaging.over_sample_size_lp.native,
        mask,
        extent,
        cmap=matplotlib.colormaps["viridis"].resampled(len(levels)),
        norm=BoundaryNorm(edges, ncolors=len(levels)),
        label="sub-pixels per axis",
    )
    over.set_ticks(levels.tolist())
    arcsec_axes(ax_over, f"Over-sampling ({int(np.sum(sizes**2))} sub-pixels)")

    panel_title(figure, dataset_title(imaging), fontsize=13.0)
    return figure
