"""Signal-to-noise thumbnails of a survey's datasets, for the contact sheet of
:func:`~pipeline.plots.report_html`: ``data / noise_map`` at the unmasked pixels, masked pixels
dimmed, the mask outline drawn, as a small RGBA array written to PNG without a figure.

Cheap enough for a survey: from three arrays, one colour map lookup and one PNG encoding
(milliseconds per dataset), no axes, no text. One image pixel per dataset pixel (frames wider
than :data:`MAX_SIDE` are binned), row 0 at the top as in every figure (DESIGN §3); a browser
scales them up with ``image-rendering: pixelated``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
from matplotlib.image import imsave

from pipeline.exc import DatasetError
from pipeline.plots.core import image_norm, parse_stretch

__all__ = [
    "DIMMED",
    "MAX_SIDE",
    "OUTLINE",
    "SnrNumbers",
    "bin_frame",
    "mask_outline",
    "snr_map",
    "snr_numbers",
    "thumbnail_rgba",
    "write_thumbnail",
]

MAX_SIDE = 256  # pixels: larger frames are binned by a whole factor to at most this
DIMMED = (38, 38, 38, 255)  # RGBA of masked pixels (the data there are not used)
OUTLINE = (255, 64, 48, 255)  # RGBA of the mask outline: masked pixels beside an unmasked one
_CMAP = "cividis"  # as the S/N panel of the dataset figure


@dataclass(frozen=True)
class SnrNumbers:
    """A dataset's signal-to-noise at its unmasked pixels (``data / noise_map``, negative values
    kept): ``peak`` and ``median`` (``None`` without a finite value), and ``n_unmasked``."""

    peak: float | None
    median: float | None
    n_unmasked: int


def _check_frame(data: np.ndarray, noise_map: np.ndarray, mask: np.ndarray) -> None:
    if not (data.ndim == 2 and data.shape == noise_map.shape == mask.shape):
        raise DatasetError(
            f"data {data.shape}, noise_map {noise_map.shape} and mask {mask.shape} must be 2-D "
            "arrays of one shape"
        )


def snr_map(data: Any, noise_map: Any, mask: Any) -> np.ndarray:
    """``data / noise_map`` at the unmasked pixels (mask True = masked), NaN at the masked ones
    and wherever the ratio is not finite; float64 ``(ny, nx)``."""
    data = np.asarray(data, dtype=np.float64)
    noise_map = np.asarray(noise_map, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    _check_frame(data, noise_map, mask)
    snr = np.full(data.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(data, noise_map, out=snr, where=~mask)
    snr[~np.isfinite(snr)] = np.nan
    return snr


def snr_numbers(snr: np.ndarray, mask: Any) -> SnrNumbers:
    """Peak and median of an :func:`snr_map` over the unmasked pixels with a finite value."""
    mask = np.asarray(mask, dtype=bool)
    values = snr[~mask]
    values = values[np.isfinite(values)]
    if values.size == 0:
        return SnrNumbers(None, None, int((~mask).sum()))
    return SnrNumbers(float(values.max()), float(np.median(values)), int((~mask).sum()))


def mask_outline(mask: Any) -> np.ndarray:
    """The masked pixels that touch an unmasked pixel along a row or column: the outline drawn
    around the region a dataset uses, outside it, so no unmasked pixel is covered."""
    mask = np.asarray(mask, dtype=bool)
    unmasked = ~mask
    beside = np.zeros_like(mask)
    beside[1:, :] |= unmasked[:-1, :]
    beside[:-1, :] |= unmasked[1:, :]
    beside[:, 1:] |= unmasked[:, :-1]
    beside[:, :-1] |= unmasked[:, 1:]
    return mask & beside


def bin_frame(snr: np.ndarray, mask: Any, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """``(snr, mask)`` binned by ``factor`` × ``factor`` pixels (the frame padded with masked
    pixels to a multiple of ``factor``): a binned pixel is the mean of its unmasked finite S/N
    values and is masked only if all its pixels are."""
    mask = np.asarray(mask, dtype=bool)
    if factor == 1:
        return snr, mask
    ny, nx = mask.shape
    py, px = -ny % factor, -nx % factor
    padded_mask = np.pad(mask, ((0, py), (0, px)), constant_values=True)
    padded = np.pad(snr, ((0, py), (0, px)), constant_values=np.nan)
    by, bx = padded.shape[0] // factor, padded.shape[1] // factor
    blocks = padded.reshape(by, factor, bx, factor)
    shown = np.isfinite(blocks) & ~padded_mask.reshape(by, factor, bx, factor)
    count = shown.sum(axis=(1, 3))
    total = np.where(shown, blocks, 0.0).sum(axis=(1, 3))
    with np.errstate(divide="ignore", invalid="ignore"):
        binned = np.where(count > 0, total / count, np.nan)
    return binned, np.asarray(padded_mask.reshape(by, factor, bx, factor).all(axis=(1, 3)))


def thumbnail_rgba(
    snr: np.ndarray, mask: Any, *, stretch: str = "asinh", max_side: int = MAX_SIDE
) -> np.ndarray:
    """The thumbnail of an :func:`snr_map`: uint8 RGBA ``(h, w, 4)``, one pixel per dataset
    pixel (binned by the smallest whole factor that brings the longer side to ``max_side`` or
    less, :func:`bin_frame`).

    Unmasked pixels take the cividis colour of their S/N on the ``stretch`` scale
    (:func:`~pipeline.plots.image_norm` of the unmasked values, from S/N 0 up; lower values
    take the colour of 0); masked pixels are
    :data:`DIMMED`, and those of the :func:`mask_outline` are :data:`OUTLINE`. An unmasked pixel
    without a finite S/N is drawn as a masked one.
    """
    parse_stretch(stretch)
    mask = np.asarray(mask, dtype=bool)
    factor = max(1, -(-max(mask.shape) // int(max_side)))
    snr, mask = bin_frame(snr, mask, factor)
    shown = ~mask & np.isfinite(snr)
    norm = image_norm(snr[shown], stretch, low=0.0)
    norm.vmin = 0.0  # S/N 0 is the dark end of every thumbnail: negative S/N is noise
    if not norm.vmax > 0.0:  # type: ignore[operator]
        norm.vmax = 1.0
    rgba = np.empty((*mask.shape, 4), dtype=np.uint8)
    rgba[...] = DIMMED
    if shown.any():
        scaled = np.clip(np.asarray(norm(snr[shown]), dtype=np.float64), 0.0, 1.0)
        rgba[shown] = matplotlib.colormaps[_CMAP](scaled, bytes=True)
    rgba[mask_outline(mask)] = OUTLINE
    return rgba


def write_thumbnail(path: str | os.PathLike[str], rgba: np.ndarray) -> None:
    """Write an RGBA thumbnail to a PNG file (no figure, no pyplot)."""
    imsave(os.fspath(path), rgba, format="png")
