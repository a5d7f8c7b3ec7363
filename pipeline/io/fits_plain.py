"""A fast exact reader for plain FITS images, in front of astropy's.

astropy's ``fits.open`` costs about 0.8 ms per small file, most of it parsing every header card
into objects and verifying checksums through them; a survey reads three files per lens. Most
files a survey delivers are *plain*: uncompressed, every HDU a primary or ``IMAGE`` HDU whose
header cards are all in the FITS standard's strict form, unscaled data (no ``BSCALE``,
``BZERO`` or ``BLANK``), the file ending exactly where its last HDU's padded data ends, and each
``CHECKSUM``/``DATASUM`` (where present) right. :func:`read_plain_hdu` reads such a file with
numpy in one pass and returns exactly what :mod:`pipeline.io.fits` returns through astropy: the
same float64 values bit for bit, and the HDU's header bytes, which ``fits.Header.fromstring``
turns into the same header.

It answers ``None`` for anything else (gzip, tile compression, tables, scaled integers, a card
it does not recognise as strictly standard, a checksum it cannot confirm, a missing HDU, an HDU
without data, data not 2-D, trailing bytes, an unreadable file): the caller then reads the file
with astropy, which gives the value or the error it always gave. Being stricter than astropy is
safe; being looser is not, and ``tests/io/test_fits_plain.py`` checks the two agree on files
astropy writes and on damaged ones.

Checksums are verified as astropy verifies them (``checksum=True`` reads every HDU): ``DATASUM``
is the ones' complement sum of an HDU's padded data, as 32-bit big-endian words; ``CHECKSUM`` is
the ASCII encoding (FITS standard, appendix J) of the complement of the sum of the header, with
the ``CHECKSUM`` value set to sixteen zeros, and the data sum (0 where ``DATASUM`` is absent).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import numpy as np

__all__ = ["PlainHdu", "read_plain_hdu"]

BLOCK = 2880
CARD = 80
_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
# keywords whose presence makes data scaled, grouped or compressed: astropy's business
_NOT_PLAIN = frozenset({"BSCALE", "BZERO", "BLANK", "GROUPS", "ZIMAGE", "CONTINUE", "HIERARCH"})
_COMMENTARY = frozenset({"", "COMMENT", "HISTORY"})
_KEYWORD = re.compile(r"[A-Z0-9_-]{1,8} *\Z")
# the value/comment field of a strictly standard card (a subset of astropy's _value_FSC_RE, less
# complex numbers): a string, a logical, an integer or a real, or nothing, then a comment
_VALUE = re.compile(
    r" *(?P<value>'(?P<string>(?:[ -&(-~]|'')*)'|(?P<logical>[TF])"
    r"|(?P<integer>[+-]?\d+)(?![.DE\d])|[+-]?(?:\.\d+|\d+(?:\.\d*)?)(?:[DE][+-]?\d+)?)?"
    r" *(?:/ *(?:[!-~][ -~]*)?)?\Z"
)
_PRINTABLE = re.compile(rb"[ -~]*\Z")
_EXCLUDED = frozenset(b":;<=>?@[\\]^_`")
_ZERO_CHECKSUM = "CHECKSUM= '0000000000000000'"
_READ_WHOLE = 64 << 20  # bytes: files up to this size are read at once, larger ones mapped


@dataclass(frozen=True)
class PlainHdu:
    """One image HDU of a plain file.

    Attributes
    ----------
    header
        The HDU's header as it stands in the file (cards up to and including ``END``).
    data
        Native-endian C-contiguous float64 copy, shape ``(NAXIS2, NAXIS1)``; row 0 is the first
        FITS row.
    """

    header: bytes
    data: np.ndarray


@dataclass(frozen=True)
class _Hdu:
    header: bytes  # up to and including END
    cards: dict[str, str | int | bool]
    bitpix: int
    axes: tuple[int, ...]  # NAXIS1, NAXIS2, ... (FITS order)
    data_offset: int
    padded_bytes: int  # the data area, padding included


_BAD = object()


def _value(field: str) -> str | int | bool | None | object:
    """The value of a card's value/comment field (columns 11-80); ``_BAD`` when it is not in
    the strict form; None for a real or an empty value (not needed here)."""
    found = _VALUE.match(field)
    if found is None:
        return _BAD
    if found["string"] is not None:
        return found["string"].replace("''", "'").rstrip()
    if found["logical"] is not None:
        return found["logical"] == "T"
    if found["integer"] is not None:
        return int(found["integer"])
    return None


def _parse_header(buffer: bytes | memoryview, offset: int) -> tuple[bytes, dict, int] | None:
    """The header starting at ``offset``: its bytes up to END, its cards, and the offset of its
    data; None when a card is not strictly standard, a keyword repeats, or END is missing."""
    cards: dict[str, str | int | bool] = {}
    position = offset
    size = len(buffer)
    while position + BLOCK <= size:
        block = bytes(buffer[position : position + BLOCK])
        if not _PRINTABLE.match(block):
            return None
        for start in range(0, BLOCK, CARD):
            card = block[start : start + CARD].decode("ascii")
            keyword = card[:8].rstrip()
            if keyword == "END":
                if card[3:].strip() or block[start + CARD :].strip():
                    return None
                end = position + start + CARD
                return bytes(buffer[offset:end]), cards, position + BLOCK
            if keyword in _COMMENTARY:
                if keyword == "" and card[8:10] == "= ":
                    return None
                continue
            if card[8:10] != "= " or not _KEYWORD.match(card[:8]) or keyword in _NOT_PLAIN:
                return None
            value = _value(card[10:])
            if value is _BAD or keyword in cards:
                return None
            if value is not None:
                cards[keyword] = value  # type: ignore[assignment]
        position += BLOCK
    return None


def _structure(cards: dict, first: bool) -> tuple[int, tuple[int, ...]] | None:
    """``(BITPIX, shape)`` of a primary (``first``) or IMAGE extension header in the standard
    order; None for anything else."""
    keys = list(cards)
    if first:
        if keys[:1] != ["SIMPLE"] or cards["SIMPLE"] is not True:
            return None
        head = 1
    else:
        if keys[:1] != ["XTENSION"] or cards["XTENSION"] != "IMAGE":
            return None
        if cards.get("PCOUNT") != 0 or cards.get("GCOUNT") != 1:
            return None
        head = 1
    naxis = cards.get("NAXIS")
    bitpix = cards.get("BITPIX")
    if keys[head : head + 2] != ["BITPIX", "NAXIS"] or bitpix not in _DTYPES:
        return None
    if type(naxis) is not int or not 0 <= naxis <= 999:
        return None
    axes = [f"NAXIS{i}" for i in range(1, naxis + 1)]
    if keys[head + 2 : head + 2 + naxis] != axes:
        return None
    shape = tuple(cards[a] for a in axes)
    if any(type(n) is not int or n < 0 for n in shape):
        return None
    extra = {k for k in keys if k.startswith("NAXIS") and k != "NAXIS"} - set(axes)
    if extra:
        return None
    return int(bitpix), shape


def _ones_complement_sum(buffer: bytes | memoryview, offset: int, size: int, start: int = 0) -> int:
    """32-bit ones' complement sum of ``size`` bytes (a multiple of 4) from ``offset``."""
    total = start
    words = np.frombuffer(buffer, dtype=">u4", count=size // 4, offset=offset)
    for first in range(0, words.size, 1 << 30):  # uint64 sums of at most 2**30 words
        total += int(words[first : first + (1 << 30)].sum(dtype=np.uint64))
    while total >> 32:
        total = (total & 0xFFFFFFFF) + (total >> 32)
    return total


def _encode(value: int) -> str:
    """FITS standard ASCII encoding of a 32-bit checksum (appendix J), as written in CHECKSUM."""
    encoded = [0] * 16
    for i in range(4):
        byte = (value >> (24 - 8 * i)) & 0xFF
        quotient, remainder = byte // 4 + ord("0"), byte % 4
        chars = [quotient + remainder, quotient, quotient, quotient]
        changed = True
        while changed:
            changed = False
            for j in (0, 2):
                while chars[j] in _EXCLUDED or chars[j + 1] in _EXCLUDED:
                    chars[j] += 1
                    chars[j + 1] -= 1
                    changed = True
        for j in range(4):
            encoded[4 * j + i] = chars[j]
    return "".join(chr(encoded[(k + 15) % 16]) for k in range(16))


def _checksums_hold(buffer: bytes | memoryview, hdu: _Hdu) -> bool:
    """DATASUM and CHECKSUM (where present) as astropy verifies them."""
    cards = hdu.cards
    if "CHECKSUM" not in cards and "DATASUM" not in cards:
        return True
    data_sum = _ones_complement_sum(buffer, hdu.data_offset, hdu.padded_bytes)
    datasum = cards.get("DATASUM")
    if datasum is not None:
        if not isinstance(datasum, (str, int)) or isinstance(datasum, bool):
            return False
        text = str(datasum).strip()
        if not text.isdigit() or int(text) != data_sum:
            return False
    checksum = cards.get("CHECKSUM")
    if checksum is None:
        return True
    if not isinstance(checksum, str) or len(checksum) != 16:
        return False
    header = bytearray(hdu.header)
    header += b" " * (-len(header) % BLOCK)
    for start in range(0, len(header), CARD):
        if header[start : start + 8] == b"CHECKSUM":
            card = header[start : start + CARD].decode("ascii")
            zeroed = card[:11] + "0" * 16 + card[27:]
            # astropy re-formats the card it zeroes (value padded to 20 characters, then
            # " / " and the comment): only a card already in that layout sums the same
            rest = card[30:]
            comment = rest[3:].rstrip() if rest.strip() else ""
            if comment and (not rest.startswith(" / ") or comment.startswith(" ")):
                return False
            canonical = _ZERO_CHECKSUM + "  " + (f" / {comment}" if comment else "")
            if zeroed != canonical.ljust(CARD)[:CARD]:
                return False
            header[start : start + CARD] = zeroed.encode("ascii")
    total = _ones_complement_sum(
        bytes(header), 0, len(header), data_sum if datasum is not None else 0
    )
    return _encode(~total & 0xFFFFFFFF) == checksum


def _hdus(buffer: bytes | memoryview) -> list[_Hdu] | None:
    """Every HDU of a plain file, checksums verified; None where the file is not plain."""
    found: list[_Hdu] = []
    offset = 0
    while offset < len(buffer):
        parsed = _parse_header(buffer, offset)
        if parsed is None:
            return None
        header, cards, data_offset = parsed
        structure = _structure(cards, first=not found)
        if structure is None:
            return None
        bitpix, axes = structure
        data_bytes = abs(bitpix) // 8 * math.prod(axes) if axes else 0  # Python ints: no overflow
        padded = data_bytes + (-data_bytes % BLOCK)
        if data_offset + padded > len(buffer):
            return None
        hdu = _Hdu(header, cards, bitpix, axes, data_offset, padded)
        if not _checksums_hold(buffer, hdu):
            return None
        found.append(hdu)
        offset = data_offset + padded
    return found


def _index(hdus: list[_Hdu], key: int | str | tuple[str, int]) -> int | None:
    """The HDU a key names, as astropy's ``HDUList.index_of`` resolves it; None for keys left
    to astropy (negative, bool, tuple, empty, absent)."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        return int(key) if 0 <= key < len(hdus) else None
    if not isinstance(key, str):
        return None
    name = key.strip().upper()
    if not name:
        return None
    for index, hdu in enumerate(hdus):
        extname = hdu.cards.get("EXTNAME", "PRIMARY" if index == 0 else "")
        if not isinstance(extname, str):
            return None
        if extname.strip().upper() == name or (name == "PRIMARY" and index == 0):
            return index
    return None


def _image(buffer: bytes | memoryview, hdu: _Hdu) -> np.ndarray | None:
    if len(hdu.axes) != 2 or 0 in hdu.axes:
        return None
    nx, ny = hdu.axes
    values = np.frombuffer(buffer, dtype=_DTYPES[hdu.bitpix], count=nx * ny, offset=hdu.data_offset)
    return values.reshape(ny, nx).astype(np.float64, order="C")


def read_plain_hdu(path: str | os.PathLike, key: int | str | tuple[str, int]) -> PlainHdu | None:
    """The 2-D image HDU ``key`` (index, or EXTNAME case-insensitively) of a plain FITS file,
    or None where the file, the key or the HDU is anything but plain (see the module notes)."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0 or size % BLOCK or size > _READ_WHOLE:
                return None
            buffer = handle.read()
    except OSError:
        return None
    if len(buffer) != size or not buffer.startswith(b"SIMPLE  = "):
        return None
    hdus = _hdus(buffer)
    if hdus is None:
        return None
    index = _index(hdus, key)
    if index is None:
        return None
    data = _image(buffer, hdus[index])
    if data is None:
        return None
    return PlainHdu(hdus[index].header, data)
