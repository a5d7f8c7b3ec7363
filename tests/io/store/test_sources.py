"""Input files (pipeline/io/store/sources.py): hashes, size and mtime, non-regular files.

Cases run on a local directory, a ``zarr.storage.MemoryStore`` and S3 (moto server), see
``conftest.py``; damage cases on the first two, done through the store API (raw keys)."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict
from pathlib import Path

import pytest
import zarr
import zarr.codecs
import zarr.storage

from pipeline.exc import (
    InputFileError,
    PipelineError,
)
from pipeline.io.store import (
    Source,
    dataset_attrs,
    file_sha256,
    settings_hash,
    source_changed,
    write_imaging,
)
from tests.io.store.support import (
    BATCH,
    kw,
)


def test_source_sha256(tmp_path):
    payload = bytes(range(256)) * 5000  # > 1 MiB: several read blocks
    path = tmp_path / "data.fits"
    path.write_bytes(payload)
    source = Source.from_file("data", path, hdu="SCI")
    assert source.sha256 == hashlib.sha256(payload).hexdigest()
    assert (source.role, source.path, source.hdu) == ("data", str(path), "SCI")


def test_sources_and_settings_are_stored(store_location, imaging, tmp_path):
    loc = store_location
    files = {}
    for role, payload in (("data", b"SIMPLE  = T data"), ("psf", b"SIMPLE  = T psf")):
        files[role] = tmp_path / f"{role}.fits"
        files[role].write_bytes(payload)
    sources = [
        Source.from_file("data", files["data"], hdu=1),
        Source.from_file("psf", files["psf"]),
    ]
    settings = {
        "mask": {"radius": 1.0},
        "sparse_operator": {"batch_size": BATCH, "dtype": "float64"},
    }
    write_imaging(
        loc.location,
        "lens",
        imaging,
        batch_size=BATCH,
        sources=sources,
        settings=settings,
        **kw(loc),
    )
    attrs = dataset_attrs(loc.location, "lens", **kw(loc))
    assert attrs["sources"] == [
        {
            "role": "data",
            "path": str(files["data"]),
            "hdu": 1,
            "sha256": hashlib.sha256(b"SIMPLE  = T data").hexdigest(),
            "size": 16,
            "mtime_ns": files["data"].stat().st_mtime_ns,
        },
        {
            "role": "psf",
            "path": str(files["psf"]),
            "hdu": 0,
            "sha256": hashlib.sha256(b"SIMPLE  = T psf").hexdigest(),
            "size": 15,
            "mtime_ns": files["psf"].stat().st_mtime_ns,
        },
    ]
    assert attrs["settings"] == settings
    assert attrs["settings_hash"] == settings_hash(settings)
    assert attrs["software"]["zarr"] == zarr.__version__


def test_source_records_size_and_mtime(tmp_path):
    path = tmp_path / "data.fits"
    path.write_bytes(b"0123456789")
    os.utime(path, ns=(1_700_000_000_000_000_000, 1_700_000_000_123_456_789))
    source = Source.from_file("data", path)
    assert (source.size, source.mtime_ns) == (10, 1_700_000_000_123_456_789)
    assert source.sha256 == hashlib.sha256(b"0123456789").hexdigest() == file_sha256(path)
    assert source_changed(source) is None
    assert source_changed(asdict(source)) is None  # as recorded in the attributes

    os.utime(path, ns=(1, 2))  # touched, same bytes: the sha256 decides
    assert source_changed(source) is None
    path.write_bytes(b"0123456780")  # same size, other bytes
    assert source_changed(source) == "sha256 differs"
    path.write_bytes(b"01234567890")
    assert source_changed(source) == "size 10 -> 11"
    path.unlink()
    assert source_changed(source) == "missing"
    assert source_changed(Source("data", str(path), 0, None)) == "missing"
    # an old record (sha256 only): compared by hash
    path.write_bytes(b"0123456789")
    old = {"role": "data", "path": str(path), "hdu": 0, "sha256": source.sha256}
    assert source_changed(old) is None


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder", "missing"])
def test_non_regular_inputs_are_refused_without_opening(tmp_path, kind):
    """A FIFO or /dev/zero would block a hash forever (PITFALLS): refused from ``stat``."""
    path = {
        "fifo": tmp_path / "data.fits",
        "dev-zero": Path("/dev/zero"),
        "folder": tmp_path,
        "missing": tmp_path / "absent.fits",
    }[kind]
    if kind == "fifo":
        os.mkfifo(path)
    why = {
        "fifo": "is a FIFO (named pipe), not a regular file",
        "dev-zero": "is a character device, not a regular file",
        "folder": "is a folder, not a regular file",
        "missing": ": file not found",
    }[kind]
    for call in (lambda: Source.from_file("data", path), lambda: file_sha256(path)):
        with pytest.raises(InputFileError, match=re.escape(why)) as info:
            call()
        assert isinstance(info.value, PipelineError) and isinstance(info.value, OSError)
        assert repr(str(path)) in str(info.value)
    recorded = Source("data", str(path), 0, "0" * 64, 10, 1)
    expected = "missing" if kind == "missing" else why.removeprefix("is ")
    assert source_changed(recorded) == expected
