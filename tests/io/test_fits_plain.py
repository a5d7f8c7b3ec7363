"""The plain-file reader (pipeline.io.fits_plain) against astropy's path of pipeline.io.fits.

The contract: where ``read_plain_hdu`` answers, astropy (``_read_hdu_astropy``, checksums
verified, warnings as errors) reads the same file without error and gives the same float64
values bit for bit and the same header; where it does not (None), the caller reads with astropy.
Checked on files astropy and lenspipe write and on many damaged variants of them.
"""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from pipeline.exc import FitsReadError
from pipeline.io import fits as lenspipe_fits
from pipeline.io.fits import read_fits_array, read_fits_header, read_fits_image, write_fits_array
from pipeline.io.fits_plain import _encode, read_plain_hdu

KEYS: list = [0, 1, 2, 3, np.int64(1), "SCI", " sci ", "wht", "PRIMARY", "NOPE", "", -1, True]
KEYS += [("SCI", 1), 1.0]


def _outcome(path: Path, key, *, with_data: bool, plain: bool) -> tuple:
    """What one read gives: ('ok', header text, data dtype, shape, bytes) or ('error', text)."""
    read = lenspipe_fits._read_hdu if plain else lenspipe_fits._read_hdu_astropy
    try:
        header, data = read(path, key, "lens", with_data=with_data)
    except FitsReadError as err:
        return ("error", str(err))
    assert header is not None
    text = _text(header)
    if data is None:
        return ("ok", text, None)
    return ("ok", text, data.dtype.str, data.shape, data.tobytes())


def _text(header: fits.Header) -> str:
    """The header as astropy writes it (or the error it gives for a card it cannot fix)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return header.tostring()
        except fits.VerifyError as err:
            return f"VerifyError: {err}"


def _agree(path: Path, keys=KEYS) -> int:
    """Assert both paths agree for every key; the number of keys the plain reader answered."""
    answered = 0
    for key in keys:
        plain = read_plain_hdu(path, key)
        for with_data in (True, False):
            astropy_said = _outcome(path, key, with_data=with_data, plain=False)
            if plain is not None:
                assert astropy_said[0] == "ok", (path.name, key, astropy_said)
            assert _outcome(path, key, with_data=with_data, plain=True) == astropy_said, key
        if plain is not None:
            answered += 1
            expected = lenspipe_fits._read_hdu_astropy(path, key, None, with_data=True)[1]
            assert expected is not None
            np.testing.assert_array_equal(plain.data, expected, strict=True)
            assert plain.data.flags.c_contiguous and plain.data.dtype == np.float64
    return answered


def _cards() -> list[tuple[str, object, str]]:
    return [
        ("OBJECT", "lens 'A'", "a string with quotes"),
        ("EMPTY", "", ""),
        ("FLAG", True, "logical"),
        ("NO", False, ""),
        ("COUNT", -42, "integer"),
        ("PIXSCAY", 0.1, "[arcsec]"),
        ("PIXSCAX", 0.1, "[arcsec]"),
        ("EXPTIME", 1234.5e-7, "real"),
        ("BUNIT", "electron/s", ""),
        ("DATE-OBS", "2026-12-02T00:00:00", "date"),
    ]


def _corpus(folder: Path) -> dict[str, Path]:
    """Files of every kind the reader meets; name -> path."""
    rng = np.random.default_rng(7)
    image = rng.normal(size=(9, 13))
    image[2, 3] = np.nan
    files: dict[str, Path] = {}

    def put(name: str, hdus: list, **kwargs) -> None:
        files[name] = folder / f"{name}.fits"
        fits.HDUList(hdus).writeto(files[name], **kwargs)

    primary = fits.PrimaryHDU(image)
    for key, value, comment in _cards():
        primary.header[key] = (value, comment)
    primary.header.add_comment("a comment card")
    primary.header.add_history("a history card")
    primary.header.append(fits.Card())  # a blank card
    put("float64", [primary.copy()])
    put("float64_checksum", [primary.copy()], checksum=True)
    for dtype in (">f4", ">i2", ">i4", ">i8", "u1"):
        put(
            f"dtype_{dtype[-2:]}",
            [fits.PrimaryHDU(np.nan_to_num(image * 50).astype(dtype))],
            checksum=True,
        )
    sci = fits.ImageHDU(image.astype(">f4"), name="SCI")
    sci.header["PIXSCALE"] = 0.05
    wht = fits.ImageHDU(np.abs(image) + 1, name="WHT")
    put("mef", [fits.PrimaryHDU(), sci, wht])
    put("mef_checksum", [fits.PrimaryHDU(), sci.copy(), wht.copy()], checksum=True)
    put("primary_and_extension", [fits.PrimaryHDU(image), fits.ImageHDU(image[:4], name="SCI")])
    put("duplicate_names", [fits.PrimaryHDU(), sci.copy(), fits.ImageHDU(image, name="sci")])
    put("scaled", [fits.PrimaryHDU(np.nan_to_num(image * 50).astype(">i2"))])
    fits.setval(files["scaled"], "BSCALE", value=0.5)
    put("table", [fits.PrimaryHDU(image), fits.BinTableHDU.from_columns([fits.Column("a", "D")])])
    put("cube", [fits.PrimaryHDU(np.zeros((2, 3, 4)))], checksum=True)
    put("empty_primary", [fits.PrimaryHDU()], checksum=True)
    files["lenspipe"] = folder / "lenspipe.fits"
    write_fits_array(files["lenspipe"], image, pixel_scales=(0.1, 0.12), header={"BUNIT": "e-/s"})
    files["gzip"] = folder / "gzip.fits.gz"
    files["gzip"].write_bytes(gzip.compress(files["float64_checksum"].read_bytes()))
    return files


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return _corpus(tmp_path_factory.mktemp("plain"))


def test_plain_files_take_the_fast_path_and_agree(corpus) -> None:
    expected_plain = {
        "float64": 2,  # 0, 'PRIMARY'
        "float64_checksum": 2,
        "dtype_f4": 2,
        "dtype_i2": 2,
        "dtype_i4": 2,
        "dtype_i8": 2,
        "dtype_u1": 2,
        "mef": 6,  # 1, 2, int64(1), 'SCI', ' sci ', 'wht'
        "mef_checksum": 6,
        "primary_and_extension": 6,  # 0, 1, int64(1), 'SCI', ' sci ', 'PRIMARY'
        "duplicate_names": 5,  # 1, 2, int64(1), 'SCI' and ' sci ' (the first of the two)
        "lenspipe": 2,
    }
    for name, path in corpus.items():
        assert _agree(path) == expected_plain.get(name, 0), name


def test_what_is_not_plain_is_left_to_astropy(corpus) -> None:
    for name in ("scaled", "table", "cube", "empty_primary", "gzip"):
        assert read_plain_hdu(corpus[name], 0) is None, name
    # the first 'sci' of two is HDU 1, as astropy resolves it
    plain = read_plain_hdu(corpus["duplicate_names"], "sci")
    assert plain is not None and plain.data.shape == (9, 13)
    np.testing.assert_array_equal(plain.data, read_fits_array(corpus["duplicate_names"], 1))


def test_public_readers_give_astropys_values(corpus) -> None:
    path = corpus["mef_checksum"]
    data, header = read_fits_image(path, "SCI")
    with fits.open(path) as hdul:
        np.testing.assert_array_equal(data, hdul["SCI"].data.astype(np.float64))
        assert header.tostring() == hdul["SCI"].header.tostring()
    assert read_fits_header(path, "WHT")["EXTNAME"] == "WHT"
    assert read_fits_header(corpus["lenspipe"])["PIXSCAX"] == 0.12


def _replace_card(path: Path, target: Path, keyword: str, image: str) -> None:
    raw = bytearray(path.read_bytes())
    start = next(
        i for i in range(0, len(raw), 80) if raw[i : i + 8].decode("latin-1").rstrip() == keyword
    )
    raw[start : start + 80] = image.ljust(80).encode()
    target.write_bytes(bytes(raw))


ODD_CARDS = [
    ("OBJECT", "object  = 'lowercase keyword'", False),
    ("OBJECT", "HIERARCH ESO OBS NAME = 'x'", False),
    ("OBJECT", "OBJECT  = (1.0, 2.0) / complex", False),
    ("OBJECT", "OBJECT  = 1.0e5 / lower-case exponent", False),
    ("OBJECT", "OBJECT  ='no space after the equals sign'", False),
    ("OBJECT", "OBJECT  = 'x'/no space before the comment", True),
    ("OBJECT", "OBJECT    'no value indicator'", False),
    ("OBJECT", "OBJECT  = 'unterminated", False),
    ("OBJECT", "OBJECT  = 'odd '' quote'", True),
    ("OBJECT", "CONTINUE  'more'", False),
    ("OBJECT", "        = 'blank keyword with a value'", False),
    ("OBJECT", "BITPIX  = 8", False),
    ("OBJECT", "NAXIS3  = 1", False),
    ("OBJECT", "BZERO   = 0", False),
    ("FLAG", "FLAG    = 'T'", True),
    ("NAXIS1", "NAXIS1  = 13.0", False),
    ("NAXIS1", "NAXIS1  =                   +13", True),
    ("NAXIS1", "NAXIS1  = 4611686018427387904 / 2**62: the data size overflows int64", False),
    ("NAXIS1", "NAXIS1  = -13", False),
    ("BITPIX", "BITPIX  = -16", False),
    ("SIMPLE", "SIMPLE  = F", False),
    ("CHECKSUM", "CHECKSUM= 'AAAAAAAAAAAAAAAA' / wrong", False),
    ("DATASUM", "DATASUM = '12345'", False),
    ("DATASUM", "DATASUM = 'x'", False),
]


@pytest.mark.parametrize(("keyword", "image", "plain"), ODD_CARDS)
def test_odd_cards(corpus, tmp_path, keyword, image, plain) -> None:
    """A card replaced: the fast path answers only where the card is still strictly standard and
    the file unscaled (``plain``), never where the change breaks the file's checksum, and agrees
    with astropy wherever it answers."""
    cases = [("float64_checksum", False)]
    if keyword not in ("CHECKSUM", "DATASUM"):  # cards of the checksummed file only
        cases.append(("float64", plain))
    for source, expected in cases:
        path = tmp_path / f"{source}.fits"
        _replace_card(corpus[source], path, keyword, image)
        assert (read_plain_hdu(path, 0) is not None) is expected, source
        assert _agree(path, [0, "PRIMARY"]) == (2 if expected else 0), source


def _relaid_checksum(path: Path, target: Path, layout: str) -> None:
    """``path`` with its CHECKSUM card's value kept and the card laid out by ``layout``."""
    with fits.open(path) as hdul:
        value = hdul[0].header["CHECKSUM"]
    _replace_card(path, target, "CHECKSUM", layout.format(value=value))


@pytest.mark.parametrize(
    "layout",
    [
        "CHECKSUM= '{value}'   / HDU checksum updated 2026-12-02T00:00:00",
        "CHECKSUM= '{value}'    / two spaces before the slash",
        "CHECKSUM= '{value}'   /  two spaces after the slash",
        "CHECKSUM= '{value}'   /",
        "CHECKSUM= '{value}'",
        "CHECKSUM=   '{value}' / value further right",
        "CHECKSUM= '{value}' / closer",
    ],
)
def test_checksum_card_layouts(corpus, tmp_path, layout) -> None:
    """astropy re-formats the CHECKSUM card it verifies: the fast path must verify the same sum
    or leave the file to astropy, never accept what astropy rejects."""
    path = tmp_path / "relaid.fits"
    _relaid_checksum(corpus["float64_checksum"], path, layout)
    _agree(path, [0])


def test_astropys_own_checksum_layout_is_plain(corpus) -> None:
    assert read_plain_hdu(corpus["float64_checksum"], 0) is not None
    assert read_plain_hdu(corpus["mef_checksum"], "WHT") is not None


@pytest.mark.parametrize("change", ["cut_block", "cut_byte", "extra_block", "junk", "zeros"])
def test_files_cut_short_or_longer(corpus, tmp_path, change) -> None:
    for source in ("float64", "float64_checksum", "mef_checksum"):
        raw = corpus[source].read_bytes()
        changed = {
            "cut_block": raw[:-2880],
            "cut_byte": raw[:-1],
            "extra_block": raw + raw[:2880],
            "junk": raw + b"junk",
            "zeros": raw + bytes(2880),
        }[change]
        path = tmp_path / f"{source}.fits"
        path.write_bytes(changed)
        assert read_plain_hdu(path, 0) is None
        _agree(path, [0, 1])


def test_random_byte_changes_agree_with_astropy(corpus, tmp_path) -> None:
    """One byte of a header or data area changed at random, 400 times: with a character a card
    can hold, so that most changed files still look like FITS."""
    rng = np.random.default_rng(11)
    alphabet = np.frombuffer(b" '=/0123456789.+-EDTFAX", dtype=np.uint8)
    sources = ["float64", "float64_checksum", "mef", "mef_checksum", "dtype_i2", "lenspipe"]
    answered = 0
    for trial in range(400):
        source = corpus[sources[trial % len(sources)]]
        raw = bytearray(source.read_bytes())
        position = int(rng.integers(0, 2880 if trial % 4 else len(raw)))
        raw[position] = int(rng.choice(alphabet))
        path = tmp_path / f"changed_{trial}.fits"
        path.write_bytes(bytes(raw))
        answered += _agree(path, [0, 1, "SCI"])
    assert answered > 50  # 80 at this seed: most changes to files without checksums stay plain


def test_checksum_encoding_is_astropys() -> None:
    rng = np.random.default_rng(5)
    hdu = fits.PrimaryHDU()
    for value in [0, 1, 0xFFFFFFFF, 0x3A3A3A3A, *rng.integers(0, 2**32, 3000).tolist()]:
        assert _encode(value) == hdu._char_encode(np.uint32(value)), value


def test_unreadable_paths_are_left_to_astropy(tmp_path) -> None:
    assert read_plain_hdu(tmp_path / "missing.fits", 0) is None
    (tmp_path / "empty.fits").write_bytes(b"")
    assert read_plain_hdu(tmp_path / "empty.fits", 0) is None
    (tmp_path / "text.fits").write_bytes(b"SIMPLE  = " + b"x" * 2870)
    assert read_plain_hdu(tmp_path / "text.fits", 0) is None
    with pytest.raises(FitsReadError, match="text.fits"):
        read_fits_array(tmp_path / "text.fits")
