"""How arrays are encoded (pipeline/io/store/codecs.py): :class:`OperatorStorage` validation, the
codecs of each choice (always ending in a crc32c checksum), and what ``encode`` stores."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from pipeline.exc import OperatorError, StoreError
from pipeline.io.store.codecs import (
    DEFAULT_STORAGE,
    DTYPES,
    SMALL_CODECS,
    OperatorStorage,
    checksum_only,
)
from pipeline.io.store.schema import MARKERS_NODE, OFFSETS_NODE


def test_defaults():
    assert DEFAULT_STORAGE == OperatorStorage()
    assert (
        DEFAULT_STORAGE.dtype,
        DEFAULT_STORAGE.codec,
        DEFAULT_STORAGE.level,
        DEFAULT_STORAGE.keep_bits,
        DEFAULT_STORAGE.shuffle,
    ) == ("float64", "lz4", 1, None, False)


@pytest.mark.parametrize(
    "options",
    [
        {"dtype": "float64"},
        {"dtype": "float32"},
        {"codec": "lz4", "level": 9, "shuffle": True},
        {"codec": "zstd", "level": 22},
        {"codec": "none"},
        {"dtype": "float64", "keep_bits": 1},
        {"dtype": "float64", "keep_bits": 52},
        {"dtype": "float32", "keep_bits": 23},
    ],
)
def test_accepted(options):
    storage = OperatorStorage(**options)
    for key, value in options.items():
        assert getattr(storage, key) == value


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dtype": "float16"}, "operator dtype must be 'float64' or 'float32', got 'float16'"),
        ({"dtype": "f8"}, "got 'f8'"),
        ({"dtype": "int32"}, "got 'int32'"),
        ({"codec": "gzip"}, "codec must be 'lz4', 'zstd' or 'none', got 'gzip'"),
        ({"codec": "LZ4"}, "got 'LZ4'"),
        ({"codec": "blosc"}, "got 'blosc'"),
        ({"keep_bits": 0}, r"keep_bits must be in [1, 52] for float64, got 0"),
        ({"keep_bits": 53}, r"keep_bits must be in [1, 52] for float64, got 53"),
        (
            {"dtype": "float32", "keep_bits": 24},
            r"keep_bits must be in [1, 23] for float32, got 24",
        ),
        ({"dtype": "float32", "keep_bits": -1}, r"[1, 23] for float32, got -1"),
    ],
)
def test_refused_naming_the_bad_value(options, message):
    with pytest.raises(StoreError) as info:
        OperatorStorage(**options)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("codec", "level"), [("lz4", 50), ("lz4", 10), ("lz4", -3), ("zstd", 99), ("zstd", 23)]
)
def test_out_of_range_levels_are_refused(codec, level):
    with pytest.raises(StoreError, match=f"level {level} is out of range for codec {codec}"):
        OperatorStorage(codec=codec, level=level)


@pytest.mark.parametrize(("codec", "level"), [("lz4", 0), ("lz4", 9), ("zstd", 0), ("zstd", 22)])
def test_levels_at_the_edges_are_accepted(codec, level):
    assert OperatorStorage(codec=codec, level=level).compressors()[0].to_dict()["configuration"]


def test_non_integer_settings_are_refused():
    with pytest.raises(StoreError, match="level must be an integer"):
        OperatorStorage(level=1.5)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="level must be an integer"):
        OperatorStorage(level=True)
    with pytest.raises(StoreError, match="keep_bits must be in"):
        OperatorStorage(keep_bits=True)


def test_the_config_refuses_what_the_storage_refuses(tmp_path):
    from pipeline.exc import ConfigError
    from pipeline.flow.config import config_from_dict

    base = {
        "inputs": {"kind": "folders", "root": "."},
        "pixel_scales": 0.1,
        "mask": {"kind": "circular", "radius": 1.0},
        "output": {"store": "s.zarr"},
    }
    for bad, message in [
        ({"codec": "lz4", "level": 10}, "level 10 is out of range for codec lz4"),
        ({"dtype": "float32", "keep_bits": 30}, "keep_bits must be in \\[1, 23\\] for float32"),
    ]:
        with pytest.raises(ConfigError, match=message):
            config_from_dict({**base, "sparse_operator": bad}, tmp_path)
    ok = config_from_dict({**base, "sparse_operator": {"codec": "zstd", "level": 22}}, tmp_path)
    assert ok.sparse_operator.storage() == OperatorStorage(codec="zstd", level=22)


def test_compressors_end_in_a_checksum():
    assert OperatorStorage(codec="none").compressors() == [Crc32cCodec()]
    assert OperatorStorage(codec="zstd", level=7).compressors() == [
        ZstdCodec(level=7),
        Crc32cCodec(),
    ]
    assert OperatorStorage(level=5).compressors() == [
        BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle"),
        Crc32cCodec(),
    ]
    assert OperatorStorage(level=5, shuffle=True).compressors() == [
        BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
        Crc32cCodec(),
    ]
    # the small arrays and the operator's offsets and markers are checksummed too
    assert isinstance(SMALL_CODECS[-1], Crc32cCodec) and isinstance(SMALL_CODECS[0], ZstdCodec)
    assert checksum_only() == [Crc32cCodec()] and checksum_only() is not checksum_only()


def test_dtypes_of_the_other_arrays():
    assert DTYPES[OFFSETS_NODE] == "int32" and DTYPES[MARKERS_NODE] == "uint8"
    assert DTYPES["mask"] == "bool"
    assert {DTYPES[k] for k in ("data", "noise_map", "psf", "grid")} == {"float64"}
    assert "values" not in DTYPES  # the operator values' dtype is OperatorStorage.dtype


@pytest.mark.parametrize("codec", ["lz4", "zstd", "none"])
def test_a_damaged_chunk_fails_to_decode(tmp_path, codec):
    """Written through zarr with these codecs, values read back exactly; one flipped byte of
    a chunk file fails to decode instead of changing values."""
    storage = OperatorStorage(codec=codec, level=3)
    values = np.linspace(-1.0, 1.0, 400).reshape(20, 20) ** 3
    array = zarr.create_array(
        tmp_path / "a.zarr",
        shape=values.shape,
        chunks=(10, 20),
        dtype="float64",
        compressors=storage.compressors(),
    )
    array[...] = values
    np.testing.assert_array_equal(array[...], values)
    chunk = tmp_path / "a.zarr" / "c" / "1" / "0"
    content = bytearray(chunk.read_bytes())
    content[len(content) // 2] ^= 0x10
    chunk.write_bytes(bytes(content))
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "a.zarr")[:10], values[:10])
    with pytest.raises(Exception, match="(?i)checksum|crc"):
        zarr.open_array(tmp_path / "a.zarr")[10:]


def test_encode():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(6, 9)) * 10.0 ** rng.uniform(-20, 20, size=(6, 9))
    values[:, 0] = np.abs(values[:, 0]) + 1.0  # a positive diagonal

    assert OperatorStorage().encode(values) is values  # float64 as computed: no copy
    stored = OperatorStorage("float32").encode(values)
    assert stored.dtype == np.float32
    assert np.all(np.abs(stored - values) <= 2.0**-24 * np.abs(values))
    # documented bounds (docs/operator.md): rounding to 10 bits, after the cast for float32
    for dtype, eps, mantissa in (
        ("float64", 2.0**-11, 52),
        ("float32", 2.0**-24 + 2.0**-11 * (1 + 2.0**-24), 23),
    ):
        rounded = OperatorStorage(dtype, keep_bits=10).encode(values)
        assert rounded.dtype == np.dtype(dtype)
        error = np.abs(rounded.astype(np.float64) - values)
        assert np.all(error <= eps * np.abs(values))
        assert np.all(error[values != rounded] > 0)
        # 10 bits of mantissa kept: the dropped low bits of every value are zero
        bits = rounded.view(np.uint64 if dtype == "float64" else np.uint32)
        low = np.array((1 << (mantissa - 10)) - 1, dtype=bits.dtype)
        assert not np.any(bits & low)

    with pytest.raises(OperatorError, match="float32"):
        OperatorStorage("float32").encode(np.full((2, 3), 1e39))
