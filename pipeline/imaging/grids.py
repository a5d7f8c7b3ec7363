"""``Grid2D``: the arcsec ``(y, x)`` centres of a mask's unmasked pixels, with over-sampling, and
``GridsDataset``, the grids an ``Imaging`` dataset carries (``lp``, ``pixelization``, ``blurring``).
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.exc import GridError
from pipeline.imaging.arrays import Array2D, ArrayView
from pipeline.imaging.compat import check_xp, refuse_unless
from pipeline.imaging.mask import Mask2D
from pipeline.imaging.over_sampling import OverSampler, over_sample_size_from

if TYPE_CHECKING:
    from pipeline.imaging.convolver import Convolver

__all__ = ["Grid2D", "GridsDataset"]


class Grid2D:
    """Pixel-centre coordinates ``(y, x)`` in arcsec (y up) of the unmasked pixels of ``mask``.

    Parameters
    ----------
    values
        ``(N, 2)`` slim coordinates or ``(ny, nx, 2)`` native coordinates.
    mask
        The frame (True = masked).
    store_native
        PyAutoArray's keyword, accepted only as False (lenspipe stores slim coordinates).
    over_sample_size
        Integer >= 1 or per-pixel sizes, used by :attr:`over_sampled` and :attr:`over_sampler`
        (default 4, as the reference).
    over_sampled, over_sampler
        PyAutoArray's precomputed sub-pixel grid and sampler, accepted only as None: lenspipe
        derives both from ``mask`` and ``over_sample_size``.
    xp
        PyAutoArray's array module: only numpy is accepted.
    """

    def __init__(
        self,
        values: np.ndarray,
        mask: Mask2D,
        store_native: bool = False,
        over_sample_size: int | np.ndarray | Array2D = 4,
        over_sampled: Any = None,
        over_sampler: Any = None,
        xp: Any = np,
    ):
        refuse_unless(
            not store_native,
            GridError,
            "Grid2D",
            "store_native",
            store_native,
            "lenspipe stores slim coordinates; read the native frame with .native",
        )
        for keyword, value in (("over_sampled", over_sampled), ("over_sampler", over_sampler)):
            refuse_unless(
                value is None,
                GridError,
                "Grid2D",
                keyword,
                type(value).__name__,
                "lenspipe derives the sub-pixel grid from mask and over_sample_size; pass "
                "over_sample_size instead",
            )
        check_xp(xp, GridError, "Grid2D")
        arr = np.asarray(values, dtype=np.float64)
        if arr.shape == (mask.pixels_in_mask, 2):
            slim = arr.copy()
        elif arr.shape == (*mask.shape_native, 2):
            slim = arr[~np.asarray(mask)]
        else:
            raise GridError(
                f"Grid2D values of shape {arr.shape} fit neither ({mask.pixels_in_mask}, 2) nor "
                f"{(*mask.shape_native, 2)}"
            )
        slim.flags.writeable = False
        self._slim = slim
        self.mask = mask
        self.over_sample_size = over_sample_size_from(over_sample_size, mask)

    @classmethod
    def from_mask(
        cls, mask: Mask2D, over_sample_size: int | np.ndarray | Array2D = 4, xp: Any = np
    ) -> Grid2D:
        """The grid of pixel centres of ``mask``'s unmasked pixels."""
        check_xp(xp, GridError, "Grid2D.from_mask")
        return cls(mask.grid_slim, mask, over_sample_size=over_sample_size)

    @classmethod
    def uniform(
        cls,
        shape_native: tuple[int, int],
        pixel_scales: float | tuple[float, float],
        origin: tuple[float, float] = (0.0, 0.0),
        over_sample_size: int | np.ndarray | Array2D = 4,
        respect_small_datasets: bool = True,
    ) -> Grid2D:
        """The grid of every pixel centre of an unmasked frame.

        ``respect_small_datasets`` is PyAutoArray's switch for its ``PYAUTO_SMALL_DATASETS`` test
        mode; lenspipe has no such mode, so either value gives the full grid (what the reference
        gives with the mode off)."""
        mask = Mask2D.all_false(shape_native, pixel_scales, origin)
        return cls.from_mask(mask, over_sample_size=over_sample_size)

    @property
    def slim(self) -> ArrayView:
        """``(N, 2)`` read-only coordinates in slim order."""
        return self._slim.view(ArrayView)

    @property
    def array(self) -> np.ndarray:
        return self._slim

    @property
    def native(self) -> ArrayView:
        """``(ny, nx, 2)`` coordinates, 0 at masked pixels (``.native.array``: plain ndarray)."""
        out = np.zeros((*self.mask.shape_native, 2), dtype=np.float64)
        out[~np.asarray(self.mask)] = self._slim
        return out.view(ArrayView)

    @property
    def shape_slim(self) -> int:
        return int(self._slim.shape[0])

    @property
    def shape_native(self) -> tuple[int, int]:
        return self.mask.shape_native

    @property
    def pixel_scales(self) -> tuple[float, float]:
        return self.mask.pixel_scales

    @property
    def origin(self) -> tuple[float, float]:
        return self.mask.origin

    @property
    def shape(self) -> tuple[int, int]:
        return self._slim.shape

    def __len__(self) -> int:
        return self.shape_slim

    def __getitem__(self, item):
        return self._slim[item]

    def __array__(self, dtype=None, copy=None):
        if copy:
            return np.array(self._slim, dtype=dtype, copy=True)
        return np.asarray(self._slim, dtype=dtype)

    def __repr__(self) -> str:
        return (
            f"Grid2D(shape_native={self.shape_native}, shape_slim={self.shape_slim}, "
            f"pixel_scales={self.pixel_scales})"
        )

    @cached_property
    def over_sampler(self) -> OverSampler:
        """Sub-pixel layout; ``over_sampler.binned_array_2d_from(values)`` bins to pixels."""
        return OverSampler(self.mask, self.over_sample_size)

    @cached_property
    def over_sampled(self) -> ArrayView:
        """``(sum s_i**2, 2)`` sub-pixel centres in arcsec, one block per pixel in slim order
        (``.over_sampled.array``: plain ndarray)."""
        grid = self.over_sampler.over_sampled_grid
        grid.flags.writeable = False
        return grid.view(ArrayView)

    def distances_to_coordinate_from(self, coordinate: tuple[float, float] = (0.0, 0.0)) -> Array2D:
        """Distance (arcsec) of every pixel centre to ``coordinate``."""
        d = np.sqrt(
            (self._slim[:, 0] - coordinate[0]) ** 2 + (self._slim[:, 1] - coordinate[1]) ** 2
        )
        return Array2D(d, self.mask)


class GridsDataset:
    """The grids of an imaging dataset, built lazily.

    ``lp`` (light profiles) and ``pixelization`` are pixel-centre grids of the dataset mask with
    their own over-sampling; ``blurring`` is the grid of the blurring mask (masked pixels whose
    light the PSF spreads into the mask), ``None`` without a PSF.
    """

    def __init__(
        self,
        mask: Mask2D,
        over_sample_size_lp: int | Array2D = 1,
        over_sample_size_pixelization: int | Array2D = 1,
        psf: Convolver | None = None,
    ):
        self.mask = mask
        self.over_sample_size_lp = over_sample_size_lp
        self.over_sample_size_pixelization = over_sample_size_pixelization
        self.psf = psf

    @cached_property
    def lp(self) -> Grid2D:
        return Grid2D.from_mask(self.mask, over_sample_size=self.over_sample_size_lp)

    @cached_property
    def pixelization(self) -> Grid2D:
        return Grid2D.from_mask(self.mask, over_sample_size=self.over_sample_size_pixelization)

    @cached_property
    def blurring(self) -> Grid2D | None:
        if self.psf is None:
            return None
        blurring_mask = self.mask.blurring_mask_from(self.psf.shape_native, allow_padding=True)
        return Grid2D.from_mask(blurring_mask, over_sample_size=1)
