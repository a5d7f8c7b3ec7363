"""FITS input and output: the only module of lenspipe that touches astropy.io.fits.

Conventions
-----------
* Arrays are returned as 2-D, native-endian, C-contiguous ``float64`` copies (never memmaps), with
  BSCALE/BZERO applied. Row 0 is the first FITS row: nothing is flipped.
* Pixel scales are ``(sy, sx)`` in arcsec per pixel; origins are ``(y, x)`` in arcsec. They are
  stored in the ``PIXSCAY``/``PIXSCAX`` and ``ORIGINY``/``ORIGINX`` cards, as the reference
  library writes them; :func:`pixel_scales_from_header` also reads a WCS and ``PIXSCALE``.
* Compressed files are read as they are: gzip (``.fits.gz``) whole, and tile-compressed images
  (``.fits.fz``, ``CompImageHDU``). The FITS standard keeps a compressed image out of the primary
  HDU, so HDU 0 of a file whose primary HDU is empty and whose only image is tile-compressed
  means that image (``fpack`` writes exactly this); any other empty HDU 0 is an error that lists
  the file's images.
* Every failure is raised as one :class:`~pipeline.exc.FitsReadError` or
  :class:`~pipeline.exc.FitsWriteError` whose message names the file and the HDU.
"""

from __future__ import annotations

import os
import threading
import uuid
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales

from pipeline.exc import FitsReadError, FitsWriteError
from pipeline.io.files import not_a_regular_file
from pipeline.io.fits_plain import read_plain_hdu

__all__ = [
    "read_fits_array",
    "read_fits_header",
    "read_fits_image",
    "pixel_scales_from_header",
    "write_fits_array",
    "write_fits_hdus",
]

HduKey = int | str | tuple[str, int]

# astropy raises any of these (or only warns) for corrupt files, depending on where the damage is;
# gzip streams (a .fits.gz, or a GZIP tile) cut short or damaged raise EOFError or zlib.error.
_READ_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error, TypeError)
_READ_ERRORS += (ValueError, IndexError, KeyError, VerifyError, Warning)
_WRITE_ERRORS = (OSError, TypeError, ValueError, KeyError, VerifyError, Warning)
_SCALE_RTOL = 1e-6
_WCS_SCALE_KEYS = ("CD1_1", "CD1_2", "CD2_1", "CD2_2", "CDELT1", "CDELT2")


# catch_warnings swaps the process-wide filter list: interleaved in two threads (Dask workers), it
# leaves "error" installed for good. One lock keeps our sections from interleaving.
_WARNINGS_LOCK = threading.Lock()


@contextmanager
def _warnings_as_errors() -> Iterator[None]:
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _where(file_path: str | os.PathLike | None, hdu: HduKey, dataset: str | None) -> str:
    source = "header" if file_path is None else f"FITS file '{os.fspath(file_path)}'"
    prefix = f"dataset {dataset!r}: " if dataset is not None else ""
    return f"{prefix}{source}, HDU {hdu!r}"


def _explain(err: BaseException, path: Path) -> str:
    text = " ".join(str(err).split())
    low = text.lower()
    if isinstance(err, FileNotFoundError):
        return "file not found"
    if "verification failed" in low:
        return f"checksum mismatch ({text})"
    if "truncated" in low or "buffer is too small" in low or "not multiple of 2880" in low:
        return f"file is truncated ({text})"
    if isinstance(err, OSError) and path.is_file() and path.stat().st_size == 0:
        return "file is empty"
    if isinstance(err, OSError):
        return f"not a readable FITS file ({text})"
    return f"{type(err).__name__}: {text}"


def _available(hdul: fits.HDUList) -> str:
    return ", ".join(f"{i} {h.name!r}" for i, h in enumerate(hdul))


def _has_image(hdu: Any) -> bool:
    """An image HDU with data (a tile-compressed one shows its image's NAXIS), from the header."""
    return bool(hdu.is_image and hdu.header.get("NAXIS", 0))


def _compressed_image(hdul: fits.HDUList, hdu: HduKey, found: Any) -> tuple[Any, int] | None:
    """For HDU 0 without data: ``(hdu, index)`` of the file's only image when that image is
    tile-compressed (``.fits.fz``: the standard keeps it out of the primary HDU), else None."""
    if hdu != 0 or isinstance(hdu, bool) or _has_image(found):
        return None
    images = [(h, i) for i, h in enumerate(hdul) if i > 0 and _has_image(h)]
    if len(images) == 1 and isinstance(images[0][0], fits.CompImageHDU):
        return images[0]
    return None


def _image_data(found: Any, where: str) -> np.ndarray | None:
    try:
        return found.data
    except _READ_ERRORS:
        raise
    except Exception as err:  # noqa: BLE001 - astropy's tile decompressor raises its own class
        if not isinstance(found, fits.CompImageHDU):
            raise
        raise FitsReadError(f"{where}: damaged compressed tiles ({err})") from err


def _no_data(hdul: fits.HDUList, where: str) -> FitsReadError:
    images = [f"{i} {h.name!r}" for i, h in enumerate(hdul) if _has_image(h)]
    hint = (
        f"; the images in this file are HDU {', '.join(images)}: name one (index or EXTNAME)"
        if images
        else ""
    )
    return FitsReadError(f"{where}: HDU has no data (NAXIS=0){hint}")


def _read_hdu(
    file_path: str | os.PathLike,
    hdu: HduKey,
    dataset: str | None,
    *,
    with_data: bool,
    with_header: bool = True,
) -> tuple[fits.Header | None, np.ndarray | None]:
    """``(header, data)`` of one HDU (None for what is not asked for, where that saves work)."""
    where = _where(file_path, hdu, dataset)
    odd = not_a_regular_file(Path(file_path))  # never opened: a FIFO would block forever
    if odd is not None:
        raise FitsReadError(f"{where}: the path {odd}; name a FITS file")
    plain = read_plain_hdu(file_path, hdu)
    if plain is not None:
        header = fits.Header.fromstring(plain.header) if with_header else None
        return header, plain.data if with_data else None
    return _read_hdu_astropy(file_path, hdu, dataset, with_data=with_data)


def _read_hdu_astropy(
    file_path: str | os.PathLike, hdu: HduKey, dataset: str | None, *, with_data: bool
) -> tuple[fits.Header, np.ndarray | None]:
    """What :func:`_read_hdu` reads where :func:`~pipeline.io.fits_plain.read_plain_hdu` does
    not: every file astropy can open, and every error."""
    path = Path(file_path)
    where = _where(file_path, hdu, dataset)
    try:
        # astropy only warns on checksum mismatch and on some truncations.
        with _warnings_as_errors():
            # Our own handle: astropy leaks its file handle when open() fails part-way.
            with open(path, "rb") as fh, fits.open(fh, checksum=True) as hdul:
                try:
                    found = hdul[hdu]
                except (KeyError, IndexError) as err:
                    raise FitsReadError(
                        f"{where}: no such HDU; available HDUs: {_available(hdul)}"
                    ) from err
                compressed = _compressed_image(hdul, hdu, found)
                if compressed is not None:
                    found, index = compressed
                    where = f"{where} (the tile-compressed image in HDU {index} {found.name!r})"
                header = found.header.copy()
                if not with_data:
                    return header, None
                if not found.is_image:
                    raise FitsReadError(f"{where}: HDU is a {type(found).__name__}, not an image")
                data = _image_data(found, where)
                if data is None:
                    raise _no_data(hdul, where)
                if data.ndim != 2:
                    raise FitsReadError(f"{where}: data are not 2-D (shape {data.shape})")
                return header, np.array(data, dtype=np.float64, order="C")
    except FitsReadError:
        raise
    except _READ_ERRORS as err:
        raise FitsReadError(f"{where}: {_explain(err, path)}") from err


def read_fits_array(
    file_path: str | os.PathLike, hdu: HduKey = 0, *, dataset: str | None = None
) -> np.ndarray:
    """Read a 2-D image HDU as physical values.

    Parameters
    ----------
    file_path
        The FITS file.
    hdu
        HDU index, EXTNAME (case-insensitive) or ``(EXTNAME, EXTVER)``. ``0`` in a file whose
        primary HDU is empty and whose only image is tile-compressed (``fpack``'s ``.fits.fz``)
        is that image.
    dataset
        Dataset name quoted in error messages.

    Returns
    -------
    numpy.ndarray
        Native-endian C-contiguous float64 copy, shape ``(NAXIS2, NAXIS1)``, BSCALE/BZERO applied;
        row 0 is the first FITS row.

    Raises
    ------
    FitsReadError
        Missing, empty, non-FITS or truncated file, checksum mismatch, missing HDU, table HDU,
        HDU without data or data not 2-D.
    """
    data = _read_hdu(file_path, hdu, dataset, with_data=True, with_header=False)[1]
    assert data is not None  # with_data=True: read or raised
    return data


def read_fits_image(
    file_path: str | os.PathLike, hdu: HduKey = 0, *, dataset: str | None = None
) -> tuple[np.ndarray, fits.Header]:
    """:func:`read_fits_array` and :func:`read_fits_header` of one HDU with the file opened (and
    its checksums verified) once: ``(data, header)``."""
    header, data = _read_hdu(file_path, hdu, dataset, with_data=True)
    assert data is not None and header is not None  # asked for: read or raised
    return data, header


def read_fits_header(
    file_path: str | os.PathLike, hdu: HduKey = 0, *, dataset: str | None = None
) -> fits.Header:
    """Read the header of one HDU (a detached copy; HDU 0 of a tile-compressed file is its
    image's, as in :func:`read_fits_array`); errors as :func:`read_fits_array`."""
    header = _read_hdu(file_path, hdu, dataset, with_data=False)[0]
    assert header is not None  # asked for: read or raised
    return header


def _positive_finite(value: Any, what: str, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise FitsReadError(f"{where}: {what} is not a number ({value!r})") from err
    if not np.isfinite(number) or number <= 0:
        raise FitsReadError(f"{where}: {what} must be positive and finite, got {number!r}")
    return number


def _wcs_pixel_scales(header: fits.Header, where: str) -> tuple[float, float] | None:
    """(sy, sx) in arcsec from a celestial WCS, or None when the header has no WCS scale."""
    if not any(key in header for key in _WCS_SCALE_KEYS):
        return None
    try:
        with _warnings_as_errors():
            # wcslib's "fixes" (dates, unit spellings) do not change the pixel scale.
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, naxis=2)
            if not wcs.is_celestial:
                raise FitsReadError(
                    f"{where}: WCS is not celestial (CTYPE {list(wcs.wcs.ctype)}), "
                    "cannot give a pixel scale in arcsec"
                )
            # FITS axis order: (x, y).
            sx, sy = proj_plane_pixel_scales(wcs) * 3600.0
    except FitsReadError:
        raise
    except _READ_ERRORS as err:
        raise FitsReadError(f"{where}: invalid WCS ({type(err).__name__}: {err})") from err
    return (
        _positive_finite(sy, "WCS pixel scale along y (arcsec)", where),
        _positive_finite(sx, "WCS pixel scale along x (arcsec)", where),
    )


def pixel_scales_from_header(
    file_path_or_header: str | os.PathLike | fits.Header,
    hdu: HduKey = 0,
    *,
    dataset: str | None = None,
) -> tuple[float, float]:
    """Pixel scales ``(sy, sx)`` in arcsec per pixel of one HDU (or of a header).

    In this order: the ``PIXSCAY``/``PIXSCAX`` cards (arcsec; what lenspipe and the reference
    library write), else a celestial WCS (CD matrix or CDELT/PC), else a ``PIXSCALE`` card (arcsec,
    both axes; PyAutoLens data and many instruments carry it). ``PIXSCAY``/``PIXSCAX`` and a WCS
    that both exist must agree to 1e-6 relative. ``PIXSCALE`` is read only when neither gives a
    scale: instruments often write a rounded or nominal ``PIXSCALE`` beside an exact WCS, so
    headers with a WCS keep the scale they always gave. A non-celestial or invalid WCS is ignored
    when the cards or ``PIXSCALE`` are present.

    Raises
    ------
    FitsReadError
        No pixel scale, only one of ``PIXSCAY``/``PIXSCAX``, a non-positive or non-finite scale
        (of a card that is used), a non-celestial WCS, or cards and WCS that disagree; or the file
        cannot be read.
    """
    if isinstance(file_path_or_header, fits.Header):
        header = file_path_or_header
        where = _where(None, hdu, dataset)
    else:
        header = read_fits_header(file_path_or_header, hdu, dataset=dataset)
        where = _where(file_path_or_header, hdu, dataset)

    present = [key for key in ("PIXSCAY", "PIXSCAX") if key in header]
    if len(present) == 1:
        raise FitsReadError(f"{where}: only {present[0]} is present; need both PIXSCAY and PIXSCAX")
    cards = None
    if present:
        cards = (
            _positive_finite(header["PIXSCAY"], "PIXSCAY", where),
            _positive_finite(header["PIXSCAX"], "PIXSCAX", where),
        )
    try:
        from_wcs = _wcs_pixel_scales(header, where)
    except FitsReadError:
        # A WCS without an angular scale cannot contradict the cards.
        if cards is None and "PIXSCALE" not in header:
            raise
        from_wcs = None

    if cards is None and from_wcs is None:
        if "PIXSCALE" in header:
            scale = _positive_finite(header["PIXSCALE"], "PIXSCALE", where)
            return (scale, scale)
        raise FitsReadError(
            f"{where}: no pixel scale: neither PIXSCAY/PIXSCAX cards, a WCS with CDi_j or CDELTi, "
            "nor a PIXSCALE card"
        )
    if (
        cards is not None
        and from_wcs is not None
        and not np.allclose(cards, from_wcs, rtol=_SCALE_RTOL, atol=0.0)
    ):
        raise FitsReadError(
            f"{where}: ambiguous pixel scale: PIXSCAY/PIXSCAX give {cards} arcsec "
            f"but the WCS gives {from_wcs} arcsec"
        )
    if cards is not None:
        return cards
    assert from_wcs is not None  # both None was refused above
    return from_wcs


def _pair(value: float | Sequence[float], what: str, where: str, *, positive: bool) -> list[float]:
    pair = np.asarray(value, dtype=np.float64)
    if pair.ndim == 0:
        pair = np.array([pair, pair])
    if pair.shape != (2,) or not np.all(np.isfinite(pair)) or (positive and np.any(pair <= 0)):
        kind = "positive finite" if positive else "finite"
        raise FitsWriteError(f"{where}: {what} must be two {kind} numbers (y, x), got {value!r}")
    return [float(v) for v in pair]


def _image_header(
    where: str,
    pixel_scales: float | Sequence[float] | None,
    origin: Sequence[float] | None,
    extra: Mapping[str, Any] | None,
) -> fits.Header:
    header = fits.Header()
    if pixel_scales is not None:
        sy, sx = _pair(pixel_scales, "pixel_scales", where, positive=True)
        header["PIXSCAY"] = (sy, "[arcsec] pixel scale along y")
        header["PIXSCAX"] = (sx, "[arcsec] pixel scale along x")
    if origin is not None:
        oy, ox = _pair(origin, "origin", where, positive=False)
        header["ORIGINY"] = (oy, "[arcsec] origin along y")
        header["ORIGINX"] = (ox, "[arcsec] origin along x")
    for key, value in (extra or {}).items():
        header[key] = value
    return header


def _image(array: Any, where: str) -> np.ndarray:
    try:
        image = np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise FitsWriteError(f"{where}: array cannot be converted to float64 ({err})") from err
    if image.ndim != 2:
        raise FitsWriteError(f"{where}: array must be 2-D, got shape {image.shape}")
    return image


def _write(
    file_path: str | os.PathLike,
    primary: np.ndarray | None,
    extensions: list[tuple[str, np.ndarray]],
    pixel_scales: float | Sequence[float] | None,
    origin: Sequence[float] | None,
    header: Mapping[str, Any] | None,
    overwrite: bool,
) -> None:
    path = Path(file_path)
    where = f"FITS file '{os.fspath(file_path)}'"
    if path.exists() and not overwrite:
        raise FitsWriteError(f"{where}: file exists; pass overwrite=True to replace it")
    names = [name for name, _ in extensions]
    valid = all(isinstance(n, str) and n.strip() for n in names)
    if not valid or len({n.upper() for n in names}) != len(names):
        raise FitsWriteError(f"{where}: EXTNAMEs must be non-empty unique strings, got {names}")
    tmp: Path | None = None
    try:
        # astropy only warns when e.g. a keyword longer than 8 characters becomes a HIERARCH card.
        with _warnings_as_errors():
            cards = _image_header(where, pixel_scales, origin, header)
            if primary is not None:
                hdul = fits.HDUList([fits.PrimaryHDU(_image(primary, where), header=cards)])
            else:
                hdul = fits.HDUList([fits.PrimaryHDU()])
            for name, array in extensions:
                hdul.append(
                    fits.ImageHDU(_image(array, f"{where}, HDU {name!r}"), cards.copy(), name=name)
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            # Not mkstemp: its 0600 mode would survive the rename.
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            hdul.writeto(tmp, checksum=True)
        # Readers (other workers) never see a half-written file.
        os.replace(tmp, path)
    except FitsWriteError:
        raise
    except _WRITE_ERRORS as err:
        raise FitsWriteError(f"{where}: cannot write ({type(err).__name__}: {err})") from err
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def write_fits_array(
    file_path: str | os.PathLike,
    array: np.ndarray,
    *,
    pixel_scales: float | tuple[float, float] | None = None,
    origin: tuple[float, float] | None = None,
    header: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    extname: str | None = None,
) -> None:
    """Write a 2-D array as float64, in the primary HDU or in one named image extension.

    Parameters
    ----------
    file_path
        Target file; parent directories are created.
    array
        2-D image, written as float64; row 0 becomes the first FITS row.
    pixel_scales
        ``(sy, sx)`` (or one value for both) in arcsec, stored as ``PIXSCAY``/``PIXSCAX``.
    origin
        ``(y, x)`` in arcsec, stored as ``ORIGINY``/``ORIGINX``.
    header
        Extra cards: ``{key: value}`` or ``{key: (value, comment)}``.
    overwrite
        Replace an existing file (otherwise :class:`FitsWriteError`).
    extname
        If given, write an empty primary HDU and the image in an extension with this EXTNAME.
    """
    primary, extensions = (array, []) if extname is None else (None, [(extname, array)])
    _write(file_path, primary, extensions, pixel_scales, origin, header, overwrite)


def write_fits_hdus(
    file_path: str | os.PathLike,
    hdus: Mapping[str, np.ndarray] | Sequence[tuple[str, np.ndarray]],
    *,
    pixel_scales: float | tuple[float, float] | None = None,
    origin: tuple[float, float] | None = None,
    overwrite: bool = False,
) -> None:
    """Write a multi-extension file: empty primary HDU, then one float64 image HDU per name.

    Each extension gets ``EXTNAME`` = its name (unique, case-insensitively) and the
    ``PIXSCAY``/``PIXSCAX`` (arcsec) and ``ORIGINY``/``ORIGINX`` (arcsec) cards when given.
    Other parameters as :func:`write_fits_array`.
    """
    extensions = list(hdus.items()) if isinstance(hdus, Mapping) else list(hdus)
    if not extensions:
        raise FitsWriteError(f"FITS file '{os.fspath(file_path)}': no HDU to write")
    _write(file_path, None, extensions, pixel_scales, origin, None, overwrite)
