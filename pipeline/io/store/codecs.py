"""How arrays are encoded in the store: dtypes, compressors and checksums, validated here only.

Every array carries a crc32c checksum after its compressor, so a flipped bit or a torn file fails
to decode instead of changing values silently (issue 11 found 47 of 60 flips silent without it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from pipeline.exc import StoreError
from pipeline.io.store.schema import MARKERS_NODE, OFFSETS_NODE

__all__ = ["DEFAULT_STORAGE", "DTYPES", "SMALL_CODECS", "OperatorStorage", "checksum_only"]

# the dtype of every array but the operator values (whose dtype is OperatorStorage.dtype)
DTYPES = {
    "data": "float64",
    "noise_map": "float64",
    "mask": "bool",
    "over_sample_size_lp": "int32",
    "over_sample_size_pixelization": "int32",
    "grid": "float64",
    "psf": "float64",
    "noise_covariance_matrix": "float64",
    OFFSETS_NODE: "int32",
    MARKERS_NODE: "uint8",
}

# the small arrays' codecs: Zstandard, then a crc32c checksum
SMALL_CODECS = [ZstdCodec(level=1), Crc32cCodec()]


def checksum_only() -> list[Any]:
    """The codecs of the operator's offsets and markers: a crc32c checksum, no compressor."""
    return [Crc32cCodec()]


_HIGHEST_LEVEL = {"lz4": 9, "zstd": 22}


@dataclass(frozen=True)
class OperatorStorage:
    """How operator values are stored.

    Parameters
    ----------
    dtype
        ``"float64"`` or ``"float32"`` (values are always computed in float64; float32 storage
        keeps |stored - computed| <= 2**-24 * max(|computed|, 2**-126), else the batch is refused:
        docs/operator.md, "Range and float32 storage").
    codec
        ``"lz4"`` (Blosc LZ4 with byte shuffle, the default: it keeps up with the operator
        kernels), ``"zstd"`` (plain Zstandard at ``level``) or ``"none"``. Measured on one core for a
        21x21-PSF operator in float64: lz4 1.25x at 620-750 MB/s, zstd level 1 1.24x at ~300 MB/s,
        zstd level 3 1.56x at ~180 MB/s (table in docs/store-schema.md).
    level
        Compression level: lz4 0-9, zstd 0-22 (ignored for ``"none"``).
    shuffle
        Byte-shuffle before LZ4 (Blosc). Off by default: on operator values it gains ~2% in size
        and costs ~40% in speed (the compressible part is the zero entries of masked neighbours).
    keep_bits
        If set, round each value's mantissa to this many bits before it is written
        (``numcodecs.BitRound``): error <= eps * max(|w|, tiny) with ``(eps, tiny) =
        pipeline.operators.storage_error_bound(dtype, keep_bits)``; float64 has 52 bits, float32
        23. The rounded values compress much better.
    """

    dtype: Literal["float64", "float32"] = "float64"
    codec: Literal["lz4", "zstd", "none"] = "lz4"
    level: int = 1
    keep_bits: int | None = None
    shuffle: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in ("float64", "float32"):
            raise StoreError(f"operator dtype must be 'float64' or 'float32', got {self.dtype!r}")
        if self.codec not in ("lz4", "zstd", "none"):
            raise StoreError(f"codec must be 'lz4', 'zstd' or 'none', got {self.codec!r}")
        if isinstance(self.level, bool) or not isinstance(self.level, int | np.integer):
            raise StoreError(f"level must be an integer, got {self.level!r}")
        highest = _HIGHEST_LEVEL.get(self.codec)
        if highest is not None and not 0 <= self.level <= highest:
            raise StoreError(
                f"level {self.level} is out of range for codec {self.codec}: use 0-{highest} "
                "(lz4: 0-9, zstd: 0-22)"
            )
        if self.keep_bits is not None:
            mantissa = 52 if self.dtype == "float64" else 23
            if (
                isinstance(self.keep_bits, bool)
                or not isinstance(self.keep_bits, int | np.integer)
                or not 1 <= self.keep_bits <= mantissa
            ):
                raise StoreError(
                    f"keep_bits must be in [1, {mantissa}] for {self.dtype}, got {self.keep_bits}"
                )

    def compressors(self) -> list[Any]:
        """The values array's bytes-to-bytes codecs: the compressor, then a crc32c checksum.

        The checksum (4 bytes per chunk, hardware crc32c at ~16 GB/s) makes a torn or corrupted
        chunk fail to decode: Blosc-LZ4 alone decodes a truncated chunk into garbage without
        any error (checked with zarr 3.1.6 and numcodecs 0.16).
        """
        checksum = Crc32cCodec()
        if self.codec == "none":
            return [checksum]
        if self.codec == "zstd":
            return [ZstdCodec(level=self.level), checksum]
        return [
            BloscCodec(
                cname="lz4", clevel=self.level, shuffle="shuffle" if self.shuffle else "noshuffle"
            ),
            checksum,
        ]

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Float64 values as stored: cast to ``dtype``, mantissa rounded to ``keep_bits``
        (float64 values without rounding are passed through uncopied: one batch-sized buffer
        less in a task's peak memory). Raises :class:`OperatorError` where the stored values
        would not be finite or within the documented error bound (docs/operator.md, "Range and
        float32 storage"): see :func:`pipeline.operators.precision.storage_values_from`."""
        from pipeline.operators.precision import storage_values_from

        return storage_values_from(values, self.dtype, self.keep_bits)


DEFAULT_STORAGE = OperatorStorage()
"""The default operator storage: float64, Blosc LZ4 level 1, no shuffle, no rounding."""
