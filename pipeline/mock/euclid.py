"""Mock Euclid MER-style cutouts: one multi-extension FITS file per lens, eight bands with named
HDUs, as a survey delivers them (for the example config ``configs/euclid_mef.yaml``, demos and
tests).

Each band of a cutout has four HDUs, ``<BAND>_BGSUB`` (float32 image, ``BUNIT`` set),
``<BAND>_RMS`` (float32 noise map), ``<BAND>_PSF`` (float32 kernel) and ``<BAND>_FLAG`` (int32 flag
map), with the band's ``PIXSCAY``/``PIXSCAX`` cards. All bands cover the same sky area, at their own
pixel scales, so that one mask radius in arcsec fits them all. What real cutouts have and the
pipeline must cope with is drawn in on purpose:

- a **NaN edge**: the cutout touches its tile's border, so the first columns (``nan_edge_arcsec``
  of sky, reaching into a 2.5″ circle) are NaN in data and noise;
- a **saturated star**: a blob of pixels with zero noise, flagged with bit
  :data:`SATURATED_BIT`;
- a **dead column fragment**: a few unflagged pixels with zero noise (only ``bad_pixels: mask``
  saves the dataset).

FITS writing is done here with astropy, not :mod:`pipeline.io.fits`: the point is to write what a
survey writes (float32 and int32 HDUs, its own cards), not lenspipe's own files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.mock.lenses import simulate_lens

__all__ = [
    "DEAD_PIXEL_OFFSET",
    "EUCLID_BANDS",
    "SATURATED_BIT",
    "STAR_OFFSET",
    "MockBand",
    "simulate_euclid_cutouts",
]

SATURATED_BIT = 2  # flag bit of the saturated star's pixels
COSMETIC_BIT = 5  # flag bit set on a few harmless pixels outside the star (to be ignored)
STAR_OFFSET = (1.2, 0.9)  # arcsec (y, x) of the saturated star from the centre
DEAD_PIXEL_OFFSET = (-0.8, 0.6)  # arcsec (y, x) where the dead column fragment starts


@dataclass(frozen=True)
class MockBand:
    """One band of the mock cutouts: pixel scale (arcsec), odd PSF size (pixels), PSF sigma
    (arcsec) and the image unit (``BUNIT``)."""

    pixel_scale: float
    psf_size: int
    psf_sigma: float
    bunit: str


EUCLID_BANDS: dict[str, MockBand] = {
    "VIS": MockBand(0.1, 21, 0.08, "uJy"),
    "NIR_Y": MockBand(0.3, 11, 0.2, "uJy"),
    "NIR_J": MockBand(0.3, 11, 0.2, "uJy"),
    "NIR_H": MockBand(0.3, 11, 0.22, "uJy"),
    "DES_G": MockBand(0.263, 25, 0.45, "nanomaggy"),
    "DES_R": MockBand(0.263, 25, 0.42, "nanomaggy"),
    "DES_I": MockBand(0.263, 25, 0.40, "nanomaggy"),
    "DES_Z": MockBand(0.263, 25, 0.40, "nanomaggy"),
}


def _pixel_of(offset: tuple[float, float], shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """The (row, column) whose centre is nearest ``offset`` arcsec (y up, x right) from the
    frame's centre."""
    row = int(round((shape[0] - 1) / 2 - offset[0] / scale))
    col = int(round((shape[1] - 1) / 2 + offset[1] / scale))
    return row, col


def _band_hdus(
    band: str, spec: MockBand, side_arcsec: float, nan_edge_arcsec: float, seed: int
) -> list:
    from astropy.io import fits

    n = int(round(side_arcsec / spec.pixel_scale))
    n += 1 - n % 2  # odd: the centre is a pixel centre
    shape = (n, n)
    dataset = simulate_lens(
        shape, spec.pixel_scale, psf_shape=(spec.psf_size, spec.psf_size),
        psf_sigma=spec.psf_sigma, seed=seed, over_sample_size=2,
    )  # fmt: skip
    assert dataset.psf is not None
    data = np.array(dataset.data.native, dtype=np.float32)
    noise = np.array(dataset.noise_map.native, dtype=np.float32)
    flags = np.zeros(shape, dtype=np.int32)
    # NaN edge: the cutout overhangs its tile
    edge = int(np.ceil(nan_edge_arcsec / spec.pixel_scale))
    data[:, :edge] = np.nan
    noise[:, :edge] = np.nan
    # saturated star: 3x3 pixels of zero noise (and huge data), flagged
    row, col = _pixel_of(STAR_OFFSET, shape, spec.pixel_scale)
    data[row - 1 : row + 2, col - 1 : col + 2] = 1e6
    noise[row - 1 : row + 2, col - 1 : col + 2] = 0.0
    flags[row - 1 : row + 2, col - 1 : col + 2] |= 1 << SATURATED_BIT
    # a harmless cosmetic flag next to it (a mask on bit 2 only must leave it unmasked)
    flags[row + 2, col] |= 1 << COSMETIC_BIT
    # dead column fragment: two unflagged pixels with zero noise
    row, col = _pixel_of(DEAD_PIXEL_OFFSET, shape, spec.pixel_scale)
    noise[row : row + 2, col] = 0.0
    cards = {
        "PIXSCAY": (spec.pixel_scale, "[arcsec] pixel scale along y"),
        "PIXSCAX": (spec.pixel_scale, "[arcsec] pixel scale along x"),
    }
    hdus = []
    for suffix, array, unit in (
        ("BGSUB", data, spec.bunit),
        ("RMS", noise, spec.bunit),
        ("PSF", np.asarray(dataset.psf.kernel.native, dtype=np.float32), None),
        ("FLAG", flags, None),
    ):
        header = fits.Header()
        for key, value in cards.items():
            header[key] = value
        if unit is not None:
            header["BUNIT"] = unit
        hdus.append(fits.ImageHDU(array, header, name=f"{band}_{suffix}"))
    return hdus


def simulate_euclid_cutouts(
    out: str | os.PathLike,
    n: int,
    *,
    seed: int = 0,
    bands: dict[str, MockBand] | None = None,
    side_arcsec: float = 8.0,
    nan_edge_arcsec: float = 2.0,
) -> list[Path]:
    """Write ``n`` mock cutouts ``out/EUC_MER_<id>.fits`` (see the module's docstring); returns
    their paths. Cutout ``i`` is deterministic in ``seed + i``; each band draws its own lens
    noise.

    Parameters
    ----------
    bands
        Band name -> :class:`MockBand`; default :data:`EUCLID_BANDS` (VIS, NIR Y/J/H, DES g/r/i/z).
    side_arcsec
        Sky side of every band's square frame, arcsec.
    nan_edge_arcsec
        Width of the NaN strip along the left edge, arcsec (0 for none).
    """
    from astropy.io import fits

    if n < 1:
        raise ValueError(f"simulate_euclid_cutouts needs at least one cutout, got n={n}")
    bands = EUCLID_BANDS if bands is None else bands
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        primary = fits.PrimaryHDU()
        primary.header["TELESCOP"] = "EUCLID (mock)"
        hdus: list = [primary]
        for j, (band, spec) in enumerate(bands.items()):
            hdus += _band_hdus(band, spec, side_arcsec, nan_edge_arcsec, seed + 1000 * i + j)
        path = out / f"EUC_MER_{102018211 + seed + i}.fits"
        fits.HDUList(hdus).writeto(path, overwrite=True, checksum=True)
        paths.append(path)
    return paths
