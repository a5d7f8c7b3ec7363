"""FITS headers without pixel data (:mod:`pipeline.io.headers`) and ``lenspipe hdus FILE``, on
real files written here: a multi-extension file with named HDUs of several kinds and dtypes, gzip
and tile-compressed files, missing and non-FITS files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from pipeline.cli import main
from pipeline.exc import FitsReadError
from pipeline.io.headers import read_file_headers


def cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def mef(tmp_path) -> Path:
    """A Euclid-like cutout: empty primary, a float32 image in electrons/s with PIXSCAY/PIXSCAX,
    an unsigned 16-bit flag map (BZERO 32768), a scaled 16-bit RMS, a WCS-only PSF, a cube and a
    table."""
    science = fits.ImageHDU(np.ones((30, 40), dtype=np.float32), name="VIS_BGSUB")
    science.header.update(PIXSCAY=0.1, PIXSCAX=0.1, BUNIT="electron/s")
    flags = fits.ImageHDU(np.zeros((30, 40), dtype=np.uint16), name="VIS_FLAG")
    rms = fits.ImageHDU(np.linspace(1, 2, 1200).reshape(30, 40), name="VIS_RMS")
    rms.scale("int16", bscale=0.001, bzero=1.5)
    psf = fits.ImageHDU(np.ones((21, 21)), name="VIS_PSF")
    psf.header.update(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CDELT1=-0.1 / 3600, CDELT2=0.2 / 3600)
    cube = fits.ImageHDU(np.zeros((3, 5, 7), dtype=np.int32), name="CUBE")
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name=c, format="E", array=np.arange(4.0)) for c in ("ra", "dec")],
        name="CATALOGUE",
    )
    path = tmp_path / "cutout.fits"
    fits.HDUList([fits.PrimaryHDU(), science, flags, rms, psf, cube, table]).writeto(path)
    return path


def test_every_hdu_is_summarised_from_its_header(mef):
    listing = read_file_headers(mef)
    rows = [hdu.to_dict() for hdu in listing.hdus]
    assert [(r["index"], r["name"], r["kind"], r["shape"], r["dtype"]) for r in rows] == [
        (0, "PRIMARY", "empty", [], None),
        (1, "VIS_BGSUB", "image", [30, 40], "float32"),
        (2, "VIS_FLAG", "image", [30, 40], "uint16"),
        (3, "VIS_RMS", "image", [30, 40], "float32 (scaled int16)"),
        (4, "VIS_PSF", "image", [21, 21], "float64"),
        (5, "CUBE", "image", [3, 5, 7], "int32"),
        (6, "CATALOGUE", "table", [4], None),
    ]
    assert [r["bunit"] for r in rows] == [None, "electron/s", None, None, None, None, None]
    assert rows[1]["pixel_scales"] == [0.1, 0.1]
    assert rows[4]["pixel_scales"] == pytest.approx([0.2, 0.1], rel=1e-9)  # (sy, sx)
    assert [r["pixel_scales"] for r in rows if r["index"] not in (1, 4)] == [None] * 5
    assert rows[6]["columns"] == 2
    assert listing.listing().startswith("0 'PRIMARY', 1 'VIS_BGSUB', 2 'VIS_FLAG'")


def test_keys_resolve_as_a_read_does_and_only_asked_pixels_are_read(mef):
    listing = read_file_headers(
        mef, ["vis_psf", 0, "PRIMARY", 4, "SCI", 99, "CUBE"], arrays=["vis_psf", "CUBE"]
    )
    assert dict(listing.found) == {"vis_psf": 4, 0: 0, "PRIMARY": 0, 4: 4, "CUBE": 5}
    assert list(listing.arrays) == ["vis_psf"]  # a cube's pixels are never read
    np.testing.assert_array_equal(listing.arrays["vis_psf"], np.ones((21, 21)))
    assert listing.arrays["vis_psf"].dtype == np.float64


def test_hdus_lists_a_mef(mef, capsys):
    code, out, _ = cli(capsys, "hdus", mef)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"{mef}: 7 HDUs"
    assert lines[1].split() == "index EXTNAME kind shape dtype BUNIT pixel scale (arcsec)".split()
    assert lines[2].split() == ["0", "PRIMARY", "empty", "-", "-", "-", "-"]
    assert lines[3].split() == [
        "1",
        "VIS_BGSUB",
        "image",
        "(30,",
        "40)",
        "float32",
        "electron/s",
    ] + ["0.1"]
    assert lines[5].split()[5:] == ["float32", "(scaled", "int16)", "-", "-"]
    assert lines[6].split()[-2:] == ["0.2,", "0.1"]
    assert (
        lines[8].split()
        == ["6", "CATALOGUE", "table", "4", "rows", "x", "2", "columns"] + ["-"] * 3
    )

    code, out, _ = cli(capsys, "hdus", mef, "--json")
    assert code == 0
    document = json.loads(out)
    assert document["file"] == str(mef)
    assert [h["name"] for h in document["hdus"]][1:3] == ["VIS_BGSUB", "VIS_FLAG"]
    assert document["hdus"][1]["pixel_scales"] == [0.1, 0.1]


def test_hdus_reads_gzip_and_tile_compressed_files(tmp_path, capsys):
    image = np.arange(12.0).reshape(3, 4)
    header = fits.Header({"PIXSCALE": 0.05, "BUNIT": "MJy/sr"})
    compressed = fits.CompImageHDU(image, header, name="SCI", quantize_level=0.0)
    fz = tmp_path / "image.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), compressed]).writeto(fz)
    code, out, _ = cli(capsys, "hdus", fz)
    assert code == 0
    assert out.splitlines()[3].split() == [
        "1", "SCI", "compressed", "image", "(3,", "4)", "float64", "MJy/sr", "0.05",
    ]  # fmt: skip
    # fpack's layout: HDU 0 names the compressed image, as a read takes it
    assert read_file_headers(fz, [0]).found == {0: 1}

    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(image.astype(np.int16), header).writeto(plain)
    gz = tmp_path / "plain.fits.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    code, out, _ = cli(capsys, "hdus", gz, "--json")
    assert code == 0
    (hdu,) = json.loads(out)["hdus"]
    assert (hdu["kind"], hdu["shape"], hdu["dtype"]) == ("image", [3, 4], "int16")
    assert (hdu["bunit"], hdu["pixel_scales"]) == ("MJy/sr", [0.05, 0.05])


def test_hdus_of_a_missing_or_non_fits_file_exits_2(tmp_path, capsys):
    code, out, err = cli(capsys, "hdus", tmp_path / "nope.fits")
    assert code == 2 and out == ""
    assert err.strip() == f"error: FITS file '{tmp_path / 'nope.fits'}': file not found"
    text = tmp_path / "notes.fits"
    text.write_text("not FITS at all\n" * 200)
    code, _, err = cli(capsys, "hdus", text)
    assert code == 2 and "not a readable FITS file" in err and "Traceback" not in err
    empty = tmp_path / "empty.fits"
    empty.touch()
    code, _, err = cli(capsys, "hdus", empty)
    assert code == 2 and "empty.fits" in err
    with pytest.raises(FitsReadError, match="file not found"):
        read_file_headers(tmp_path / "nope.fits")


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_fifo_or_device_is_refused_without_being_opened(tmp_path, capsys, kind):
    """Opening a FIFO (no writer) or reading /dev/zero would never end: both are refused by
    stat, by hdus, by the header reader and by the pixel reader."""
    import os

    from pipeline.io.fits import read_fits_array

    if kind == "fifo":
        path = tmp_path / "cutout.fits"
        os.mkfifo(path)
        what = "a FIFO (named pipe)"
    else:
        path, what = Path("/dev/zero"), "a character device"
    capsys.readouterr()
    assert main(["hdus", str(path)]) == 2
    assert f"error: FITS file '{path}' is {what}, not a regular file" in capsys.readouterr().err
    with pytest.raises(FitsReadError, match="not a regular file"):
        read_file_headers(path)
    with pytest.raises(FitsReadError) as err:
        read_fits_array(path, dataset="lens_1")
    assert f"the path is {what}, not a regular file; name a FITS file" in str(err.value)
    assert "lens_1" in str(err.value)
