"""Tests of pipeline.io.fits on real FITS files written in tmp_path."""

from __future__ import annotations

import gzip
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from astropy.io import fits

from pipeline.exc import FitsReadError, FitsWriteError, PipelineError
from pipeline.io.fits import (
    pixel_scales_from_header,
    read_fits_array,
    read_fits_header,
    read_fits_image,
    write_fits_array,
    write_fits_hdus,
)

NATIVE = "<" if sys.byteorder == "little" else ">"


def _native_float64(array: np.ndarray) -> None:
    assert array.dtype == np.float64
    assert array.dtype.byteorder in ("=", NATIVE)
    assert array.flags.c_contiguous
    assert array.flags.owndata
    assert not isinstance(array, np.memmap)


def _astropy_data(path, hdu=0) -> np.ndarray:
    with fits.open(path) as hdul:
        return np.array(hdul[hdu].data)


def _euclid_like(path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    arrays = {
        "VIS_BGSUB": rng.normal(size=(30, 40)).astype(">f4"),
        "VIS_RMS": rng.uniform(0.5, 1.5, size=(30, 40)).astype(">f4"),
        "VIS_PSF": rng.uniform(size=(21, 21)).astype(">f4"),
    }
    hdus = [fits.PrimaryHDU()] + [fits.ImageHDU(a, name=n) for n, a in arrays.items()]
    fits.HDUList(hdus).writeto(path)
    return arrays


def _read_error(path, hdu=0, **kwargs) -> str:
    with pytest.raises(FitsReadError) as info:
        read_fits_array(path, hdu, **kwargs)
    assert isinstance(info.value, OSError) and isinstance(info.value, PipelineError)
    message = str(info.value)
    assert str(path) in message
    assert f"HDU {hdu!r}" in message
    return message


# ---------------------------------------------------------------- round trip


def test_round_trip_is_exact_with_cards(tmp_path):
    path = tmp_path / "sub" / "dir" / "image.fits"
    image = np.random.default_rng(0).normal(size=(7, 11))
    write_fits_array(path, image, pixel_scales=(0.1, 0.08), origin=(0.5, -0.25))

    read = read_fits_array(path)
    np.testing.assert_array_equal(read, image)
    _native_float64(read)
    header = read_fits_header(path)
    assert (header["PIXSCAY"], header["PIXSCAX"]) == (0.1, 0.08)
    assert (header["ORIGINY"], header["ORIGINX"]) == (0.5, -0.25)
    assert "CHECKSUM" in header and "DATASUM" in header
    assert pixel_scales_from_header(path) == (0.1, 0.08)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_rows_are_not_flipped(tmp_path):
    path = tmp_path / "rows.fits"
    image = np.arange(12.0).reshape(3, 4)
    write_fits_array(path, image)
    read = read_fits_array(path)
    np.testing.assert_array_equal(read, _astropy_data(path))
    assert read[0, 0] == 0.0 and read[2, 3] == 11.0


def test_write_extension_and_extra_cards(tmp_path):
    path = tmp_path / "ext.fits"
    image = np.arange(6, dtype=np.int32).reshape(2, 3)
    write_fits_array(path, image, extname="DATA", header={"TELESCOP": "Euclid", "EXPTIME": 565.0})
    with fits.open(path) as hdul:
        assert hdul[0].data is None
        assert hdul[1].name == "DATA" and hdul[1].header["BITPIX"] == -64
    np.testing.assert_array_equal(read_fits_array(path, "data"), image)
    header = read_fits_header(path, 1)
    assert header["TELESCOP"] == "Euclid" and header["EXPTIME"] == 565.0


def test_multi_extension_by_name_and_index(tmp_path):
    path = tmp_path / "cutout.fits"
    rng = np.random.default_rng(1)
    arrays = {
        "VIS_BGSUB": rng.normal(size=(30, 40)),
        "VIS_RMS": rng.uniform(size=(30, 40)),
        "VIS_PSF": rng.uniform(size=(21, 21)),
    }
    write_fits_hdus(path, arrays, pixel_scales=0.1, origin=(0.0, 0.0))
    for index, (name, array) in enumerate(arrays.items(), start=1):
        for key in (name, name.lower(), name.title(), index, (name, 1)):
            np.testing.assert_array_equal(read_fits_array(path, key), array)
        assert pixel_scales_from_header(path, name) == (0.1, 0.1)
    np.testing.assert_array_equal(read_fits_array(path, -1), arrays["VIS_PSF"])


def test_write_hdus_accepts_list_of_pairs(tmp_path):
    path = tmp_path / "pairs.fits"
    write_fits_hdus(path, [("B", np.ones((2, 2))), ("A", np.zeros((3, 3)))])
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "B", "A"]
    np.testing.assert_array_equal(read_fits_array(path, "a"), np.zeros((3, 3)))


# ------------------------------------------------------------ dtypes, scaling


@pytest.mark.parametrize("dtype", [">f4", ">f8", "<f8", ">i4"])
def test_big_endian_and_integer_data_become_native_float64(tmp_path, dtype):
    path = tmp_path / "be.fits"
    values = np.random.default_rng(2).normal(scale=1000, size=(5, 9)).astype(dtype)
    fits.PrimaryHDU(values).writeto(path)
    read = read_fits_array(path)
    _native_float64(read)
    np.testing.assert_array_equal(read, values.astype(np.float64))


def test_euclid_like_float32_cutout(tmp_path):
    path = tmp_path / "euclid.fits"
    arrays = _euclid_like(path)
    for name, array in arrays.items():
        read = read_fits_array(path, name)
        _native_float64(read)
        np.testing.assert_array_equal(read, array.astype(np.float64))


def test_int16_with_bscale_bzero_gives_physical_values(tmp_path):
    path = tmp_path / "scaled.fits"
    stored = np.arange(-6, 6, dtype=np.int16).reshape(3, 4) * 1000
    physical = stored * 2.5 + 100.0
    hdu = fits.PrimaryHDU(physical.copy())
    hdu.scale("int16", bscale=2.5, bzero=100.0)
    hdu.writeto(path)
    with fits.open(path, do_not_scale_image_data=True) as hdul:
        assert hdul[0].header["BITPIX"] == 16 and hdul[0].header["BSCALE"] == 2.5
        np.testing.assert_array_equal(hdul[0].data, stored)

    read = read_fits_array(path)
    _native_float64(read)
    np.testing.assert_array_equal(read, physical)
    np.testing.assert_array_equal(read, _astropy_data(path))


def test_uint16_stored_with_bzero(tmp_path):
    path = tmp_path / "uint16.fits"
    values = np.array([[0, 1, 40000], [65535, 32768, 7]], dtype=np.uint16)
    fits.PrimaryHDU(values).writeto(path)
    np.testing.assert_array_equal(read_fits_array(path), values.astype(np.float64))


# ------------------------------------------------------------- corrupt files


def _valid_file(path, shape=(40, 50)) -> bytes:
    write_fits_array(path, np.ones(shape))
    return path.read_bytes()


def test_missing_file(tmp_path):
    assert "file not found" in _read_error(tmp_path / "nope.fits")


def test_dataset_name_is_in_message(tmp_path):
    message = _read_error(tmp_path / "nope.fits", "VIS_RMS", dataset="lens_0042")
    assert message.startswith("dataset 'lens_0042': ")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.fits"
    path.write_bytes(b"")
    assert "file is empty" in _read_error(path)


def test_text_file(tmp_path):
    path = tmp_path / "text.fits"
    path.write_text("this is not a FITS file\n" * 200)
    assert "not a readable FITS file" in _read_error(path)


@pytest.mark.parametrize("keep", [1000, 2880, 3000, "half"])
def test_truncated_file(tmp_path, keep):
    path = tmp_path / "cut.fits"
    raw = _valid_file(path)
    keep = 2880 + (len(raw) - 2880) // 2 if keep == "half" else keep
    path.write_bytes(raw[:keep])
    assert "truncated" in _read_error(path)


def test_truncated_without_checksum_cards(tmp_path):
    path = tmp_path / "cut.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((100, 100)), name="SCI")]).writeto(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 10000])
    assert "truncated" in _read_error(path, "SCI")


def test_missing_hdu_index(tmp_path):
    path = tmp_path / "one.fits"
    _valid_file(path)
    message = _read_error(path, 3)
    assert "no such HDU" in message and "available HDUs: 0 'PRIMARY'" in message


def test_missing_extname_lists_available(tmp_path):
    path = tmp_path / "cutout.fits"
    _euclid_like(path)
    message = _read_error(path, "NIR_H")
    assert "available HDUs: 0 'PRIMARY', 1 'VIS_BGSUB', 2 'VIS_RMS', 3 'VIS_PSF'" in message
    with pytest.raises(FitsReadError, match="no such HDU"):
        read_fits_header(path, "NIR_H")


def test_3d_hdu(tmp_path):
    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.zeros((2, 3, 4))).writeto(path)
    assert "not 2-D (shape (2, 3, 4))" in _read_error(path)


def test_hdu_without_data(tmp_path):
    """An empty primary HDU beside an uncompressed image is an error that names the image: only
    a tile-compressed image stands in for HDU 0 (see the compressed-file tests)."""
    path = tmp_path / "ext.fits"
    write_fits_array(path, np.ones((3, 3)), extname="SCI")
    message = _read_error(path, 0)
    assert "no data (NAXIS=0)" in message
    assert "the images in this file are HDU 1 'SCI': name one (index or EXTNAME)" in message
    np.testing.assert_array_equal(read_fits_array(path, 1), np.ones((3, 3)))


def test_table_hdu(tmp_path):
    path = tmp_path / "table.fits"
    table = fits.BinTableHDU.from_columns([fits.Column(name="x", format="D", array=[1.0, 2.0])])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    assert "BinTableHDU, not an image" in _read_error(path, 1)


def test_checksum_mismatch(tmp_path):
    path = tmp_path / "flipped.fits"
    write_fits_array(path, np.arange(400.0).reshape(20, 20))
    with fits.open(path) as hdul:
        data_start = hdul.fileinfo(0)["datLoc"]
    raw = bytearray(path.read_bytes())
    raw[data_start + 801] ^= 0x40
    path.write_bytes(bytes(raw))
    # astropy itself reads the damaged data without complaint.
    assert not np.array_equal(_astropy_data(path), np.arange(400.0).reshape(20, 20))

    assert "checksum mismatch" in _read_error(path)
    with pytest.raises(FitsReadError, match="checksum mismatch"):
        read_fits_header(path)


def test_error_chains_the_original(tmp_path):
    path = tmp_path / "empty.fits"
    path.write_bytes(b"")
    with pytest.raises(FitsReadError) as info:
        read_fits_array(path)
    assert isinstance(info.value.__cause__, OSError)


# --------------------------------------------------------------- pixel scales


def _tan_header(**cards) -> fits.Header:
    header = fits.Header()
    header.update(
        CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=150.0, CRVAL2=2.0, CRPIX1=20.5, CRPIX2=15.5
    )
    header.update(cards)
    return header


def test_pixel_scales_from_cards(tmp_path):
    path = tmp_path / "cards.fits"
    write_fits_array(path, np.ones((4, 4)), pixel_scales=(0.1, 0.08))
    assert pixel_scales_from_header(path) == (0.1, 0.08)
    assert pixel_scales_from_header(read_fits_header(path)) == (0.1, 0.08)


def test_pixel_scales_from_cd_matrix(tmp_path):
    path = tmp_path / "wcs.fits"
    header = _tan_header(CD1_1=-0.1 / 3600, CD1_2=0.0, CD2_1=0.0, CD2_2=0.1 / 3600)
    fits.PrimaryHDU(np.zeros((30, 40)), header=header).writeto(path)
    np.testing.assert_allclose(pixel_scales_from_header(path), (0.1, 0.1), rtol=1e-12)


def test_pixel_scales_from_rotated_cd_matrix():
    scale, angle = 0.05 / 3600, np.deg2rad(30.0)
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    header = _tan_header(CD1_1=-cos, CD1_2=sin, CD2_1=sin, CD2_2=cos)
    np.testing.assert_allclose(pixel_scales_from_header(header), (0.05, 0.05), rtol=1e-12)


def test_pixel_scales_from_anisotropic_cdelt_are_y_x():
    header = _tan_header(CDELT1=-0.08 / 3600, CDELT2=0.1 / 3600)
    np.testing.assert_allclose(pixel_scales_from_header(header), (0.1, 0.08), rtol=1e-12)


def test_pixel_scales_cards_and_wcs_that_agree():
    header = _tan_header(CDELT1=-0.08 / 3600, CDELT2=0.1 / 3600, PIXSCAY=0.1, PIXSCAX=0.08)
    assert pixel_scales_from_header(header) == (0.1, 0.08)


def test_pixel_scales_missing(tmp_path):
    path = tmp_path / "bare.fits"
    write_fits_array(path, np.ones((4, 4)))
    with pytest.raises(FitsReadError, match="no pixel scale") as info:
        pixel_scales_from_header(path, dataset="lens_0042")
    assert str(path) in str(info.value) and "HDU 0" in str(info.value)
    assert str(info.value).startswith("dataset 'lens_0042': ")


def test_pixel_scales_only_one_card():
    header = fits.Header({"PIXSCAY": 0.1})
    with pytest.raises(FitsReadError, match="only PIXSCAY is present") as info:
        pixel_scales_from_header(header)
    assert "header, HDU 0" in str(info.value)


# astropy refuses NaN and inf card values, so a header cannot carry them.
@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (0.0, "must be positive and finite"),
        (-0.1, "must be positive and finite"),
        ("0.1as", "is not a number"),
    ],
)
def test_pixel_scales_invalid_card(bad, match):
    header = fits.Header({"PIXSCAY": 0.1, "PIXSCAX": bad})
    with pytest.raises(FitsReadError, match=f"PIXSCAX {match}"):
        pixel_scales_from_header(header)


def test_pixel_scales_disagree():
    header = _tan_header(CDELT1=-0.1 / 3600, CDELT2=0.1 / 3600, PIXSCAY=0.1, PIXSCAX=0.1001)
    with pytest.raises(FitsReadError, match="ambiguous pixel scale"):
        pixel_scales_from_header(header)


def test_pixel_scales_cards_win_over_non_celestial_wcs():
    header = fits.Header({"CTYPE1": "LINEAR", "CTYPE2": "LINEAR", "CDELT1": 1.0, "CDELT2": 1.0})
    header.update(PIXSCAY=0.1, PIXSCAX=0.08)
    assert pixel_scales_from_header(header) == (0.1, 0.08)


def test_pixel_scales_from_pixscale_of_a_real_file(tmp_path):
    """PyAutoLens data carry one PIXSCALE card (arcsec, both axes) and no WCS."""
    path = tmp_path / "autolens.fits"
    fits.PrimaryHDU(np.ones((5, 5)), header=fits.Header({"PIXSCALE": 0.05})).writeto(path)
    assert pixel_scales_from_header(path) == (0.05, 0.05)
    assert pixel_scales_from_header(read_fits_header(path)) == (0.05, 0.05)


def test_pixel_scales_cards_win_over_pixscale():
    header = fits.Header({"PIXSCAY": 0.1, "PIXSCAX": 0.08, "PIXSCALE": 0.09})
    assert pixel_scales_from_header(header) == (0.1, 0.08)


def test_pixel_scales_wcs_wins_over_a_rounded_pixscale():
    """Instruments write a nominal PIXSCALE beside an exact WCS: the WCS keeps precedence, so such
    headers give the scale they gave before PIXSCALE was read."""
    header = _tan_header(CDELT1=-0.26297 / 3600, CDELT2=0.26297 / 3600, PIXSCALE=0.263)
    np.testing.assert_allclose(pixel_scales_from_header(header), (0.26297, 0.26297), rtol=1e-12)


def test_pixel_scales_pixscale_wins_over_a_non_celestial_wcs():
    header = fits.Header({"CTYPE1": "LINEAR", "CTYPE2": "LINEAR", "CDELT1": 1.0, "CDELT2": 1.0})
    header["PIXSCALE"] = 0.2
    assert pixel_scales_from_header(header) == (0.2, 0.2)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (0.0, "must be positive and finite"),
        (-0.05, "must be positive"),
        ("0.05as", "is not a number"),
    ],
)
def test_pixel_scales_invalid_pixscale_is_an_error_when_used(tmp_path, bad, match):
    path = tmp_path / "bad.fits"
    fits.PrimaryHDU(np.ones((3, 3)), header=fits.Header({"PIXSCALE": bad})).writeto(path)
    with pytest.raises(FitsReadError, match=f"PIXSCALE {match}") as info:
        pixel_scales_from_header(path, dataset="lens_7")
    assert str(path) in str(info.value) and "lens_7" in str(info.value)
    # unused (a WCS gives the scale): not checked
    header = _tan_header(CDELT1=-0.1 / 3600, CDELT2=0.1 / 3600, PIXSCALE=bad)
    np.testing.assert_allclose(pixel_scales_from_header(header), (0.1, 0.1), rtol=1e-12)


def test_pixel_scales_missing_names_pixscale():
    with pytest.raises(FitsReadError, match="nor a PIXSCALE card"):
        pixel_scales_from_header(fits.Header({"OBJECT": "lens"}))


def test_pixel_scales_non_celestial_wcs():
    header = fits.Header({"CTYPE1": "LINEAR", "CTYPE2": "LINEAR", "CDELT1": 1.0, "CDELT2": 1.0})
    with pytest.raises(FitsReadError, match="WCS is not celestial"):
        pixel_scales_from_header(header)


# ------------------------------------------------------------------- writing


def test_refuses_to_overwrite(tmp_path):
    path = tmp_path / "image.fits"
    write_fits_array(path, np.ones((3, 3)))
    with pytest.raises(FitsWriteError, match="overwrite=True") as info:
        write_fits_array(path, np.zeros((3, 3)))
    assert str(path) in str(info.value)
    with pytest.raises(FitsWriteError, match="file exists"):
        write_fits_hdus(path, {"SCI": np.zeros((3, 3))})
    np.testing.assert_array_equal(read_fits_array(path), np.ones((3, 3)))

    write_fits_array(path, np.zeros((2, 5)), overwrite=True)
    np.testing.assert_array_equal(read_fits_array(path), np.zeros((2, 5)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"array": np.ones((2, 2, 2))}, "must be 2-D"),
        ({"pixel_scales": (0.1, -0.1)}, "pixel_scales must be two positive"),
        ({"pixel_scales": (0.1, 0.1, 0.1)}, "pixel_scales must be two positive"),
        ({"origin": (np.nan, 0.0)}, "origin must be two finite"),
        ({"header": {"LONGKEYWORD": 1.0}}, "cannot write"),
    ],
)
def test_write_errors(tmp_path, kwargs, match):
    path = tmp_path / "bad.fits"
    kwargs = {"array": np.ones((2, 2))} | kwargs
    with pytest.raises(FitsWriteError, match=match) as info:
        write_fits_array(path, **kwargs)
    assert str(path) in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "hdus", [{}, [("SCI", np.ones((2, 2))), ("sci", np.ones((2, 2)))], [("", np.ones((2, 2)))]]
)
def test_write_hdus_rejects_bad_names(tmp_path, hdus):
    with pytest.raises(FitsWriteError, match="no HDU to write|EXTNAMEs must be non-empty unique"):
        write_fits_hdus(tmp_path / "bad.fits", hdus)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------- concurrency


def test_concurrent_reads_keep_warning_filters(tmp_path):
    good, bad = tmp_path / "good.fits", tmp_path / "bad.fits"
    image = np.random.default_rng(4).normal(size=(30, 30))
    write_fits_array(good, image)
    bad.write_bytes(good.read_bytes()[:4000])

    def job(i: int) -> bool:
        if i % 4 == 0:
            with pytest.raises(FitsReadError, match="truncated"):
                read_fits_array(bad)
            return True
        return bool(np.array_equal(read_fits_array(good), image))

    # Interleaved catch_warnings would leave an "error" filter installed for the whole process;
    # pytest's own "error" filter would hide that, hence the plain "default" filter here.
    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.simplefilter("default")
        filters = list(warnings.filters)
        with ThreadPoolExecutor(max_workers=8) as pool:
            assert all(pool.map(job, range(800)))
        assert warnings.filters == filters


# ------------------------------------------------------------ compressed files


def _gzip(path, target) -> None:
    target.write_bytes(gzip.compress(path.read_bytes()))


def _fpack(path, image, header=None, *, compression="GZIP_2", checksum=True) -> None:
    """What fpack writes: an empty primary HDU, then the image as a lossless CompImageHDU."""
    hdu = fits.CompImageHDU(image, header=header, compression_type=compression, quantize_level=0.0)
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, checksum=checksum)


def test_gzip_file_reads_as_the_plain_one(tmp_path):
    plain, packed = tmp_path / "data.fits", tmp_path / "data.fits.gz"
    image = np.random.default_rng(5).normal(size=(9, 13))
    write_fits_array(plain, image, pixel_scales=(0.1, 0.08))
    _gzip(plain, packed)
    assert packed.read_bytes()[:2] == b"\x1f\x8b"  # really gzip
    read = read_fits_array(packed)
    np.testing.assert_array_equal(read, image)
    _native_float64(read)
    assert pixel_scales_from_header(packed) == (0.1, 0.08)


@pytest.mark.parametrize("keep", [0.25, 0.5, 0.9])
def test_truncated_gzip_file(tmp_path, keep):
    plain, packed = tmp_path / "data.fits", tmp_path / "data.fits.gz"
    write_fits_array(plain, np.random.default_rng(6).normal(size=(200, 200)))
    raw = gzip.compress(plain.read_bytes())
    packed.write_bytes(raw[: int(len(raw) * keep)])
    message = _read_error(packed)  # a FitsReadError naming file and HDU, never a bare EOFError
    assert "not a readable FITS file" in message


@pytest.mark.parametrize("compression", ["GZIP_2", "RICE_1"])
def test_tile_compressed_image_is_hdu_0(tmp_path, compression):
    """DES delivers fpack'ed files (``.fits.fz``): the image sits in a CompImageHDU after an
    empty primary HDU, and HDU 0 (the default of every *_hdu key) means that image."""
    path = tmp_path / "data.fits.fz"
    image = np.random.default_rng(7).normal(size=(12, 10))
    if compression == "RICE_1":  # RICE compresses integers losslessly
        image = np.round(image * 1000).astype(np.int32)
    _fpack(path, image, fits.Header({"PIXSCALE": 0.263}), compression=compression)
    with fits.open(path) as hdul:
        assert hdul[0].header["NAXIS"] == 0 and isinstance(hdul[1], fits.CompImageHDU)
    for hdu in (0, 1, "COMPRESSED_IMAGE"):
        read = read_fits_array(path, hdu)
        np.testing.assert_array_equal(read, image)
        _native_float64(read)
    assert read_fits_header(path)["PIXSCALE"] == 0.263  # the image's header, not the primary's
    assert pixel_scales_from_header(path) == (0.263, 0.263)


def test_several_compressed_images_need_an_hdu(tmp_path):
    """A DES coadd tile holds SCI, MSK and WGT: HDU 0 is ambiguous, and the error lists them."""
    path = tmp_path / "tile.fits.fz"
    images = [fits.CompImageHDU(np.ones((4, 4)), name=n) for n in ("SCI", "MSK", "WGT")]
    fits.HDUList([fits.PrimaryHDU(), *images]).writeto(path)
    message = _read_error(path, 0)
    assert "no data (NAXIS=0)" in message and "HDU 1 'SCI', 2 'MSK', 3 'WGT'" in message
    np.testing.assert_array_equal(read_fits_array(path, "wgt"), np.ones((4, 4)))


@pytest.mark.parametrize(
    ("compression", "checksum", "expected"),
    [
        ("GZIP_2", True, "checksum mismatch"),
        # without checksums the decompressor finds the damage: zlib, and cfitsio's own error
        ("GZIP_2", False, "(the tile-compressed image in HDU 1 'COMPRESSED_IMAGE')"),
        ("RICE_1", False, "(the tile-compressed image in HDU 1 'COMPRESSED_IMAGE')"),
    ],
)
def test_damaged_compressed_tile(tmp_path, compression, checksum, expected):
    path = tmp_path / "data.fits.fz"
    image = np.random.default_rng(0).normal(size=(100, 100))
    if compression == "RICE_1":
        image = np.round(image * 100).astype(np.int32)
    _fpack(path, image, compression=compression, checksum=checksum)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert expected in _read_error(path, 0)


def test_read_fits_image_is_the_array_and_the_header_from_one_open(tmp_path):
    path = tmp_path / "mef.fits"
    science = np.arange(12.0).reshape(3, 4)
    write_fits_hdus(path, {"SCI": science, "RMS": np.ones((3, 4))}, pixel_scales=0.05)
    data, header = read_fits_image(path, "SCI", dataset="lens1")
    np.testing.assert_array_equal(data, science)
    np.testing.assert_array_equal(data, read_fits_array(path, "SCI"))
    assert header == read_fits_header(path, "SCI")
    assert header["EXTNAME"] == "SCI" and header["PIXSCAX"] == header["PIXSCAY"] == 0.05
    with pytest.raises(FitsReadError, match=r"lens1.*no such HDU; available HDUs: .*'SCI'"):
        read_fits_image(path, "FLAG", dataset="lens1")
