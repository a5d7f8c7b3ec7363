"""Over-sampling: sub-pixel grids, binning, and adaptive size helpers (pure numpy).

Pixel ``i`` (slim order) with size ``s_i`` is split into ``s_i x s_i`` sub-pixels, stored as one
contiguous block per pixel; inside a block the order is row-major from the top-left sub-pixel::

    y = y_i + sy/2 - (a + 1/2) sy/s_i ,   x = x_i - sx/2 + (b + 1/2) sx/s_i ,   index a*s_i + b

Binning a sub-pixel quantity back to pixels is the mean over each block.
"""

from __future__ import annotations

import numbers
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.exc import OverSamplingError
from pipeline.imaging.arrays import Array2D
from pipeline.imaging.compat import check_xp
from pipeline.imaging.mask import Mask2D

if TYPE_CHECKING:
    from pipeline.imaging.grids import Grid2D

__all__ = [
    "OverSampler",
    "over_sample_size_from",
    "over_sampled_grid_from",
    "over_sample_size_via_radial_bins_from",
    "over_sample_size_via_adapt_from",
    "over_sample_size_via_snr_from",
]


def over_sample_size_from(
    value: int | np.integer | np.ndarray | Array2D, mask: Mask2D, name: str = "over_sample_size"
) -> Array2D:
    """Per-pixel over-sampling sizes as an int64 ``Array2D`` on ``mask``.

    ``value`` is an integer (Python or numpy) used for every pixel, or per-pixel sizes in slim
    ``(N,)`` or native ``(ny, nx)`` form (or an ``Array2D``); values must be integers >= 1 (at
    masked pixels of a native array they are ignored).
    """
    if isinstance(value, bool | np.bool_):
        raise OverSamplingError(f"{name} must be an integer >= 1, got the bool {value!r}")
    if isinstance(value, numbers.Integral):
        if value < 1:
            raise OverSamplingError(f"{name} must be >= 1 (sub-pixels per axis), got {value}")
        return Array2D(np.full(mask.pixels_in_mask, int(value), dtype=np.int64), mask)
    if isinstance(value, numbers.Real):
        raise OverSamplingError(f"{name} must be an integer >= 1, got {value!r}")
    if isinstance(value, Array2D):
        values: np.ndarray = value.native if value.shape_native == mask.shape_native else value.slim
    else:
        values = np.asarray(value)
    try:
        arr = Array2D(values, mask)
    except Exception as err:
        raise OverSamplingError(f"{name}: {err}") from None
    slim = np.asarray(arr.slim)
    if not np.issubdtype(slim.dtype, np.integer):
        if not np.all(np.isfinite(slim)) or np.any(slim != np.round(slim)):
            raise OverSamplingError(f"{name} values must be integers, got non-integral values")
    if slim.size and slim.min() < 1:
        bad = int(np.argmin(slim))
        row, col = mask.native_for_slim[bad]
        raise OverSamplingError(
            f"{name} must be >= 1 at every unmasked pixel; pixel (row {row}, col {col}) has "
            f"{slim[bad]}"
        )
    return Array2D(slim.astype(np.int64), mask)


def over_sampled_grid_from(
    grid_slim: np.ndarray, sub_size: np.ndarray, pixel_scales: tuple[float, float]
) -> np.ndarray:
    """``(sum s_i**2, 2)`` sub-pixel centres (arcsec) of pixels centred at ``grid_slim``."""
    sub_size = np.asarray(sub_size, dtype=np.int64)
    sy, sx = pixel_scales
    counts = sub_size**2
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    out = np.empty((int(counts.sum()), 2), dtype=np.float64)
    for s in np.unique(sub_size):
        s = int(s)
        pixels = np.flatnonzero(sub_size == s)
        dy, dx = sy / s, sx / s
        # linspace (as the reference) rather than a*step so sub-pixel centres agree to the last bit
        y_off = np.linspace(sy / 2 - dy / 2, -sy / 2 + dy / 2, s)
        x_off = np.linspace(-sx / 2 + dx / 2, sx / 2 - dx / 2, s)
        yy, xx = np.meshgrid(y_off, x_off, indexing="ij")
        rows = starts[pixels][:, None] + np.arange(s * s)[None, :]
        out[rows, 0] = grid_slim[pixels, 0][:, None] + yy.ravel()[None, :]
        out[rows, 1] = grid_slim[pixels, 1][:, None] + xx.ravel()[None, :]
    return out


class OverSampler:
    """Sub-pixel layout of a mask and per-pixel sizes; bins sub-pixel values to pixels.

    Parameters
    ----------
    mask
        The pixel frame (True = masked).
    sub_size
        Integer >= 1 or per-pixel sizes (see :func:`over_sample_size_from`).
    """

    def __init__(self, mask: Mask2D, sub_size: int | np.ndarray | Array2D):
        self.mask = mask
        self.sub_size = over_sample_size_from(sub_size, mask)

    @cached_property
    def _sizes(self) -> np.ndarray:
        return np.asarray(self.sub_size.slim)

    @property
    def sub_total(self) -> int:
        """Number of sub-pixels ``sum(s_i**2)``."""
        return int((self._sizes**2).sum())

    @property
    def sub_fraction(self) -> Array2D:
        """``1 / s_i**2``: the area fraction of one sub-pixel of each pixel."""
        return Array2D(1.0 / self._sizes.astype(np.float64) ** 2, self.mask)

    @cached_property
    def slim_for_sub_slim(self) -> np.ndarray:
        """``(sub_total,)`` slim index of the pixel each sub-pixel belongs to."""
        return np.repeat(np.arange(self._sizes.size), self._sizes**2)

    @property
    def is_uniform(self) -> bool:
        return bool(self._sizes.size == 0 or np.all(self._sizes == self._sizes[0]))

    @cached_property
    def over_sampled_grid(self) -> np.ndarray:
        """``(sub_total, 2)`` sub-pixel centres ``(y, x)`` in arcsec, blocks in slim order."""
        return over_sampled_grid_from(self.mask.grid_slim, self._sizes, self.mask.pixel_scales)

    def binned_array_2d_from(self, array: np.ndarray | Array2D, xp: Any = np) -> Array2D:
        """Mean of each pixel's block of sub-pixel values, as an ``Array2D`` on the mask
        (``xp``, PyAutoArray's array module, must be numpy)."""
        check_xp(xp, OverSamplingError, "OverSampler.binned_array_2d_from")
        values = np.asarray(array, dtype=np.float64)
        if values.shape != (self.sub_total,):
            raise OverSamplingError(
                f"binned_array_2d_from expects {self.sub_total} sub-pixel values "
                f"(sum of s_i**2), got an array of shape {values.shape}"
            )
        n = self._sizes.size
        if self.is_uniform and n:
            s2 = int(self._sizes[0]) ** 2
            binned = values.reshape(n, s2).mean(axis=1)
        else:
            sums = np.bincount(self.slim_for_sub_slim, weights=values, minlength=n)
            binned = sums / (self._sizes**2)
        return Array2D(binned, self.mask)


def _distances_to(grid: Grid2D, centre: tuple[float, float]) -> np.ndarray:
    slim = np.asarray(grid.slim)
    return np.sqrt((slim[:, 0] - centre[0]) ** 2 + (slim[:, 1] - centre[1]) ** 2)


def over_sample_size_via_radial_bins_from(
    grid: Grid2D,
    sub_size_list: list[int],
    radial_list: list[float],
    centre_list: list[tuple[float, float]] | None = None,
) -> Array2D:
    """Sizes from the distance ``r`` (arcsec) of each pixel centre to the nearest listed centre.

    Pixel sizes are ``sub_size_list[searchsorted(radial_list, r, side="left")]`` (index clipped to
    the last entry), maximised over ``centre_list`` (default: the mask centre), as the reference.
    """
    sizes_list = np.asarray(sub_size_list)
    radii = np.asarray(radial_list, dtype=np.float64)
    if sizes_list.ndim != 1 or sizes_list.size == 0:
        raise OverSamplingError("sub_size_list must be a non-empty list of integers")
    if centre_list is None:
        centre_list = [grid.mask.mask_centre]
    sub_size = np.zeros(grid.shape_slim, dtype=np.int64)
    for centre in centre_list:
        index = np.searchsorted(radii, _distances_to(grid, centre), side="left")
        index = np.clip(index, 0, sizes_list.size - 1)
        sub_size = np.maximum(sub_size, sizes_list[index].astype(np.int64))
    return over_sample_size_from(Array2D(sub_size, grid.mask), grid.mask, "sub_size_list")


def over_sample_size_via_adapt_from(
    data: Array2D,
    noise_map: Array2D,
    signal_to_noise_cut: float = 5.0,
    sub_size_lower: int = 2,
    sub_size_upper: int = 4,
) -> Array2D:
    """``sub_size_upper`` where S/N = data / noise > cut, else ``sub_size_lower``; the cut is
    lowered to ``max(S/N) / 2`` when ``max(S/N) < 2 * cut`` (as the reference)."""
    snr = np.asarray(data.slim, dtype=np.float64) / np.asarray(noise_map.slim, dtype=np.float64)
    if np.max(snr) < 2.0 * signal_to_noise_cut:
        signal_to_noise_cut = np.max(snr) / 2.0
    sizes = np.where(snr > signal_to_noise_cut, sub_size_upper, sub_size_lower)
    return over_sample_size_from(Array2D(sizes, data.mask), data.mask)


def over_sample_size_via_snr_from(
    signal_to_noise_map: Array2D,
    signal_to_noise_cut: float = 3.0,
    sub_size_lower: int = 2,
    sub_size_upper: int = 4,
) -> Array2D:
    """``sub_size_upper`` where the S/N map exceeds the cut, else ``sub_size_lower``."""
    snr = np.asarray(signal_to_noise_map.slim, dtype=np.float64)
    sizes = np.where(snr > signal_to_noise_cut, sub_size_upper, sub_size_lower)
    return over_sample_size_from(Array2D(sizes, signal_to_noise_map.mask), signal_to_noise_map.mask)
