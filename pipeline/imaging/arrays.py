"""``Array2D``: values on the unmasked pixels of a :class:`~pipeline.imaging.mask.Mask2D`.

Values are held in *slim* form (1-D over unmasked pixels, row-major) and are read-only; every
operation returns a new object. ``.native`` is the full ``(ny, nx)`` frame with masked pixels 0.

Unlike the reference library, constructing an ``Array2D`` from a native ndarray never modifies
the caller's array (it zeroes masked pixels of the input in place).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from pipeline.exc import ArrayError
from pipeline.imaging.compat import check_xp, refuse_unless
from pipeline.imaging.frames import resized_array_from
from pipeline.imaging.geometry import as_pixel_scales
from pipeline.imaging.mask import Mask2D

__all__ = ["Array2D", "ArrayView"]


class ArrayView(np.ndarray):
    """A plain ``numpy`` array that also answers PyAutoArray's ``.array``.

    ``.native``, ``.slim`` and ``.over_sampled`` return this view, so ported code that writes
    ``x.native.array`` works, while numpy code sees an ndarray: ufuncs, arithmetic and reductions on
    it return plain ``numpy.ndarray`` values or numpy scalars, never this class.
    """

    @property
    def array(self) -> np.ndarray:
        """The same values as a plain ``numpy.ndarray`` (a view, no copy)."""
        return self.view(np.ndarray)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        def plain(x):
            return x.view(np.ndarray) if isinstance(x, ArrayView) else x

        if "out" in kwargs:
            kwargs["out"] = tuple(plain(x) for x in kwargs["out"])
        return getattr(ufunc, method)(*(plain(x) for x in inputs), **kwargs)

    def __array_wrap__(self, array, context=None, return_scalar=False):
        # functions outside the ufunc protocol (np.where, np.concatenate, ...) return plain arrays
        plain = np.asarray(array)
        return plain[()] if return_scalar else plain


def _check_header(header: Any, where: str) -> None:
    refuse_unless(
        header is None,
        ArrayError,
        where,
        "header",
        type(header).__name__,
        "lenspipe arrays carry no FITS header (read pixel scales from one with "
        "pixel_scales='header' in from_fits)",
    )


class Array2D(NDArrayOperatorsMixin):
    """Values on a masked 2-D frame.

    Parameters
    ----------
    values
        Slim ``(N,)`` values in slim order, or native ``(ny, nx)`` values (masked pixels are
        ignored), or another ``Array2D``.
    mask
        The frame; ``N = mask.pixels_in_mask``.
    header, store_native, skip_mask, xp
        PyAutoArray's keywords, accepted only at their defaults (None, False, False, numpy): a
        lenspipe array carries no FITS header, stores slim values and computes with numpy.
    """

    __array_priority__ = 20

    def __init__(
        self,
        values: np.ndarray | Array2D,
        mask: Mask2D,
        header: Any = None,
        store_native: bool = False,
        skip_mask: bool = False,
        xp: Any = np,
    ):
        _check_header(header, "Array2D")
        refuse_unless(
            not store_native,
            ArrayError,
            "Array2D",
            "store_native",
            store_native,
            "lenspipe always stores slim values; read the native frame with .native",
        )
        refuse_unless(
            not skip_mask,
            ArrayError,
            "Array2D",
            "skip_mask",
            skip_mask,
            "lenspipe keeps only the unmasked values (masked pixels read 0 in .native)",
        )
        check_xp(xp, ArrayError, "Array2D")
        if not isinstance(mask, Mask2D):
            raise ArrayError(f"Array2D needs a Mask2D, got {type(mask).__name__}")
        if isinstance(values, Array2D):
            values = values.native if values.shape_native == mask.shape_native else values.slim
        arr = np.asarray(values)
        if arr.dtype == bool:
            arr = arr.astype(np.int64)
        if arr.ndim == 1 and arr.shape[0] == mask.pixels_in_mask:
            slim = np.array(arr, copy=True)
        elif arr.ndim == 2 and arr.shape == mask.shape_native:
            slim = arr[~np.asarray(mask)]  # boolean indexing copies: the input is never modified
        else:
            raise ArrayError(
                f"Array2D values of shape {arr.shape} fit neither the slim shape "
                f"({mask.pixels_in_mask},) nor the native shape {mask.shape_native} of the mask"
            )
        slim.flags.writeable = False
        self._slim = slim
        self._mask = mask

    # ------------------------------------------------------------------ factories
    @classmethod
    def no_mask(
        cls,
        values: np.ndarray,
        pixel_scales: float | tuple[float, float],
        shape_native: tuple[int, int] | None = None,
        origin: tuple[float, float] = (0.0, 0.0),
        header: Any = None,
    ) -> Array2D:
        """An unmasked ``Array2D``; 1-D values need ``shape_native``. ``header`` (PyAutoArray's
        FITS header) is accepted only as None."""
        _check_header(header, "Array2D.no_mask")
        arr = np.asarray(values)
        if arr.ndim == 1:
            if shape_native is None:
                raise ArrayError("Array2D.no_mask: 1-D values need shape_native")
            arr = arr.reshape(shape_native)
        return cls(arr, Mask2D.all_false(arr.shape, pixel_scales, origin))

    @classmethod
    def full(
        cls,
        fill_value: float,
        shape_native: tuple[int, int],
        pixel_scales: float | tuple[float, float],
        origin: tuple[float, float] = (0.0, 0.0),
        header: Any = None,
    ) -> Array2D:
        """An unmasked array filled with ``fill_value``."""
        _check_header(header, "Array2D.full")
        return cls.no_mask(
            np.full(shape_native, fill_value, dtype=np.float64), pixel_scales, origin=origin
        )

    @classmethod
    def ones(cls, shape_native, pixel_scales, origin=(0.0, 0.0), header: Any = None) -> Array2D:
        return cls.full(1.0, shape_native, pixel_scales, origin, header)

    @classmethod
    def zeros(cls, shape_native, pixel_scales, origin=(0.0, 0.0), header: Any = None) -> Array2D:
        return cls.full(0.0, shape_native, pixel_scales, origin, header)

    @classmethod
    def from_fits(
        cls,
        file_path: str | os.PathLike,
        pixel_scales: float | tuple[float, float] | None,
        hdu: int | str = 0,
        origin: tuple[float, float] = (0.0, 0.0),
    ) -> Array2D:
        """Read an unmasked float64 array from a FITS image HDU (index or EXTNAME).

        ``pixel_scales="header"`` reads them from the HDU's header (``PIXSCAY``/``PIXSCAX`` or the
        WCS), in arcsec.
        """
        from pipeline.io.fits import pixel_scales_from_header, read_fits_array

        values = read_fits_array(file_path, hdu=hdu)
        if isinstance(pixel_scales, str) and pixel_scales == "header":
            pixel_scales = pixel_scales_from_header(file_path, hdu=hdu)
        return cls.no_mask(values, as_pixel_scales(pixel_scales), origin=origin)

    def output_to_fits(self, file_path: str | os.PathLike, overwrite: bool = False) -> None:
        """Write ``.native`` (float64) with ``PIXSCAY``/``PIXSCAX``/``ORIGINY``/``ORIGINX`` cards."""
        from pipeline.io.fits import write_fits_array

        write_fits_array(
            file_path,
            np.asarray(self.native, dtype=np.float64),
            pixel_scales=self.pixel_scales,
            origin=self.origin,
            overwrite=overwrite,
        )

    # ------------------------------------------------------------------ views
    @property
    def mask(self) -> Mask2D:
        return self._mask

    @property
    def slim(self) -> ArrayView:
        """``(N,)`` read-only values in slim order."""
        return self._slim.view(ArrayView)

    @property
    def array(self) -> np.ndarray:
        """Same as :attr:`slim` (the reference's ``.array``)."""
        return self._slim

    @property
    def native(self) -> ArrayView:
        """``(ny, nx)`` new array, masked pixels 0 (``.native.array`` is the plain ndarray)."""
        out = np.zeros(self._mask.shape_native, dtype=self._slim.dtype)
        out[~np.asarray(self._mask)] = self._slim
        return out.view(ArrayView)

    @property
    def pixel_scales(self) -> tuple[float, float]:
        return self._mask.pixel_scales

    @property
    def origin(self) -> tuple[float, float]:
        return self._mask.origin

    @property
    def shape_native(self) -> tuple[int, int]:
        return self._mask.shape_native

    @property
    def shape_slim(self) -> int:
        return int(self._slim.shape[0])

    @property
    def dtype(self) -> np.dtype:
        return self._slim.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self._slim.shape

    def max(self, *args, **kwargs):
        return self._slim.max(*args, **kwargs)

    def min(self, *args, **kwargs):
        return self._slim.min(*args, **kwargs)

    def sum(self, *args, **kwargs):
        return self._slim.sum(*args, **kwargs)

    def mean(self, *args, **kwargs):
        return self._slim.mean(*args, **kwargs)

    def __len__(self) -> int:
        return self.shape_slim

    def __getitem__(self, item):
        return self._slim[item]

    def __iter__(self):
        return iter(self._slim)

    def __array__(self, dtype=None, copy=None):
        if copy:
            return np.array(self._slim, dtype=dtype, copy=True)
        return np.asarray(self._slim, dtype=dtype)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if kwargs.get("out") is not None:
            raise ArrayError("Array2D is immutable: ufuncs with out= are not supported")
        args = []
        for x in inputs:
            if isinstance(x, Array2D):
                if x.shape_native != self.shape_native or x.shape_slim != self.shape_slim:
                    raise ArrayError(
                        f"cannot combine Array2D on frames {self.shape_native}/{self.shape_slim} "
                        f"and {x.shape_native}/{x.shape_slim}"
                    )
                args.append(x._slim)
            else:
                args.append(x)
        result = getattr(ufunc, method)(*args, **kwargs)
        if isinstance(result, np.ndarray) and result.shape == self._slim.shape:
            return Array2D(result, self._mask)
        return result

    def __repr__(self) -> str:
        return (
            f"Array2D(shape_native={self.shape_native}, shape_slim={self.shape_slim}, "
            f"pixel_scales={self.pixel_scales}, dtype={self.dtype})"
        )

    # ------------------------------------------------------------------ new arrays
    def apply_mask(self, mask: Mask2D) -> Array2D:
        """The same native values on a new mask of the same shape."""
        self._mask.check_compatible(mask, "the new mask")
        return Array2D(self.native, mask)

    def resized_from(self, new_shape: tuple[int, int], mask_pad_value: bool = False) -> Array2D:
        """Centre-crop or zero-pad ``.native`` to ``new_shape``; the result is unmasked (as in the
        reference) unless ``mask_pad_value`` is True, when padded pixels are masked and the
        cropped mask is kept."""
        values = resized_array_from(self.native, new_shape, pad_value=0)
        if mask_pad_value:
            mask = self._mask.resized_from(new_shape, pad_value=True)
        else:
            mask = Mask2D.all_false(new_shape, self.pixel_scales, self.origin)
        return Array2D(values, mask)

    def trimmed_after_convolution_from(self, kernel_shape: tuple[int, int]) -> Array2D:
        """Cut ``ceil(k / 2) - 1`` pixels from each side (``k // 2`` for odd k); the mask is
        centre-cropped the same way."""
        ky, kx = kernel_shape
        ny, nx = self.shape_native
        new_shape = (ny - 2 * (int(np.ceil(ky / 2)) - 1), nx - 2 * (int(np.ceil(kx / 2)) - 1))
        if new_shape[0] < 1 or new_shape[1] < 1:
            raise ArrayError(
                f"trimming a {kernel_shape} kernel's border from a {self.shape_native} array "
                "leaves nothing"
            )
        values = resized_array_from(self.native, new_shape, pad_value=0)
        mask = self._mask.resized_from(new_shape)
        return Array2D(values, mask)

    def with_values(self, slim: np.ndarray) -> Array2D:
        """A new ``Array2D`` on this mask with the given slim values."""
        return Array2D(np.asarray(slim), self._mask)
