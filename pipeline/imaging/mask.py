"""``Mask2D``: a boolean pixel mask with pixel scales and origin (True = masked).

A ``Mask2D`` is a ``numpy.ndarray`` subclass of dtype bool, so every numpy operation works on it,
carrying ``pixel_scales`` ``(sy, sx)`` in arcsec per pixel and ``origin`` ``(y, x)`` in arcsec.

Conventions (same as PyAutoArray):

* **True = masked** (excluded), False = unmasked (used). In a mask FITS file any non-zero value
  is masked.
* *slim* order is row-major over unmasked pixels (top row first, left to right).
* Shape factories measure distances from ``centre`` in arcsec, y up; the mask ``origin`` does not
  shift the shape.
"""

from __future__ import annotations

import numbers
import os
from functools import cached_property
from typing import Any

import numpy as np
import scipy.ndimage

from pipeline.exc import MaskError
from pipeline.imaging.compat import check_xp
from pipeline.imaging.frames import (
    blurring_mask_from,
    check_axis_ratio,
    distance_squared,
    elliptical_radius,
    resized_array_from,
    shape_pair,
)
from pipeline.imaging.geometry import as_pair, as_pixel_scales, scaled_coordinates_of

__all__ = ["Mask2D"]


class Mask2D(np.ndarray):
    """A 2-D boolean mask, True = masked.

    Parameters
    ----------
    mask
        2-D array-like; cast to bool (any non-zero value is masked).
    pixel_scales
        Arcsec per pixel, a number or ``(sy, sx)``.
    origin
        ``(y, x)`` arcsec of the frame centre.
    invert
        If True, swap masked and unmasked.
    xp
        PyAutoArray's array module: only numpy is accepted.

    The shape factories take PyAutoArray's argument order, ``(shape_native, <shape parameters>,
    pixel_scales, origin, centre, invert)``, so ``Mask2D.circular((100, 100), 3.0, 0.05)`` is a
    3 arcsec circle on 0.05 arcsec pixels, as in the reference.
    """

    pixel_scales: tuple[float, float]
    origin: tuple[float, float]

    def __new__(
        cls,
        mask: np.ndarray,
        pixel_scales: float | tuple[float, float],
        origin: tuple[float, float] = (0.0, 0.0),
        invert: bool = False,
        xp: Any = np,
    ) -> Mask2D:
        check_xp(xp, MaskError, "Mask2D")
        arr = np.array(mask, dtype=bool, copy=True)
        if arr.ndim != 2:
            raise MaskError(f"a Mask2D must be 2-D, got an array of shape {arr.shape}")
        if invert:
            arr = ~arr
        obj = arr.view(cls)
        obj.pixel_scales = as_pixel_scales(pixel_scales)
        obj.origin = as_pair(origin, "origin")
        return obj

    def __array_finalize__(self, obj: object) -> None:
        self.pixel_scales = getattr(obj, "pixel_scales", (1.0, 1.0))
        self.origin = getattr(obj, "origin", (0.0, 0.0))

    def __reduce__(self):  # keep pixel_scales/origin through pickling (Dask, multiprocessing)
        return (_rebuild_mask, (np.asarray(self), self.pixel_scales, self.origin))

    def __repr__(self) -> str:
        return (
            f"Mask2D(shape_native={self.shape_native}, pixel_scales={self.pixel_scales}, "
            f"origin={self.origin}, pixels_in_mask={self.pixels_in_mask})"
        )

    # ------------------------------------------------------------------ factories
    @classmethod
    def all_false(
        cls,
        shape_native: tuple[int, int],
        pixel_scales: float | tuple[float, float],
        origin: tuple[float, float] = (0.0, 0.0),
        invert: bool = False,
    ) -> Mask2D:
        """A mask with every pixel unmasked."""
        return cls(np.zeros(shape_pair(shape_native), dtype=bool), pixel_scales, origin, invert)

    @classmethod
    def circular(
        cls,
        shape_native: tuple[int, int],
        radius: float,
        pixel_scales: float | tuple[float, float],
        origin: tuple[float, float] = (0.0, 0.0),
        centre: tuple[float, float] = (0.0, 0.0),
        invert: bool = False,
    ) -> Mask2D:
        """Unmasked where the distance to ``centre`` is strictly less than ``radius`` (arcsec)."""
        scales = as_pixel_scales(pixel_scales)
        d2 = distance_squared(shape_pair(shape_native), scales, as_pair(centre, "centre"))
        return cls(d2 >= radius**2, scales, origin, invert)

    @classmethod
    def circular_annular(
        cls,
        shape_native: tuple[int, int],
        inner_radius: float,
        outer_radius: float,
        pixel_scales: float | tuple[float, float],
        origin: tuple[float, float] = (0.0, 0.0),
        centre: tuple[float, float] = (0.0, 0.0),
        invert: bool = False,
    ) -> Mask2D:
        """Unmasked where ``inner_radius**2 <= d**2 <= outer_radius**2`` (arcsec)."""
        if inner_radius > outer_radius:
            raise MaskError(
                f"circular_annular: inner_radius {inner_radius} is larger than outer_radius "
                f"{outer_radius} (arcsec); swap them"
            )
        scales = as_pixel_scales(pixel_scales)
        d2 = distance_squared(shape_pair(shape_native), scales, as_pair(centre, "centre"))
        return cls(~((d2 >= inner_radius**2) & (d2 <= outer_radius**2)), scales, origin, invert)

    @classmethod
    def elliptical(
        cls,
        shape_native: tuple[int, int],
        major_axis_radius: float,
        axis_ratio: float,
        angle: float,
        pixel_scales: float | tuple[float, float],
        origin: tuple[float, float] = (0.0, 0.0),
        centre: tuple[float, float] = (0.0, 0.0),
        invert: bool = False,
    ) -> Mask2D:
        """Unmasked inside an ellipse: semi-major axis ``major_axis_radius`` (arcsec), ``axis_ratio``
        = minor/major in (0, 1], ``angle`` in degrees counter-clockwise from +x."""
        check_axis_ratio(axis_ratio)
        scales = as_pixel_scales(pixel_scales)
        r = elliptical_radius(
            shape_pair(shape_native), scales, as_pair(centre, "centre"), axis_ratio, angle
        )
        return cls(~(r <= major_axis_radius), scales, origin, invert)

    @classmethod
    def elliptical_annular(
        cls,
        shape_native: tuple[int, int],
        inner_major_axis_radius: float,
        inner_axis_ratio: float,
        inner_phi: float,
        outer_major_axis_radius: float,
        outer_axis_ratio: float,
        outer_phi: float,
        pixel_scales: float | tuple[float, float],
        origin: tuple[float, float] = (0.0, 0.0),
        centre: tuple[float, float] = (0.0, 0.0),
        invert: bool = False,
    ) -> Mask2D:
        """Unmasked outside the inner ellipse (``r_in >= inner``) and inside the outer one
        (``r_out <= outer``); angles in degrees counter-clockwise from +x."""
        check_axis_ratio(inner_axis_ratio)
        check_axis_ratio(outer_axis_ratio)
        if inner_major_axis_radius > outer_major_axis_radius:
            raise MaskError(
                f"elliptical_annular: inner_major_axis_radius {inner_major_axis_radius} is larger "
                f"than outer_major_axis_radius {outer_major_axis_radius} (arcsec)"
            )
        scales = as_pixel_scales(pixel_scales)
        shape = shape_pair(shape_native)
        c = as_pair(centre, "centre")
        r_in = elliptical_radius(shape, scales, c, inner_axis_ratio, inner_phi)
        r_out = elliptical_radius(shape, scales, c, outer_axis_ratio, outer_phi)
        unmasked = (r_in >= inner_major_axis_radius) & (r_out <= outer_major_axis_radius)
        return cls(~unmasked, scales, origin, invert)

    @classmethod
    def from_pixel_coordinates(
        cls,
        shape_native: tuple[int, int],
        pixel_coordinates: list[tuple[int, int]],
        pixel_scales: float | tuple[float, float],
        origin: tuple[float, float] = (0.0, 0.0),
        buffer: int = 0,
        invert: bool = False,
    ) -> Mask2D:
        """A mask unmasked at the given ``(row, col)`` pixels and, with ``buffer`` > 0, at every pixel
        within ``buffer`` pixels of one of them in y and in x (a square of side ``2 buffer + 1``)."""
        if isinstance(buffer, bool) or not isinstance(buffer, numbers.Integral) or buffer < 0:
            raise MaskError(
                f"from_pixel_coordinates: buffer must be an integer >= 0, got {buffer!r}"
            )
        arr = np.ones(shape_pair(shape_native), dtype=bool)
        for row, col in pixel_coordinates:
            arr[row, col] = False
        if buffer:
            size = 2 * int(buffer) + 1
            arr = ~scipy.ndimage.binary_dilation(~arr, structure=np.ones((size, size), dtype=bool))
        return cls(arr, pixel_scales, origin, invert)

    @classmethod
    def from_fits(
        cls,
        file_path: str | os.PathLike,
        pixel_scales: float | tuple[float, float],
        hdu: int | str = 0,
        origin: tuple[float, float] = (0.0, 0.0),
        resized_mask_shape: tuple[int, int] | None = None,
        invert: bool = False,
    ) -> Mask2D:
        """Read a mask from a FITS image HDU (index or EXTNAME); any non-zero value is masked."""
        from pipeline.io.fits import read_fits_array  # deferred: all FITS I/O lives in pipeline.io

        values = read_fits_array(file_path, hdu=hdu)
        mask = cls(values != 0.0, pixel_scales, origin, invert)
        if resized_mask_shape is not None:
            mask = mask.resized_from(resized_mask_shape)
        return mask

    def output_to_fits(self, file_path: str | os.PathLike, overwrite: bool = False) -> None:
        """Write the mask as float 1.0 (masked) / 0.0 (unmasked) with pixel-scale and origin cards."""
        from pipeline.io.fits import write_fits_array

        write_fits_array(
            file_path,
            np.asarray(self, dtype=np.float64),
            pixel_scales=self.pixel_scales,
            origin=self.origin,
            overwrite=overwrite,
        )

    # ------------------------------------------------------------------ geometry
    @property
    def shape_native(self) -> tuple[int, int]:
        """``(ny, nx)`` in pixels."""
        return (int(self.shape[0]), int(self.shape[1]))

    @property
    def pixels_in_mask(self) -> int:
        """Number of unmasked pixels N (the slim length)."""
        return int(np.count_nonzero(~np.asarray(self)))

    @property
    def shape_slim(self) -> int:
        """Same as :attr:`pixels_in_mask`."""
        return self.pixels_in_mask

    @property
    def is_all_false(self) -> bool:
        """True if no pixel is masked."""
        return not np.asarray(self).any()

    @property
    def native_for_slim(self) -> np.ndarray:
        """``(N, 2)`` int64 ``(row, col)`` of each unmasked pixel, in slim order."""
        rows, cols = np.nonzero(~np.asarray(self))
        return np.stack([rows, cols], axis=1).astype(np.int64)

    @property
    def slim_for_native(self) -> np.ndarray:
        """``(ny, nx)`` int64 slim index of each pixel, -1 where masked."""
        index = np.full(self.shape_native, -1, dtype=np.int64)
        unmasked = ~np.asarray(self)
        index[unmasked] = np.arange(int(unmasked.sum()))
        return index

    @property
    def masked_flat_indexes(self) -> np.ndarray:
        """Flat row-major indexes of the masked pixels in the full frame."""
        return np.flatnonzero(np.asarray(self))

    @property
    def unmasked_flat_indexes(self) -> np.ndarray:
        """Flat row-major indexes ``row * nx + col`` of the unmasked pixels, in slim order."""
        return np.flatnonzero(~np.asarray(self))

    @property
    def grid_slim(self) -> np.ndarray:
        """``(N, 2)`` arcsec ``(y, x)`` of the unmasked pixel centres, slim order."""
        rows, cols = np.nonzero(~np.asarray(self))
        y, x = scaled_coordinates_of(rows, cols, self.shape_native, self.pixel_scales, self.origin)
        return np.stack([y, x], axis=1)

    @property
    def mask_centre(self) -> tuple[float, float]:
        """``(y, x)`` arcsec midpoint of the extreme unmasked pixel centres (midrange, as the
        reference computes it)."""
        grid = self.grid_slim
        if grid.shape[0] == 0:
            raise MaskError("mask_centre: the mask has no unmasked pixel")
        return (
            float(0.5 * (grid[:, 0].max() + grid[:, 0].min())),
            float(0.5 * (grid[:, 1].max() + grid[:, 1].min())),
        )

    # ------------------------------------------------------------------ derived masks
    @property
    def edge(self) -> Mask2D:
        """Mask unmasked only at *edge* pixels: unmasked pixels with at least one masked (or
        off-array) pixel among their 8 neighbours."""
        padded = np.pad(np.asarray(self), 1, mode="constant", constant_values=True)
        neighbour_masked = np.zeros(self.shape_native, dtype=bool)
        ny, nx = self.shape_native
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy or dx:
                    neighbour_masked |= padded[1 + dy : 1 + dy + ny, 1 + dx : 1 + dx + nx]
        edge = ~np.asarray(self) & neighbour_masked
        return self._like(~edge)

    def blurring_mask_from(
        self, kernel_shape_native: tuple[int, int], allow_padding: bool = True
    ) -> Mask2D:
        """The blurring mask: unmasked exactly at masked pixels within the PSF footprint of an
        unmasked pixel (their light is blurred into the mask by convolution).

        If an unmasked pixel lies within ``k // 2`` of the array edge the mask is first padded
        symmetrically with masked pixels (parity preserved, a ``UserWarning`` is issued), as the
        reference library does; the returned mask then has a larger shape, the same pixel scales and
        origin, and its coordinates extend beyond the image. With ``allow_padding=False`` this case
        raises :class:`~pipeline.exc.MaskError` instead.
        """
        blurring = blurring_mask_from(np.asarray(self), kernel_shape_native, allow_padding)
        return self._like(blurring)

    def resized_from(self, new_shape: tuple[int, int], pad_value: bool = True) -> Mask2D:
        """Centre-crop or pad (with ``pad_value``, default masked) to ``new_shape``; pixel scales and
        origin are kept. The centre pixel is ``(ny // 2, nx // 2)`` as in the reference."""
        resized = resized_array_from(np.asarray(self), shape_pair(new_shape), pad_value=pad_value)
        return self._like(resized)

    @property
    def derive_mask(self) -> _DerivedMasks:
        """PyAutoArray-style access: ``mask.derive_mask.edge``, ``.blurring_from(...)``."""
        return _DerivedMasks(self)

    @property
    def derive_indexes(self) -> _DerivedIndexes:
        """PyAutoArray-style access: ``mask.derive_indexes.native_for_slim``, ``.masked_slim``..."""
        return _DerivedIndexes(self)

    # ------------------------------------------------------------------ checks
    def check_compatible(self, other: Mask2D, what: str = "mask") -> None:
        """Raise :class:`MaskError` unless ``other`` has this mask's shape and pixel scales."""
        if tuple(other.shape) != self.shape_native:
            raise MaskError(
                f"{what} has shape {tuple(other.shape)} but the dataset is {self.shape_native} "
                f"pixels; build the mask with shape_native={self.shape_native}"
            )
        other_scales = getattr(other, "pixel_scales", None)
        if other_scales is not None and not np.allclose(other_scales, self.pixel_scales, rtol=1e-9):
            raise MaskError(
                f"{what} has pixel_scales {tuple(other_scales)} but the dataset has "
                f"{self.pixel_scales} arcsec/pixel; build the mask with the dataset's pixel_scales"
            )

    def _like(self, values: np.ndarray) -> Mask2D:
        return Mask2D(values, self.pixel_scales, self.origin)


class _DerivedMasks:
    def __init__(self, mask: Mask2D):
        self._mask = mask

    @property
    def edge(self) -> Mask2D:
        return self._mask.edge

    @property
    def all_false(self) -> Mask2D:
        return Mask2D.all_false(self._mask.shape_native, self._mask.pixel_scales, self._mask.origin)

    def blurring_from(
        self, kernel_shape_native: tuple[int, int], allow_padding: bool = False
    ) -> Mask2D:
        return self._mask.blurring_mask_from(kernel_shape_native, allow_padding=allow_padding)


class _DerivedIndexes:
    def __init__(self, mask: Mask2D):
        self._mask = mask

    @cached_property
    def native_for_slim(self) -> np.ndarray:
        return self._mask.native_for_slim

    @cached_property
    def masked_slim(self) -> np.ndarray:
        return self._mask.masked_flat_indexes

    @cached_property
    def unmasked_slim(self) -> np.ndarray:
        return self._mask.unmasked_flat_indexes

    @cached_property
    def edge_slim(self) -> np.ndarray:
        edge = ~np.asarray(self._mask.edge)
        return self._mask.slim_for_native[edge]


def _rebuild_mask(values: np.ndarray, pixel_scales, origin) -> Mask2D:
    return Mask2D(values, pixel_scales, origin)
