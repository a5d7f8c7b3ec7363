"""FITS headers without pixel data: what ``lenspipe hdus`` lists and ``lenspipe validate``
checks (:mod:`pipeline.flow.preflight`).

A file is opened once, with astropy's lazy HDU loading, and every HDU's header is read; pixel
data are read only for the HDUs a caller names in ``arrays`` (small PSF kernels), and checksums
are not verified (that reads every byte: the prepare task does it). Shapes come from the
``NAXISn`` cards, numpy order ``(NAXIS2, NAXIS1)``; a tile-compressed image's header is its
image's. HDU keys (index, EXTNAME case-insensitively, ``'PRIMARY'``) are resolved by astropy, as
:func:`pipeline.io.fits.read_fits_array` resolves them, HDU 0 of ``fpack``'s layout included.

Concurrency: :func:`read_file_headers` is safe to call from several threads at once. It does not
change the warnings filters; a caller that wants astropy's warnings as errors (as every read of
:mod:`pipeline.io.fits` does) wraps all its threads in :func:`warnings_as_errors` once, and calls
no :mod:`pipeline.io.fits` function inside that block (they take the same lock).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from pipeline.exc import FitsReadError
from pipeline.io.files import not_a_regular_file
from pipeline.io.fits import (
    _READ_ERRORS,
    HduKey,
    _compressed_image,
    _explain,
    _warnings_as_errors,
    pixel_scales_from_header,
)

__all__ = ["FileHeaders", "HduSummary", "read_file_headers", "warnings_as_errors"]

# BITPIX -> numpy dtype; for integers also (the unsigned/signed twin, the BZERO that makes it)
_BITPIX = {8: "uint8", 16: "int16", 32: "int32", 64: "int64", -32: "float32", -64: "float64"}
_OFFSET = {8: ("int8", -128), 16: ("uint16", 2**15), 32: ("uint32", 2**31), 64: ("uint64", 2**63)}


@contextmanager
def warnings_as_errors() -> Iterator[None]:
    """Every warning is an error while the block runs, in every thread (the filters are the
    process's); the lock of :mod:`pipeline.io.fits` keeps other such blocks out meanwhile."""
    with _warnings_as_errors():
        yield


@dataclass(frozen=True)
class HduSummary:
    """One HDU as its header describes it.

    ``kind``: ``'image'``, ``'compressed image'``, ``'table'``, ``'empty'`` (an image HDU with
    ``NAXIS = 0``) or astropy's class name for anything else. ``shape``: numpy order for images
    (``()`` when empty), ``(rows,)`` for tables.
    """

    index: int
    name: str
    kind: str
    shape: tuple[int, ...]
    header: fits.Header = field(repr=False, compare=False)

    @property
    def is_image(self) -> bool:
        """An image HDU, empty ones included."""
        return self.kind in ("image", "compressed image", "empty")

    @property
    def dtype(self) -> str | None:
        """The numpy dtype astropy gives the data (``BITPIX`` with ``BZERO``/``BSCALE``:
        ``uint16`` for 16-bit data with ``BZERO = 32768``, ``float32`` for scaled 16-bit
        integers), or None for tables and empty HDUs."""
        if not self.is_image or not self.shape:
            return None
        bitpix = int(self.header.get("BITPIX", 0))
        base = _BITPIX.get(bitpix)
        if base is None or bitpix < 0:
            return base
        bscale, bzero = self.header.get("BSCALE", 1), self.header.get("BZERO", 0)
        if bscale == 1 and bzero == _OFFSET[bitpix][1]:
            return _OFFSET[bitpix][0]
        if bscale != 1 or bzero != 0:
            return f"float{32 if bitpix <= 16 else 64} (scaled {base})"
        return base

    @property
    def bunit(self) -> str | None:
        """The ``BUNIT`` card, None when absent or blank."""
        value = self.header.get("BUNIT")
        if value is None:
            return None
        return str(value).strip() or None

    @property
    def columns(self) -> int | None:
        """Columns of a table (``TFIELDS``), None for images."""
        return int(self.header.get("TFIELDS", 0)) if self.kind == "table" else None

    def pixel_scales(self) -> tuple[float, float] | None:
        """``(sy, sx)`` arcsec as :func:`~pipeline.io.fits.pixel_scales_from_header` reads this
        header, None for non-images and headers without a readable one. Not inside
        :func:`warnings_as_errors` (same lock)."""
        if not self.is_image or len(self.shape) < 2:
            return None
        try:
            return pixel_scales_from_header(self.header, self.index)
        except FitsReadError:
            return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: index, name, kind, shape, dtype, bunit, pixel_scales (and columns)."""
        scales = self.pixel_scales()
        summary: dict[str, Any] = {
            "index": self.index,
            "name": self.name,
            "kind": self.kind,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "bunit": self.bunit,
            "pixel_scales": list(scales) if scales is not None else None,
        }
        if self.kind == "table":
            summary["columns"] = self.columns
        return summary


@dataclass(frozen=True)
class FileHeaders:
    """Every HDU of one file; ``found``: the HDU index each key asked for names (keys that name
    none are absent); ``arrays``: the float64 pixels of the keys asked for, where 2-D images."""

    path: str
    hdus: tuple[HduSummary, ...]
    found: Mapping[HduKey, int] = field(default_factory=dict)
    arrays: Mapping[HduKey, np.ndarray] = field(default_factory=dict, repr=False)

    def listing(self) -> str:
        """The HDUs present, ``0 'PRIMARY', 1 'SCI', ...``."""
        return ", ".join(f"{h.index} {h.name!r}" for h in self.hdus)

    def images(self) -> list[HduSummary]:
        return [h for h in self.hdus if h.is_image and h.shape]


def _kind(hdu: Any) -> str:
    if isinstance(hdu, fits.CompImageHDU):
        return "compressed image"
    if isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU):
        return "image" if hdu.header.get("NAXIS", 0) else "empty"
    if isinstance(hdu, fits.BinTableHDU | fits.TableHDU):
        return "table"
    return type(hdu).__name__


def _summary(index: int, hdu: Any) -> HduSummary:
    header = hdu.header
    kind = _kind(hdu)
    if kind in ("image", "compressed image"):
        naxis = int(header.get("NAXIS", 0))
        shape = tuple(int(header.get(f"NAXIS{i}", 0)) for i in range(naxis, 0, -1))
    elif kind == "table":
        shape = (int(header.get("NAXIS2", 0)),)
    else:
        shape = ()
    return HduSummary(index, str(hdu.name), kind, shape, header.copy())


def read_file_headers(
    file_path: str | os.PathLike,
    keys: Collection[HduKey] = (),
    *,
    arrays: Collection[HduKey] = (),
) -> FileHeaders:
    """Every HDU's header of one FITS file, which HDU each of ``keys`` names, and the pixels of
    the HDUs named by ``arrays`` (a subset of ``keys``; read only when the HDU is a 2-D image).

    Raises
    ------
    FitsReadError
        Missing, empty, non-FITS or damaged file, a FIFO, device or folder (never opened; the
        message names it), or pixels of an HDU in
        ``arrays`` that cannot be read.
    """
    path = Path(file_path)
    where = f"FITS file '{os.fspath(file_path)}'"
    odd = not_a_regular_file(path)  # opening a FIFO or reading /dev/zero would never end
    if odd is not None:
        raise FitsReadError(f"{where} {odd}: name a FITS file")
    try:
        # our own handle: astropy leaks its file handle when open() fails part-way
        with open(path, "rb") as handle, fits.open(handle, lazy_load_hdus=True) as hdul:
            hdus = tuple(_summary(i, hdu) for i, hdu in enumerate(hdul))
            found: dict[HduKey, int] = {}
            for key in keys:
                try:
                    hdu = hdul[key]
                except (KeyError, IndexError):
                    continue
                compressed = _compressed_image(hdul, key, hdu)
                found[key] = compressed[1] if compressed else hdul.index(hdu)
            pixels = {}
            for key in arrays:
                index = found.get(key)
                if index is not None and hdus[index].is_image and len(hdus[index].shape) == 2:
                    pixels[key] = _pixels(hdul[index], f"{where}, HDU {key!r}")
    except FitsReadError:
        raise
    except _READ_ERRORS as err:
        raise FitsReadError(f"{where}: {_explain(err, path)}") from err
    return FileHeaders(os.fspath(file_path), hdus, found, pixels)


def _pixels(hdu: Any, where: str) -> np.ndarray:
    try:
        return np.array(hdu.data, dtype=np.float64, order="C")
    except _READ_ERRORS:
        raise
    except Exception as err:  # noqa: BLE001 - astropy's tile decompressor raises its own class
        raise FitsReadError(f"{where}: pixels cannot be read ({err})") from err
