"""The Zarr v3 survey store (DESIGN §5): the data contract between tasks, runs and users.

Layout (schema version 1)::

    <store>/                      attrs["lenspipe"] = {schema_version, created, software}
      datasets/<name>/            attrs: status, pixel_scales, origin, shape_native, n_pixels,
                                  psf_shape, sources, settings, settings_hash, software, timings, error
        data, noise_map           float64 (ny, nx), masked = 0
        mask                      bool (ny, nx), True = masked
        psf                       float64 (ky, kx), as used (normalised)
        over_sample_size_lp       int32 (ny, nx), 0 at masked pixels; same for _pixelization
        grid                      float64 (N, 2) arcsec (y, x)
        noise_covariance_matrix   float64 (N, N), only if the dataset has one
        sparse_operator/          attrs: batch_size, n_batches, kernel_shape, dtype, storage
          values                  float64|float32 (N, n_offsets), chunks (batch_size, n_offsets),
                                  codecs: the chosen compressor, then a crc32c checksum
          offsets                 int32 (n_offsets, 2)
          batches_done            uint8 (n_batches,), chunks (1,): the completion marker of each
                                  batch, written after that batch's values

Concurrency contract: only the driver creates the store and dataset groups and writes attributes
(:func:`create_store`, :func:`begin_dataset`, :func:`record_prepared`, :func:`finalize_dataset`,
:func:`mark_failed`); a dataset's prepare task fills that dataset's own group
(:func:`write_dataset_arrays`) before the driver records it prepared (a change from DESIGN §5,
argued in docs/store-schema.md); an operator task only writes whole chunks of arrays that exist
(:func:`write_operator_batch`): the rows of its batch, then its marker
(a one-element chunk, so markers never share a chunk). A chunk's presence never proves completion:
the markers do. Conversely every marked batch has a stored values chunk (written even when equal to
the fill value) whose crc32c checksum detects a torn or corrupted file: :func:`verify_dataset`
lists the marked batches whose chunk is missing or does not decode, and reading such a chunk raises
:class:`StoreError` naming the dataset and the batch. ``status`` moves ``prepared`` -> ``complete``
(or ``failed``, with the error); readers refuse datasets that are not complete unless asked.

Integrity and safety (issue 11): every array carries a crc32c checksum and has every chunk stored,
so :func:`check_dataset` and the readers find any flipped bit, torn or lost chunk, and any node the
status promises that is missing (:class:`~pipeline.exc.DamagedDatasetError`); :func:`scan_datasets`
lists every dataset it can read and names the others. :func:`create_store` refuses locations where
it could destroy what is not its own (:class:`~pipeline.exc.UnsafeStoreError`), and nothing but a
lenspipe dataset group is ever overwritten or deleted. See docs/store-schema.md.

Stores may be local paths, fsspec URLs (``s3://bucket/survey.zarr`` with ``storage_options``) or
any ``zarr.abc.store.Store``.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import json
import os
import re
import stat
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
import zarr.api.asynchronous
import zarr.errors
import zarr.storage
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.group import GroupMetadata
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.core.sync import sync

from pipeline.exc import (
    DamagedDatasetError,
    DatasetNotCompleteError,
    DatasetNotFoundError,
    InputFileError,
    StoreError,
    StoreVersionError,
    UnsafeStoreError,
)
from pipeline.imaging import Array2D, Convolver, Imaging, Mask2D
from pipeline.operators import (
    ImagingSparseOperator,
    OperatorInputs,
    OperatorLayout,
    inverse_variance_from,
    psf_weighted_data_from,
)

__all__ = [
    "RESERVED_NAMES",
    "SCHEMA_VERSION",
    "DatasetCheck",
    "OperatorStorage",
    "Source",
    "batches_done",
    "begin_dataset",
    "check_dataset",
    "create_store",
    "damaged_batches",
    "dataset_metadata",
    "dataset_attrs",
    "dataset_problems",
    "dataset_status",
    "file_sha256",
    "finalize_dataset",
    "list_datasets",
    "not_a_regular_file",
    "mark_failed",
    "open_imaging",
    "open_operator",
    "open_store",
    "prepare_dataset",
    "prepared_attributes",
    "record_prepared",
    "reopen_dataset",
    "reset_batches",
    "scan_datasets",
    "settings_hash",
    "source_changed",
    "store_exists",
    "store_overlaps",
    "validate_dataset_name",
    "verify_dataset",
    "write_dataset_arrays",
    "write_imaging",
    "write_operator_batch",
]

SCHEMA_VERSION = 1
PREPARED, COMPLETE, FAILED = "prepared", "complete", "failed"
# reported (never written) for a group without status: being prepared, or its prepare was cut
PREPARING = "preparing"
# reported (never written) for a child of datasets/ that cannot be read: torn or missing group
# document, an array or a foreign file where a dataset group should be (see scan_datasets)
DAMAGED = "damaged"
StoreLike = str | os.PathLike | zarr.abc.store.Store | zarr.Group

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
# names of Zarr's own documents and folders (v3 and v2) and of lenspipe's own store entries,
# refused as dataset names whatever their case (case-insensitive file systems: macOS, Windows)
RESERVED_NAMES = frozenset(
    ("zarr.json", "c", ".zarray", ".zgroup", ".zattrs", ".zmetadata", "runs", "datasets",
     "lenspipe.lock")
)  # fmt: skip
# the repair advice of every damage message
REPAIR = "rerun `lenspipe run CONFIG --verify` to repair it"
# the keys a dataset group holds, relative to it: documents and chunks of its arrays and of its
# operator's arrays (what write_dataset_arrays may erase when the group document is torn)
_DATASET_KEY = re.compile(
    r"zarr\.json|(?:sparse_operator/)?[A-Za-z0-9_]+/(?:zarr\.json|c(?:/[0-9]+)*)"
)
# the arrays every prepared dataset holds
_BASE_ARRAYS = (
    "data",
    "noise_map",
    "mask",
    "over_sample_size_lp",
    "over_sample_size_pixelization",
    "grid",
)
OPERATOR_GROUP = "sparse_operator"
VALUES_NODE = "sparse_operator/values"
OFFSETS_NODE = "sparse_operator/offsets"
MARKERS_NODE = "sparse_operator/batches_done"
_OPERATOR_ARRAYS = (VALUES_NODE, OFFSETS_NODE, MARKERS_NODE)
_DTYPES = {
    "data": "float64",
    "noise_map": "float64",
    "mask": "bool",
    "over_sample_size_lp": "int32",
    "over_sample_size_pixelization": "int32",
    "grid": "float64",
    "psf": "float64",
    "noise_covariance_matrix": "float64",
    "sparse_operator/offsets": "int32",
    "sparse_operator/batches_done": "uint8",
}


# ---------------------------------------------------------------------------------------- settings
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
        Compression level (zstd 1-22, lz4 1-9).
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
        if self.keep_bits is not None:
            mantissa = 52 if self.dtype == "float64" else 23
            if not 1 <= self.keep_bits <= mantissa:
                raise StoreError(
                    f"keep_bits must be in [1, {mantissa}] for {self.dtype}, got {self.keep_bits}"
                )

    def compressors(self) -> list:
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


@dataclass(frozen=True)
class Source:
    """One input file of a dataset: its role (data, noise_map, psf, mask), path, HDU, sha256, and
    the size and modification time (ns) it had when it was hashed (:func:`source_changed`
    compares them, then the sha256 only when they differ)."""

    role: str
    path: str
    hdu: int | str = 0
    sha256: str | None = field(default=None)
    size: int | None = None
    mtime_ns: int | None = None

    @classmethod
    def from_file(cls, role: str, path: str | os.PathLike, hdu: int | str = 0) -> Source:
        """Hash ``path`` and record its size and mtime; refuses (:class:`InputFileError`) a
        path that is missing or not a regular file, before opening it: a FIFO or ``/dev/zero``
        would block the hash forever (PITFALLS)."""
        digest, info = _hash_regular_file(path)
        return cls(role, os.fspath(path), hdu, digest, int(info.st_size), int(info.st_mtime_ns))


def _regular_stat(path: str | os.PathLike) -> os.stat_result:
    """``os.stat`` of a regular file (symlinks followed), else :class:`InputFileError`."""
    try:
        info = os.stat(path)
    except FileNotFoundError as err:
        raise InputFileError(f"input file {os.fspath(path)!r}: file not found") from err
    except OSError as err:
        raise InputFileError(f"input file {os.fspath(path)!r} cannot be read: {err}") from err
    if not stat.S_ISREG(info.st_mode):
        raise InputFileError(
            f"input file {os.fspath(path)!r} is {_file_kind(info.st_mode)}, not a regular file: "
            "only regular files are read (a FIFO or a device could block the run forever); "
            "give the path of the file itself"
        )
    return info


def not_a_regular_file(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be an input file (it exists but is a FIFO, a device, a socket or a
    folder; symbolic links are followed), or ``None`` for a regular file or a missing one (a
    missing file is reported by the task that reads it, naming its dataset). Never opens it:
    opening a FIFO or reading ``/dev/zero`` would block a run forever."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as err:
        return f"cannot be examined ({err.strerror or err})"
    return None if stat.S_ISREG(mode) else f"is {_file_kind(mode)}, not a regular file"


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _hash_regular_file(path: str | os.PathLike) -> tuple[str, os.stat_result]:
    """(hex sha256, stat before reading) of a regular file. The file is checked with ``stat``
    before it is opened, then opened non-blocking and checked again on the open descriptor (a
    file swapped for a FIFO in between is refused, never read)."""
    info = _regular_stat(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as err:
        raise InputFileError(f"input file {os.fspath(path)!r} cannot be read: {err}") from err
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputFileError(f"input file {os.fspath(path)!r} is not a regular file")
        digest = hashlib.sha256()
        try:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        except OSError as err:
            raise InputFileError(f"input file {os.fspath(path)!r} cannot be read: {err}") from err
    return digest.hexdigest(), info


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a regular file's bytes (:class:`InputFileError` for anything else)."""
    return _hash_regular_file(path)[0]


def source_changed(source: Source | Mapping[str, Any]) -> str | None:
    """Why the file of a recorded source no longer matches what was read, or ``None`` if it
    does. Size and mtime are compared first (no read); when they differ, the sha256 decides (a
    file touched but unchanged is unchanged). ``source``: a :class:`Source` or its recorded
    attribute dictionary. Reasons: ``"missing"``, ``"not a regular file (a FIFO ...)"``,
    ``"size 123 -> 456"``, ``"sha256 differs"``, ``"cannot be read: ..."``."""
    if isinstance(source, Mapping):
        known = {"role", "path", "hdu", "sha256", "size", "mtime_ns"}
        source = Source(**{k: v for k, v in source.items() if k in known})
    try:
        info = os.stat(source.path)
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        return f"cannot be read: {err}"
    if not stat.S_ISREG(info.st_mode):
        return f"{_file_kind(info.st_mode)}, not a regular file"
    if source.size is not None and info.st_size != source.size:
        return f"size {source.size} -> {info.st_size}"
    if (
        source.mtime_ns is not None
        and source.size is not None
        and info.st_mtime_ns == source.mtime_ns
    ):
        return None
    if source.sha256 is None:
        return "no sha256 recorded to compare with"
    try:
        digest = file_sha256(source.path)
    except InputFileError as err:
        return str(err)
    return None if digest == source.sha256 else "sha256 differs"


def settings_hash(settings: Mapping[str, Any]) -> str:
    """Hex sha256 of the settings as canonical JSON (sorted keys)."""
    text = json.dumps(_jsonable(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def validate_dataset_name(name: str) -> str:
    """Return ``name`` if it is safe as a store key, else raise :class:`StoreError`.

    Safe: letters, digits and ``._+-``, starting with a letter or digit, no ``..``, at most 200
    characters (so no path separator, control character or trailing newline: the whole string
    must match), and none of :data:`RESERVED_NAMES` in any case (Zarr's own ``zarr.json``,
    ``c`` and v2 documents; lenspipe's ``runs``, ``datasets``, ``lenspipe.lock``)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise StoreError(
            f"dataset name {name!r} is not a safe store key: use letters, digits and '._+-', "
            "start with a letter or digit, no path separators, control characters or '..', at "
            "most 200 characters; rename the input"
        )
    if name.lower() in RESERVED_NAMES:
        raise StoreError(
            f"dataset name {name!r} is not a safe store key: it is reserved for Zarr's or "
            f"lenspipe's own files ({', '.join(sorted(RESERVED_NAMES))}, in any case); rename "
            "the input"
        )
    return name


# ---------------------------------------------------------------------------------------- opening
@lru_cache(maxsize=1)
def _software() -> dict[str, str]:
    import astropy
    import scipy

    from pipeline import __version__

    return {
        "lenspipe": __version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "zarr": zarr.__version__,
        "astropy": astropy.__version__,
    }


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _open_group(location: StoreLike, mode: str, storage_options: dict | None) -> zarr.Group:
    if isinstance(location, zarr.Group):
        return location
    if isinstance(location, os.PathLike):
        location = os.fspath(location)
    kwargs = {"storage_options": storage_options} if storage_options else {}
    try:
        return zarr.open_group(location, mode=mode, **kwargs)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as err:
        if mode == "r" or mode == "r+":
            raise StoreError(f"no Zarr store at {_describe(location)}") from err
        raise StoreError(
            f"cannot create the Zarr store at {_describe(location)} (is the location writable?): "
            f"{err}"
        ) from err
    except (OSError, ValueError, TypeError) as err:
        raise StoreError(f"cannot open the Zarr store at {_describe(location)}: {err}") from err
    except Exception as err:  # noqa: BLE001 - e.g. a torn root zarr.json: never a bare error
        raise StoreError(
            f"cannot open the Zarr store at {_describe(location)}: {type(err).__name__}: {err}"
        ) from err


def _describe(location: Any) -> str:
    return repr(os.fspath(location)) if isinstance(location, str | os.PathLike) else repr(location)


def _check_schema(root: zarr.Group, location: Any) -> None:
    meta = root.attrs.get("lenspipe")
    if not isinstance(meta, dict) or "schema_version" not in meta:
        raise StoreError(f"{_describe(location)} is a Zarr group but not a lenspipe store")
    version = meta["schema_version"]
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise StoreVersionError(
            f"{_describe(location)} was written with store schema_version {version!r}; this "
            f"lenspipe reads versions <= {SCHEMA_VERSION}: upgrade lenspipe to read it"
        )


def _local_path(location: Any) -> str | None:
    """The folder of a local store location (a path, a ``file://`` URL, a ``LocalStore``), or
    ``None`` for anything else (other URLs, in-memory stores, open groups)."""
    if isinstance(location, zarr.storage.LocalStore):
        return os.fspath(location.root)
    if isinstance(location, os.PathLike):
        location = os.fspath(location)
    if not isinstance(location, str):
        return None
    if location.startswith("file://"):
        return location[len("file://") :]
    return None if "://" in location else location


def _is_lenspipe_document(raw: bytes | None) -> bool | None:
    """Whether a root ``zarr.json`` is a lenspipe store's (True), an empty Zarr group without
    attributes (None: safe to adopt), or anything else (False)."""
    try:
        doc = json.loads(raw) if raw is not None else None
    except ValueError:
        return False
    if not isinstance(doc, dict) or doc.get("node_type") != "group":
        return False
    attributes = doc.get("attributes") or {}
    if isinstance(attributes, dict) and isinstance(attributes.get("lenspipe"), dict):
        return True
    return None if not attributes else False


def _check_store_location(location: StoreLike) -> None:
    """Refuse (:class:`UnsafeStoreError`) a store location where creating a store could destroy
    what is not the store's own (PITFALLS: zarr's ``overwrite`` deletes whatever is at a path).

    Local paths only: the empty string, a path that resolves to the current folder, an existing
    file, and an existing non-empty folder that is not a lenspipe store (a folder holding only an
    empty Zarr group without attributes is adopted). URLs and store objects get the Zarr-level
    check of :func:`create_store`."""
    path = _local_path(location)
    if path is None:
        return
    where = f"cannot create the Zarr store at {_describe(location)}"
    if not path.strip():
        raise UnsafeStoreError(
            f"{where}: an empty location means the current folder, whose files the store could "
            "overwrite; set the store to a new folder (e.g. 'survey.zarr')"
        )
    if os.path.realpath(path) == os.path.realpath(os.getcwd()):
        raise UnsafeStoreError(
            f"{where}: it is the current folder ({os.getcwd()}), whose files the store could "
            "overwrite; set the store to a new folder (e.g. 'survey.zarr')"
        )
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path):
        raise UnsafeStoreError(
            f"{where}: it is an existing file, not a folder; choose a new folder, an empty "
            "folder or an existing lenspipe store"
        )
    try:
        entries = sorted(os.listdir(path))
    except OSError as err:
        raise StoreError(f"{where}: the folder cannot be listed ({err})") from err
    if not entries:
        return
    document = os.path.join(path, "zarr.json")
    raw = None
    if os.path.isfile(document):
        try:
            with open(document, "rb") as fh:
                raw = fh.read(1 << 24)
        except OSError as err:
            raise StoreError(f"{where}: its zarr.json cannot be read ({err})") from err
    kind = _is_lenspipe_document(raw)
    if kind or (kind is None and entries == ["zarr.json"]):
        return
    if raw is not None:
        try:
            node = "array" if json.loads(raw).get("node_type") == "array" else "group"
        except (ValueError, AttributeError):
            node = "group"
        raise UnsafeStoreError(
            f"{where}: it is a non-empty Zarr {node} that is not a lenspipe store; choose "
            "another location (a new or empty folder, or an existing lenspipe store)"
        )
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    raise UnsafeStoreError(
        f"{where}: the folder exists, is not empty ({len(entries)} entries: {shown}) and is not "
        "a lenspipe store; lenspipe writes only into a new or empty folder or an existing "
        "lenspipe store, so as never to overwrite other files: choose another location"
    )


def create_store(location: StoreLike, *, storage_options: dict | None = None) -> zarr.Group:
    """Open the store at ``location`` for writing, creating it (schema attributes, ``datasets``
    group) if it does not exist. Driver only.

    Refuses (:class:`UnsafeStoreError`) an empty location, the current folder, an existing file,
    an existing non-empty folder that is not a lenspipe store (local paths), and a non-empty Zarr
    group that is not a lenspipe store (any store); nothing is written before these checks."""
    _check_store_location(location)
    root = _open_group(location, "a", storage_options)
    if "lenspipe" not in root.attrs:
        if len(list(root.keys())):
            raise UnsafeStoreError(
                f"{_describe(location)} is a non-empty Zarr group that is not a lenspipe store; "
                "choose another location"
            )
        root.attrs["lenspipe"] = {
            "schema_version": SCHEMA_VERSION,
            "created": _now(),
            "software": dict(_software()),
        }
    _check_schema(root, location)
    if "datasets" not in root:
        root.create_group("datasets")
    return root


def open_store(
    location: StoreLike, mode: Literal["r", "r+"] = "r", *, storage_options: dict | None = None
) -> zarr.Group:
    """Open an existing lenspipe store (``mode="r+"`` for tasks that write chunks)."""
    root = _open_group(location, mode, storage_options)
    _check_schema(root, location)
    return root


def store_exists(location: StoreLike, *, storage_options: dict | None = None) -> bool:
    """Whether a Zarr node (a root ``zarr.json``) is stored at ``location``: then
    :func:`open_store` opens it or says why not (not a lenspipe store, newer schema); else
    :func:`create_store` would create a new store. Raises :class:`UnsafeStoreError` where
    :func:`create_store` would refuse the location (local paths: empty, the current folder, an
    existing file, a non-empty folder that is not a lenspipe store), so a dry run reports what
    a run would do. Writes nothing."""
    if isinstance(location, zarr.Group):
        return True
    _check_store_location(location)
    path = _local_path(location)
    if path is not None:
        return os.path.isfile(os.path.join(path, "zarr.json"))
    if isinstance(location, zarr.abc.store.Store):
        return bool(sync(location.exists("zarr.json")))
    kwargs = {"storage_options": storage_options} if storage_options else {}
    try:
        zarr.open_group(os.fspath(location), mode="r", **kwargs)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return False
    except Exception:  # noqa: BLE001 - something is there (an array, a torn document)
        return True
    return True


def store_overlaps(location: StoreLike, paths: Iterable[str | os.PathLike]) -> str | None:
    """The first of ``paths`` (input files or folders) that is inside the local store folder
    ``location``, is that folder, or contains it (symlinks resolved); ``None`` if none does, or
    if the store is not local (URLs, store objects). A store there could overwrite inputs, or
    an input scan could read the store."""
    store = _local_path(location)
    if store is None:
        return None
    store_real = os.path.realpath(store)
    for path in paths:
        real = os.path.realpath(path)
        if os.path.commonpath([real, store_real]) in (real, store_real):
            return os.fspath(path)
    return None


def _as_root(location: StoreLike, storage_options: dict | None) -> zarr.Group:
    if isinstance(location, zarr.Group):
        return location
    return open_store(location, storage_options=storage_options)


# ------------------------------------------------------------------------------ raw store access
# Reading documents and listings through the store API, not through zarr's node objects: one
# torn document then fails only the dataset that holds it, with a message naming it, never a
# listing of the whole store (zarr's group_keys() stops at the first unreadable child).
async def _get_bytes(store: Any, key: str) -> bytes | None:
    buffer = await store.get(key, prototype=default_buffer_prototype())
    return None if buffer is None else buffer.to_bytes()


async def _list_prefix(store: Any, prefix: str) -> list[str]:
    """Every key under ``prefix`` (which ends with ``/``), sorted."""
    return sorted([key async for key in store.list_prefix(prefix) if key.startswith(prefix)])


async def _list_dir(store: Any, prefix: str) -> list[str]:
    return sorted({key.rstrip("/") async for key in store.list_dir(prefix) if key})


def _prefix(root: zarr.Group) -> str:
    return f"{root.path}/" if root.path else ""


def _dataset_path(root: zarr.Group, name: str) -> str:
    return f"{_prefix(root)}datasets/{name}"


@dataclass(frozen=True)
class _Node:
    """What is stored at a dataset's path: ``kind`` is ``group`` (its document decodes: ``doc``),
    ``absent`` (nothing), ``torn`` (keys of a dataset, but its group document missing or not
    decodable: ``reason``), ``foreign`` (an array, a file, or keys that are not a dataset's)."""

    kind: Literal["group", "absent", "torn", "foreign"]
    reason: str = ""
    doc: dict | None = None


async def _inspect_node(store: Any, path: str, *, list_keys: bool = True) -> _Node:
    """Classify what is at ``path`` (a dataset's group path) from its document and, unless it is
    a group, a listing of its keys."""
    try:
        raw = await _get_bytes(store, f"{path}/zarr.json")
    except Exception as err:  # noqa: BLE001 - unreadable document (I/O error, not a file)
        raw, why = None, f"its group document {path}/zarr.json cannot be read ({err})"
    else:
        why = f"its group document {path}/zarr.json is missing"
    if raw is not None:
        try:
            doc = json.loads(raw)
        except ValueError as err:
            doc, why = None, f"its group document {path}/zarr.json does not decode ({err})"
        if isinstance(doc, dict) and doc.get("node_type") == "group":
            if isinstance(doc.get("attributes", {}), dict):
                return _Node("group", doc=doc)
            why = f"its group document {path}/zarr.json has no valid attributes"
        elif isinstance(doc, dict) and doc.get("node_type") == "array":
            return _Node("foreign", f"{path} is a Zarr array, not a dataset group")
        elif doc is not None:
            why = f"its group document {path}/zarr.json is not a Zarr group document"
    keys = await _list_prefix(store, f"{path}/") if list_keys else []
    if raw is None and not keys:
        if await store.exists(path):
            return _Node("foreign", f"{path} is a file, not a dataset group")
        return _Node("absent", f"nothing is stored at {path}")
    foreign = [k for k in keys if not _DATASET_KEY.fullmatch(k[len(path) + 1 :])]
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        return _Node("foreign", f"{path} holds files that are not a dataset's ({shown})")
    return _Node("torn", why)


def _check_replaceable(root: zarr.Group, name: str) -> _Node:
    """What is at dataset ``name``'s path, if it may be (over)written: nothing, a Zarr group, or
    a torn dataset (only dataset keys below it, its group document missing or not decodable).
    Anything else (an array, a file, other files) raises :class:`UnsafeStoreError`: zarr's
    ``overwrite`` would delete it (PITFALLS)."""
    _check_schema(root, root.store)
    node = sync(_inspect_node(root.store, _dataset_path(root, name)))
    if node.kind == "foreign":
        raise UnsafeStoreError(
            f"dataset {name!r}: {node.reason}; lenspipe overwrites only its own dataset groups: "
            f"move it out of the store's datasets/ folder, or rename the dataset"
        )
    return node


def _datasets(root: zarr.Group) -> zarr.Group:
    try:
        node = root["datasets"]
    except KeyError:
        raise StoreError(
            "the store has no 'datasets' group; run `lenspipe run CONFIG` to create it"
        ) from None
    except Exception as err:  # noqa: BLE001 - a torn document
        raise StoreError(
            f"the store's 'datasets' group cannot be read ({type(err).__name__}: {err}); restore "
            f"{_prefix(root)}datasets/zarr.json (a group document) from a backup"
        ) from err
    if not isinstance(node, zarr.Group):
        raise StoreError("the store's 'datasets' node is an array, not a group")
    return node


def _dataset_group(root: zarr.Group, name: str) -> zarr.Group:
    """The group of dataset ``name``: :class:`DatasetNotFoundError` if nothing is stored there,
    :class:`DamagedDatasetError` if what is there is not a readable dataset group."""
    validate_dataset_name(name)
    datasets = _datasets(root)
    try:
        node = datasets[name]
    except KeyError:
        node = None
    except Exception:  # noqa: BLE001 - described below, from the store itself
        node = None
    if isinstance(node, zarr.Group):
        return node
    found = sync(_inspect_node(root.store, _dataset_path(root, name)))
    if found.kind == "absent":
        raise DatasetNotFoundError(f"dataset {name!r} is not in the store")
    reason = found.reason if found.kind != "group" else "its group cannot be opened"
    raise DamagedDatasetError(f"dataset {name!r} cannot be read: {reason}; {REPAIR}")


# ---------------------------------------------------------------------------------------- driver
def begin_dataset(root: zarr.Group, name: str, *, overwrite: bool = False) -> None:
    """Create the empty group of a dataset (no status yet). Driver only.

    An existing dataset of that name (or a torn one) is refused unless ``overwrite``, which
    deletes it. Whatever is not a lenspipe dataset group (an array, a foreign file) is never
    deleted: :class:`UnsafeStoreError`."""
    validate_dataset_name(name)
    datasets = _datasets(root)
    node = _check_replaceable(root, name)
    if node.kind != "absent":
        if not overwrite:
            raise StoreError(
                f"dataset {name!r} already exists in the store; pass overwrite=True to replace it"
            )
        sync(root.store.delete_dir(_dataset_path(root, name)))
    datasets.create_group(name)


def dataset_metadata(imaging: Imaging) -> dict[str, Any]:
    """The attributes that describe a prepared dataset (JSON-ready). Whether it stores an
    operator (``has_operator``) is added by the writers, which know."""
    mask = imaging.mask
    return {
        "pixel_scales": list(mask.pixel_scales),
        "origin": list(mask.origin),
        "shape_native": list(mask.shape_native),
        "n_pixels": int(imaging.shape_slim),
        "psf_shape": list(imaging.psf.shape_native) if imaging.psf is not None else None,
        "psf_normalized": bool(imaging.psf is not None and imaging.psf.is_normalized),
        "use_normalized_psf": bool(imaging.use_normalized_psf),
        "check_noise_map": bool(imaging.check_noise_map),
        "has_noise_covariance": imaging.noise_covariance_matrix is not None,
        "token": uuid.uuid4().hex,
    }


def write_dataset_arrays(
    root: zarr.Group,
    name: str,
    imaging: Imaging,
    *,
    batch_size: int | None = None,
    operator_storage: OperatorStorage = OperatorStorage(),
    recreate: bool = False,
    first_batch: np.ndarray | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """Create and fill the arrays of a dataset (inside its own group only) and, if
    ``batch_size`` is given, its empty operator arrays chunked by ``batch_size`` rows. Run by the
    dataset's prepare task: no other process writes in that group meanwhile.

    ``recreate=True`` also (re)creates the group itself, erasing anything it held, without
    attributes (a group without ``status`` is prepared again by a resume); otherwise the group
    must exist (:func:`begin_dataset`). Only a lenspipe dataset group (or a torn one: dataset
    keys only) is ever erased: an array or a foreign file at that path raises
    :class:`UnsafeStoreError`. ``first_batch``: the rows of operator batch 0, written with the
    arrays, then its marker. ``attributes``: written onto the group last (e.g.
    :func:`prepared_attributes`, with ``has_operator`` added), so a status never vouches for
    data not yet written.

    Every array carries a crc32c checksum after its compressor, and every chunk is stored (even
    one equal to the fill value): a missing or undecodable chunk is then always damage
    (:func:`check_dataset`).

    Every node is created in one batch of concurrent writes (:func:`zarr.create_hierarchy`),
    then every array filled in another, all in one call into Zarr's event loop: zarr-python's
    cost per node created one by one (~1-2 ms: existence checks, parent groups, its async
    machinery) was most of a small dataset's prepare time.
    """
    validate_dataset_name(name)
    datasets = _datasets(root)
    path = f"{datasets.path}/{name}"
    if recreate:
        _check_replaceable(root, name)
    elif name not in datasets:
        raise StoreError(f"dataset {name!r} is not in the store")
    arrays: dict[str, np.ndarray] = {
        "data": imaging.data.native.astype(np.float64),
        "noise_map": imaging.noise_map.native.astype(np.float64),
        "mask": np.asarray(imaging.mask, dtype=bool),
        "over_sample_size_lp": imaging.over_sample_size_lp.native.astype(np.int32),
        "over_sample_size_pixelization": imaging.over_sample_size_pixelization.native.astype(
            np.int32
        ),
        "grid": np.asarray(imaging.grid.slim, dtype=np.float64),
    }
    if imaging.psf is not None:
        arrays["psf"] = imaging.psf.kernel.native.astype(np.float64)
    if imaging.noise_covariance_matrix is not None:
        arrays["noise_covariance_matrix"] = np.asarray(imaging.noise_covariance_matrix)
    small = _SMALL_CODECS
    nodes: dict[str, Any] = {
        f"{path}/{key}": _array_metadata(
            values.shape,
            values.dtype,
            values.shape if values.size else (1,) * values.ndim,
            small,
            fill_value=0,
        )
        for key, values in arrays.items()
    }
    fills = {f"{path}/{key}": values for key, values in arrays.items()}
    if recreate:
        nodes[path] = GroupMetadata()
    marker = None
    if batch_size is not None:
        op_path = f"{path}/sparse_operator"
        nodes_op, fills_op = _operator_nodes(op_path, imaging, int(batch_size), operator_storage)
        nodes.update(nodes_op)
        fills.update(fills_op)
        if first_batch is not None:
            rows = min(int(batch_size), imaging.shape_slim)
            expected = (rows, nodes_op[f"{op_path}/values"].shape[1])
            if np.shape(first_batch) != expected:
                raise StoreError(
                    f"dataset {name!r}: batch 0 covers {expected[0]} rows of {expected[1]} "
                    f"offsets, got values of shape {np.shape(first_batch)}"
                )
            # the chunk of a marked batch is stored even if it equals the fill value
            fills[f"{op_path}/values"] = (operator_storage.encode(first_batch), slice(0, rows))
            marker = f"{op_path}/batches_done"
    elif first_batch is not None:
        raise StoreError(f"dataset {name!r}: operator batch 0 given without a batch_size")
    if attributes is not None:
        attributes = {**attributes, "has_operator": batch_size is not None}
    sync(_create_and_fill(root.store, path, nodes, fills, marker, attributes))


# the small arrays' codecs: Zstandard, then a crc32c checksum (a flipped bit or a torn file fails
# to decode instead of changing values silently: issue 11 found 47 of 60 flips silent without it)
_SMALL_CODECS = [ZstdCodec(level=1), Crc32cCodec()]


def _operator_nodes(
    path: str, imaging: Imaging, batch_size: int, storage: OperatorStorage
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if imaging.psf is None:
        raise StoreError("the dataset has no PSF: there is no sparse operator to store")
    if batch_size < 1:
        raise StoreError(f"batch_size must be >= 1, got {batch_size}")
    layout = OperatorLayout(np.asarray(imaging.mask), imaging.psf.shape_native)
    n, n_off = layout.n_pixels, layout.n_offsets
    n_batches = -(-n // batch_size)
    attrs = {
        "batch_size": batch_size,
        "n_batches": n_batches,
        "kernel_shape": list(imaging.psf.shape_native),
        "dtype": storage.dtype,
        "storage": asdict(storage),
    }
    offsets = np.asarray(layout.offsets)
    nodes = {
        path: GroupMetadata(attributes=attrs),
        # the storage settings ride on the values array too: a writer opens only that array
        f"{path}/values": _array_metadata(
            (n, n_off),
            np.dtype(storage.dtype),
            (batch_size, n_off),
            storage.compressors(),
            fill_value=0.0,
            attributes={"storage": asdict(storage)},
        ),
        f"{path}/offsets": _array_metadata(
            offsets.shape, offsets.dtype, (n_off, 2), [Crc32cCodec()], 0
        ),
        f"{path}/batches_done": _array_metadata(
            (n_batches,), np.dtype(np.uint8), (1,), [Crc32cCodec()], 0
        ),
    }
    return nodes, {f"{path}/offsets": offsets}


_METADATA_TEMPLATES: dict[tuple, dict[str, Any]] = {}


def _metadata_template(dtype: np.dtype, compressors: list | None, fill_value: Any) -> dict:
    """The metadata document ``zarr.create_array`` writes for this dtype, compressors and fill
    value (made once per process in memory, so ours never drifts from zarr's own choices, such
    as Blosc's typesize)."""
    codecs = None if compressors is None else [c.to_dict() for c in compressors]
    key = (np.dtype(dtype).str, json.dumps(codecs, sort_keys=True), repr(fill_value))
    if key not in _METADATA_TEMPLATES:
        array = zarr.create_array(
            zarr.storage.MemoryStore(),
            shape=(1,),
            chunks=(1,),
            dtype=np.dtype(dtype),
            compressors=compressors,
            fill_value=fill_value,
        )
        _METADATA_TEMPLATES[key] = array.metadata.to_dict()
    return _METADATA_TEMPLATES[key]


def _array_metadata(
    shape: tuple[int, ...],
    dtype: np.dtype,
    chunks: tuple[int, ...],
    compressors: list | None,
    fill_value: Any,
    attributes: dict[str, Any] | None = None,
) -> ArrayV3Metadata:
    document = dict(_metadata_template(dtype, compressors, fill_value))
    document.update(
        shape=tuple(int(v) for v in shape),
        chunk_grid={"name": "regular", "configuration": {"chunk_shape": tuple(chunks)}},
        attributes=dict(attributes or {}),
    )
    return ArrayV3Metadata.from_dict(document)


async def _create_and_fill(
    store,
    group_path: str,
    nodes: dict[str, Any],
    fills: dict[str, Any],
    marker: str | None,
    attributes: Mapping[str, Any] | None,
) -> None:
    """Create ``nodes``; fill arrays (``fills``: values, or (values, row slice)); then set batch
    0's marker; then write the group's attributes: each step starts once the previous is
    stored."""
    created = {}
    async for path, node in zarr.api.asynchronous.create_hierarchy(
        store=store, nodes=nodes, overwrite=True
    ):
        created[path] = node

    async def fill(path: str, content) -> None:
        # every chunk is stored, even one equal to the fill value (an all-False mask): a chunk
        # missing from a prepared dataset is then always damage
        array = created[path].with_config({"write_empty_chunks": True})
        if isinstance(content, tuple):
            values, rows = content
            await array.setitem(rows, values)
        else:
            await array.setitem(Ellipsis, content)

    await asyncio.gather(*(fill(path, content) for path, content in fills.items()))
    if marker is not None:
        await created[marker].setitem(0, 1)
    if attributes:
        group = created.get(group_path)
        if group is None:
            group = await zarr.api.asynchronous.open_group(store=store, path=group_path, mode="r+")
        await group.update_attributes(_jsonable(dict(attributes)))


def prepared_attributes(
    metadata: Mapping[str, Any],
    *,
    sources: Iterable[Source] = (),
    settings: Mapping[str, Any] | None = None,
    complete: bool = False,
    timings: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The attributes of a prepared dataset's group (JSON-ready): its metadata, status
    ``prepared`` (``complete`` if nothing is left to compute), sources, settings and their hash,
    software versions, timings."""
    settings = dict(settings or {})
    now = _now()
    attrs = {
        **_jsonable(dict(metadata)),
        "status": COMPLETE if complete else PREPARED,
        "sources": [_jsonable(asdict(s)) for s in sources],
        "settings": _jsonable(settings),
        "settings_hash": settings_hash(settings),
        "software": dict(_software()),
        "timings": _jsonable(dict(timings or {})),
        "error": None,
        "prepared": now,
    }
    if complete:
        attrs["completed"] = now
    return attrs


def record_prepared(
    root: zarr.Group,
    name: str,
    metadata: Mapping[str, Any],
    *,
    sources: Iterable[Source] = (),
    settings: Mapping[str, Any] | None = None,
    complete: bool = False,
    timings: Mapping[str, float] | None = None,
) -> None:
    """Write a dataset's attributes (:func:`prepared_attributes`) in one metadata write.

    ``complete=True`` records it ``complete`` in that same write, for a dataset with nothing left
    to compute (no operator, or every operator batch written)."""
    group = _dataset_group(root, name)
    if "has_operator" not in metadata:
        # what the group holds now is what this status vouches for
        metadata = {**metadata, "has_operator": "sparse_operator" in group}
    attrs = prepared_attributes(
        metadata, sources=sources, settings=settings, complete=complete, timings=timings
    )
    group.update_attributes(attrs)


def prepare_dataset(
    root: zarr.Group,
    name: str,
    imaging: Imaging,
    *,
    batch_size: int | None = None,
    operator_storage: OperatorStorage = OperatorStorage(),
    sources: Iterable[Source] = (),
    settings: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> zarr.Group:
    """Write a prepared (masked, over-sampled) dataset and, if ``batch_size`` is given, create its
    empty operator arrays chunked by ``batch_size`` rows; status becomes ``prepared`` last, so a
    dataset interrupted half-way has no status. In one process: :func:`begin_dataset`,
    :func:`write_dataset_arrays`, :func:`record_prepared`.
    """
    begin_dataset(root, name, overwrite=overwrite)
    write_dataset_arrays(
        root, name, imaging, batch_size=batch_size, operator_storage=operator_storage
    )
    metadata = {**dataset_metadata(imaging), "has_operator": batch_size is not None}
    record_prepared(root, name, metadata, sources=sources, settings=settings)
    return _dataset_group(root, name)


def finalize_dataset(
    root: zarr.Group,
    name: str,
    *,
    timings: Mapping[str, float] | None = None,
    verify_markers: bool = True,
) -> str:
    """Mark a dataset ``complete`` if every operator batch has its marker; raise
    :class:`StoreError` listing the missing batches otherwise. Driver only.

    ``verify_markers=False`` skips reading the markers, for a driver that has seen every batch's
    task return (a task returns only after its marker is written)."""
    group = _dataset_group(root, name)
    if verify_markers and "sparse_operator" in group:
        done = batches_done(root, name)
        if not done.all():
            missing = np.flatnonzero(~done)
            raise StoreError(
                f"dataset {name!r}: {missing.size} of {done.size} operator batches have no "
                f"completion marker (first: {missing[:10].tolist()}); resume the run"
            )
    attrs = {"status": COMPLETE, "error": None, "completed": _now()}
    if timings:
        attrs["timings"] = {**group.attrs.get("timings", {}), **_jsonable(dict(timings))}
    group.update_attributes(attrs)
    return COMPLETE


def reopen_dataset(root: zarr.Group, name: str, batches: Iterable[int]) -> None:
    """Set a complete dataset back to ``prepared`` because ``batches`` were found damaged (they
    are about to be recomputed); the repair is recorded in its ``repairs`` attribute. Driver
    only."""
    group = _dataset_group(root, name)
    repairs = list(group.attrs.get("repairs", []))
    repairs.append({"batches": [int(i) for i in batches], "found": _now()})
    group.update_attributes({"status": PREPARED, "repairs": repairs})


def mark_failed(root: zarr.Group, name: str, error: str) -> None:
    """Record that a dataset failed, with its error message (creates a bare group if the dataset
    was never prepared, and rewrites the group document of a torn one). Driver only.

    Raises :class:`UnsafeStoreError` if the dataset's path holds something that is not a
    lenspipe dataset group (left untouched), and :class:`StoreError` if the store cannot be
    written (e.g. no space left), both naming the dataset."""
    validate_dataset_name(name)
    _datasets(root)
    node = _check_replaceable(root, name)
    attrs = {"status": FAILED, "error": str(error), "failed": _now()}
    path = _dataset_path(root, name)
    try:
        if node.kind == "group":
            document = {**node.doc.get("attributes", {}), **attrs}
        else:
            document = attrs
        buffers = GroupMetadata(attributes=_jsonable(document)).to_buffer_dict(
            default_buffer_prototype()
        )
        sync(root.store.set(f"{path}/zarr.json", buffers["zarr.json"]))
    except Exception as err:  # noqa: BLE001 - ENOSPC, a read-only store: the caller reports it
        raise StoreError(
            f"dataset {name!r}: its failure could not be recorded in the store "
            f"({type(err).__name__}: {err}); the error was: {error}"
        ) from err


# ---------------------------------------------------------------------------------------- tasks
def write_operator_batch(root: zarr.Group, name: str, batch_index: int, values: np.ndarray) -> None:
    """Write rows of batch ``batch_index`` (whole chunks, so writers never share one), then its
    completion marker. Idempotent: a batch may be written twice (retried tasks)."""
    validate_dataset_name(name)
    prefix = f"{root.path}/" if root.path else ""
    path = f"{prefix}datasets/{name}/sparse_operator"
    try:
        # two metadata reads: the values array (chunking, storage) and the markers
        array = zarr.open_array(root.store, path=f"{path}/values", mode="r+", zarr_format=3)
        # every marked batch has a stored chunk, even one equal to the fill value: a missing
        # chunk under a marker is then always damage (verify_dataset)
        array = array.with_config({"write_empty_chunks": True})
        markers = zarr.open_array(root.store, path=f"{path}/batches_done", mode="r+", zarr_format=3)
    except (FileNotFoundError, KeyError, zarr.errors.NodeTypeValidationError) as err:
        raise StoreError(
            f"dataset {name!r} is not in the store, or has no sparse_operator array to write to"
        ) from err
    except Exception as err:  # noqa: BLE001 - a torn metadata document
        raise DamagedDatasetError(
            f"dataset {name!r}: the metadata of {path}/values or {path}/batches_done cannot be "
            f"read ({type(err).__name__}: {err}); {REPAIR}"
        ) from err
    batch_size = int(array.chunks[0])
    n_batches = int(markers.shape[0])
    if not 0 <= batch_index < n_batches:
        raise StoreError(f"dataset {name!r}: batch index {batch_index} outside [0, {n_batches})")
    start = batch_index * batch_size
    stop = min(start + batch_size, array.shape[0])
    values = np.asarray(values)
    if values.shape != (stop - start, array.shape[1]):
        raise StoreError(
            f"dataset {name!r}: batch {batch_index} covers rows [{start}, {stop}) of "
            f"{array.shape[1]} offsets, got values of shape {values.shape}; a write must cover "
            "exactly one chunk (partial-chunk writes from concurrent tasks lose data)"
        )
    array[start:stop] = OperatorStorage(**array.attrs["storage"]).encode(values)
    markers[batch_index] = 1


def _operator_array(root: zarr.Group, name: str, key: str) -> zarr.Array:
    """Array ``sparse_operator/<key>`` of a dataset: :class:`StoreError` if the dataset has no
    operator group, :class:`DamagedDatasetError` if the array is missing or unreadable."""
    group = _dataset_group(root, name)
    path = f"{_dataset_path(root, name)}/sparse_operator"
    try:
        has_operator = "sparse_operator" in group
    except Exception:  # noqa: BLE001 - a torn operator group document: the array may still open
        has_operator = True
    if not has_operator:
        raise StoreError(f"dataset {name!r} has no sparse_operator, so no batches")
    try:
        return zarr.open_array(root.store, path=f"{path}/{key}", mode="r", zarr_format=3)
    except Exception as err:  # noqa: BLE001 - missing or torn document
        raise DamagedDatasetError(
            f"dataset {name!r}: array {path}/{key} cannot be opened ({type(err).__name__}: "
            f"{err}); {REPAIR}"
        ) from err


def _read_markers(markers: zarr.Array) -> tuple[np.ndarray, dict[int, str]]:
    """(done, {batch: why its marker chunk does not decode}); a missing marker chunk is a batch
    not done (markers are written only once their batch is stored)."""
    try:
        return np.asarray(markers[...] != 0, dtype=bool), {}
    except Exception:  # noqa: BLE001 - a torn or corrupted marker chunk: find which
        n = int(markers.shape[0])
        encode = markers.metadata.encode_chunk_key
        what = {i: f"marker chunk {markers.path}/{encode((i,))}" for i in range(n)}
        bad = sync(_decode_each(markers, {i: slice(i, i + 1) for i in range(n)}, what))
        done = np.zeros(markers.shape, dtype=bool)
        good = [i for i in range(n) if i not in bad]
        if good:
            done[good] = markers.get_orthogonal_selection(np.asarray(good)) != 0
        return done, bad


def batches_done(root: zarr.Group, name: str) -> np.ndarray:
    """Boolean array, one entry per operator batch: True if its marker was written (an unreadable
    marker chunk counts as not written)."""
    return _read_markers(_operator_array(root, name, "batches_done"))[0]


def _chunk_keys(array: zarr.Array) -> list[str]:
    """The store key of every chunk of ``array``, in C order of the chunk grid."""
    encode = array.metadata.encode_chunk_key
    return [f"{array.path}/{encode(coords)}" for coords in np.ndindex(*array.cdata_shape)]


def _present_chunks(array: zarr.Array) -> set[str]:
    """Keys of the chunks of ``array`` that are stored (one listing)."""
    prefix = f"{array.path}/"
    return {key for key in sync(_list_prefix(array.store, prefix)) if key != f"{prefix}zarr.json"}


def _has_checksum(array: zarr.Array) -> bool:
    """Whether the array was written with a crc32c codec (every array since issue 11; before it
    only operator values): such arrays have every chunk stored, so a missing one is damage."""
    return any(isinstance(codec, Crc32cCodec) for codec in array.metadata.codecs)


# decoded chunks held at once while checking (bounds a check's memory for large batches)
_CHECK_BYTES = 256 * 2**20


async def _decode_each(
    array: zarr.Array, selections: Mapping[int, Any], what: Mapping[int, str]
) -> dict[int, str]:
    """``{index: reason}`` for the selections of ``array`` (one chunk each) that fail to
    decode, read concurrently (a few at a time: the decoded chunks are held in memory)."""
    chunk_bytes = int(np.prod(array.chunks)) * array.dtype.itemsize
    limit = asyncio.Semaphore(max(1, min(16, _CHECK_BYTES // max(chunk_bytes, 1))))
    source = array._async_array

    async def one(index: int, selection: Any) -> tuple[int, str | None]:
        async with limit:
            try:
                await source.getitem(selection)
            except Exception as err:  # noqa: BLE001 - any decoding failure is damage
                return index, f"{what[index]} cannot be decoded ({type(err).__name__}: {err})"
        return index, None

    found = await asyncio.gather(*(one(i, sel) for i, sel in selections.items()))
    return {index: why for index, why in found if why is not None}


def _damaged(
    array: zarr.Array, indexes: Iterable[int], present: set[str] | None = None
) -> dict[int, str]:
    """``{batch: reason}`` for batches of a values array whose chunk is missing or does not
    decode (checksum mismatch, truncated, wrong size). ``present``: the stored chunk keys, if
    already listed (else one listing). Chunks are read concurrently, in batch order."""
    batch_size = int(array.chunks[0])
    if present is None:
        present = _present_chunks(array)
    found: dict[int, str] = {}
    selections, what = {}, {}
    for index in (int(i) for i in indexes):
        key = f"{array.path}/{array.metadata.encode_chunk_key((index, 0))}"
        if key not in present:
            found[index] = f"chunk {key} is missing"
            continue
        start = index * batch_size
        selections[index] = slice(start, min(start + batch_size, array.shape[0]))
        what[index] = f"chunk {key}"
    found.update(sync(_decode_each(array, selections, what)))
    return dict(sorted(found.items()))


def damaged_batches(
    root: zarr.Group, name: str, indexes: Iterable[int] | None = None
) -> dict[int, str]:
    """``{batch: reason}`` for the given batches (default: every batch with a marker) of a
    dataset whose values chunk is missing or does not decode. Reads every chunk asked for."""
    group = _dataset_group(root, name)
    if "sparse_operator" not in group:
        return {}
    if indexes is None:
        indexes = np.flatnonzero(batches_done(root, name)).tolist()
    return _damaged(_operator_array(root, name, "values"), indexes)


def verify_dataset(
    location: StoreLike, name: str, *, storage_options: dict | None = None
) -> list[int]:
    """The operator batches of a dataset that are not intact: without a completion marker, or
    whose values chunk is missing or fails to decode (crc32c mismatch, truncated file). Reads and
    decodes every chunk (the cost of reading the whole operator once); ``[]`` if all are intact
    or the dataset has no operator. ``lenspipe run`` with ``run.verify: true`` recomputes them.
    :func:`check_dataset` checks every other array and node as well."""
    root = _as_root(location, storage_options)
    group = _dataset_group(root, name)
    if "sparse_operator" not in group:
        return []
    done = batches_done(root, name)
    bad = set(np.flatnonzero(~done).tolist())
    bad |= set(damaged_batches(root, name, np.flatnonzero(done).tolist()))
    return sorted(int(i) for i in bad)


def reset_batches(root: zarr.Group, name: str, indexes: Iterable[int]) -> None:
    """Clear the completion markers of ``indexes`` (damaged batches about to be recomputed), so
    that the store never claims them done in the meantime. Driver only."""
    indexes = [int(i) for i in indexes]
    if not indexes:
        return
    markers = _dataset_group(root, name)["sparse_operator"]["batches_done"]
    for index in indexes:
        markers[index] = 0


# ---------------------------------------------------------------------------------------- checks
@dataclass(frozen=True)
class DatasetCheck:
    """What :func:`check_dataset` found in one dataset.

    Attributes
    ----------
    name, status
        The dataset and its recorded status (``None``: no status, or unreadable attributes).
    missing_nodes
        Nodes its status promises that are not stored (paths relative to the dataset:
        ``"psf"``, ``"sparse_operator"``, ``"sparse_operator/values"``; ``"zarr.json"`` for
        the group's own document).
    damaged_arrays
        ``{node: reason}`` for every node but the operator values whose metadata or a chunk is
        missing or does not decode, or whose shape, dtype or content contradicts the
        attributes (offsets that differ from the band layout, a mask whose unmasked count is
        not ``n_pixels``). ``"zarr.json"``: the group document itself.
    damaged_batches
        Operator batches to (re)compute: without a completion marker, or whose marker chunk
        does not decode, or whose values chunk is missing or does not decode. In a complete
        dataset each is damage; in a prepared one the unmarked batches are also the work left
        (``pending_batches``). ``batch_reasons`` says why, per batch.
    pending_batches
        The batches of a ``prepared`` dataset whose marker is simply not set yet (work left to
        resume, not damage); a subset of ``damaged_batches``.
    """

    name: str
    status: str | None = None
    missing_nodes: list[str] = field(default_factory=list)
    damaged_arrays: dict[str, str] = field(default_factory=dict)
    damaged_batches: list[int] = field(default_factory=list)
    batch_reasons: dict[int, str] = field(default_factory=dict)
    pending_batches: list[int] = field(default_factory=list)

    @property
    def needs_prepare(self) -> bool:
        """True when the dataset must be prepared again from its inputs: anything other than
        operator batches is missing or damaged, or it was never prepared (no status, failed)."""
        return bool(self.missing_nodes or self.damaged_arrays) or self.status not in (
            PREPARED,
            COMPLETE,
        )

    @property
    def ok(self) -> bool:
        """True when the dataset is prepared or complete, intact, and no batch is left to
        (re)compute."""
        return not self.needs_prepare and not self.damaged_batches

    def problems(self) -> list[str]:
        """One line per problem found, for messages and ``lenspipe status``."""
        lines = [f"{node} is missing" for node in self.missing_nodes]
        lines += [
            f"{node}: {why}" if not why.startswith(node) else why
            for node, why in self.damaged_arrays.items()
        ]
        pending = set(self.pending_batches)
        damaged = [i for i in self.damaged_batches if i not in pending]
        if damaged:
            first = "; ".join(
                f"batch {i}: {self.batch_reasons[i]}"
                for i in damaged[:3]
                if i in self.batch_reasons
            )
            more = ", ..." if len(damaged) > 10 else ""
            lines.append(
                f"{len(damaged)} damaged operator batch(es) "
                f"[{', '.join(map(str, damaged[:10]))}{more}]" + (f" ({first})" if first else "")
            )
        if pending:
            lines.append(f"{len(pending)} operator batch(es) not computed yet")
        if self.status not in (PREPARED, COMPLETE) and not lines:
            lines.append(f"status {self.status!r}: not prepared")
        return lines

    def message(self) -> str:
        """``dataset 'x': <problems>; <repair advice>``, or ``dataset 'x': intact``."""
        if self.ok:
            return f"dataset {self.name!r}: intact"
        return f"dataset {self.name!r}: " + "; ".join(self.problems()) + f"; {REPAIR}"


def _promises_operator(attrs: Mapping[str, Any], present: bool) -> bool:
    """Whether a prepared dataset stores an operator: its ``has_operator`` attribute (written
    since issue 11), else its settings (``sparse_operator.enabled`` with a PSF), else whether
    the operator group is there (stores written before either)."""
    if isinstance(attrs.get("has_operator"), bool):
        return attrs["has_operator"]
    settings = attrs.get("settings")
    operator = settings.get("sparse_operator") if isinstance(settings, dict) else None
    if isinstance(operator, dict) and isinstance(operator.get("enabled"), bool):
        return operator["enabled"] and bool(attrs.get("psf_shape"))
    return present


def _expected_nodes(attrs: Mapping[str, Any], keys: set[str], path: str) -> list[str]:
    """The array nodes a prepared dataset's attributes promise (paths relative to it)."""
    nodes = list(_BASE_ARRAYS)
    if attrs.get("psf_shape"):
        nodes.append("psf")
    covariance = attrs.get("has_noise_covariance")
    if covariance or (covariance is None and f"{path}/noise_covariance_matrix/zarr.json" in keys):
        nodes.append("noise_covariance_matrix")
    if _promises_operator(attrs, f"{path}/sparse_operator/zarr.json" in keys):
        nodes += ["sparse_operator", *_OPERATOR_ARRAYS]
    return nodes


class _Checker:
    """The checks of :func:`check_dataset` on one prepared or complete dataset (arrays opened
    and read concurrently: one round trip's latency per step on an object store, not one per
    array)."""

    def __init__(self, root: zarr.Group, name: str, attrs: Mapping[str, Any], keys: set[str]):
        self.root, self.name, self.attrs, self.keys = root, name, attrs, keys
        self.path = _dataset_path(root, name)
        self.missing: list[str] = []
        self.damaged: dict[str, str] = {}
        self.batches: dict[int, str] = {}
        self.pending: list[int] = []

    async def open(self, node: str) -> zarr.Array | None:
        if f"{self.path}/{node}/zarr.json" not in self.keys:
            self.missing.append(node)
            return None
        try:
            array = await zarr.api.asynchronous.open_array(
                store=self.root.store, path=f"{self.path}/{node}", mode="r", zarr_format=3
            )
        except Exception as err:  # noqa: BLE001 - a torn document
            self.damaged[node] = f"metadata {node}/zarr.json does not decode ({err})"
            return None
        expected = _DTYPES.get(node)
        if expected is not None and array.dtype != np.dtype(expected):
            self.damaged[node] = f"dtype {array.dtype}, expected {expected}"
            return None
        return zarr.Array(array)

    async def read(self, node: str, array: zarr.Array, shape: tuple[int, ...] | None) -> Any:
        """The whole array, or ``None`` (recorded as damaged) if a chunk is missing (arrays
        with a checksum store every chunk) or does not decode, or its shape is wrong."""
        if shape is not None and tuple(array.shape) != tuple(shape):
            self.damaged[node] = f"shape {tuple(array.shape)}, expected {tuple(shape)}"
            return None
        if _has_checksum(array):
            missing = [key for key in _chunk_keys(array) if key not in self.keys]
            if missing:
                self.damaged[node] = f"chunk {missing[0]} is missing" + (
                    f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                )
                return None
        try:
            return await array._async_array.getitem(Ellipsis)
        except Exception as err:  # noqa: BLE001 - checksum mismatch, torn chunk
            self.damaged[node] = f"a chunk does not decode ({type(err).__name__}: {err})"
            return None

    async def load(self, node: str, shape: tuple[int, ...] | None) -> Any:
        array = await self.open(node)
        return None if array is None else await self.read(node, array, shape)

    def run(self) -> DatasetCheck:
        attrs = self.attrs
        try:
            shape = tuple(int(v) for v in attrs["shape_native"])
            n = int(attrs["n_pixels"])
            psf_shape = (
                tuple(int(v) for v in attrs["psf_shape"]) if attrs.get("psf_shape") else None
            )
        except (KeyError, TypeError, ValueError) as err:
            self.damaged["zarr.json"] = f"attributes incomplete or invalid ({err!r})"
            shape, n, psf_shape = None, None, None
        shapes = {key: shape for key in _BASE_ARRAYS}
        shapes.update(
            grid=(n, 2) if n is not None else None,
            psf=psf_shape,
            noise_covariance_matrix=(n, n) if n is not None else None,
        )
        nodes = _expected_nodes(attrs, self.keys, self.path)
        plain = [node for node in nodes if not node.startswith(OPERATOR_GROUP)]

        async def arrays() -> list[Any]:
            return await asyncio.gather(*(self.load(node, shapes.get(node)) for node in plain))

        values = dict(zip(plain, sync(arrays()), strict=True))
        mask = values.get("mask")
        if mask is not None and n is not None and int((~mask).sum()) != n:
            self.damaged["mask"] = f"{int((~mask).sum())} unmasked pixels, n_pixels is {n}"
            mask = None
        if OPERATOR_GROUP in nodes:
            self.check_operator(mask, n)
        # the order of the checks above, not of their completion
        order = {node: i for i, node in enumerate(nodes)}
        return DatasetCheck(
            self.name,
            attrs.get("status"),
            sorted(self.missing, key=lambda node: order.get(node, len(order))),
            dict(sorted(self.damaged.items(), key=lambda item: order.get(item[0], -1))),
            sorted(self.batches),
            dict(sorted(self.batches.items())),
            self.pending,
        )

    def _operator_attrs(self) -> tuple[int, int, tuple[int, ...]] | None:
        key = f"{self.path}/{OPERATOR_GROUP}/zarr.json"
        if key not in self.keys:
            self.missing.append(OPERATOR_GROUP)
            return None
        try:
            doc = json.loads(sync(_get_bytes(self.root.store, key)) or b"null")
            op_attrs = doc["attributes"]
            return (
                int(op_attrs["batch_size"]),
                int(op_attrs["n_batches"]),
                tuple(int(v) for v in op_attrs["kernel_shape"]),
            )
        except Exception as err:  # noqa: BLE001 - torn document or attributes
            self.damaged[OPERATOR_GROUP] = (
                "group document does not decode or lacks batch_size, n_batches, kernel_shape "
                f"({type(err).__name__}: {err})"
            )
            return None

    def check_operator(self, mask: np.ndarray | None, n: int | None) -> None:
        found = self._operator_attrs()
        batch_size, n_batches, kernel = found if found is not None else (None, None, None)

        async def arrays() -> list[zarr.Array | None]:
            return await asyncio.gather(*(self.open(node) for node in _OPERATOR_ARRAYS))

        values, offsets, markers = sync(arrays())
        layout = None
        if kernel is not None and mask is not None:
            layout = OperatorLayout(np.asarray(mask), kernel)
        if offsets is not None:
            stored = sync(
                self.read(
                    OFFSETS_NODE, offsets, (layout.n_offsets, 2) if layout is not None else None
                )
            )
            if stored is not None and layout is not None:
                if not np.array_equal(stored, layout.offsets):
                    self.damaged[OFFSETS_NODE] = (
                        "differ from the band layout of the mask and kernel_shape"
                    )
        if values is not None and n is not None and layout is not None:
            if tuple(values.shape) != (n, layout.n_offsets):
                self.damaged[VALUES_NODE] = (
                    f"shape {tuple(values.shape)}, expected {(n, layout.n_offsets)}"
                )
                values = None
            elif batch_size is not None and int(values.chunks[0]) != batch_size:
                self.damaged[VALUES_NODE] = (
                    f"chunks of {values.chunks[0]} rows, batch_size is {batch_size}"
                )
                values = None
        if markers is not None and n_batches is not None:
            expected = -(-n // batch_size) if n is not None and batch_size else n_batches
            if tuple(markers.shape) != (n_batches,) or n_batches != expected:
                self.damaged[MARKERS_NODE] = (
                    f"shape {tuple(markers.shape)}, n_batches is {n_batches} (expected {expected})"
                )
                markers = None
        if values is None or markers is None:
            return
        done, bad_markers = _read_markers(markers)
        for index in np.flatnonzero(~done).tolist():
            marker = f"{markers.path}/{markers.metadata.encode_chunk_key((index,))}"
            self.batches[index] = bad_markers.get(index, f"marker {marker} is not set")
        if self.attrs.get("status") != COMPLETE:
            self.pending = [i for i in np.flatnonzero(~done).tolist() if i not in bad_markers]
        self.batches.update(_damaged(values, np.flatnonzero(done).tolist(), self.keys))


def check_dataset(
    location: StoreLike, name: str, *, storage_options: dict | None = None
) -> DatasetCheck:
    """Check that a dataset holds everything its status promises, intact: every node (arrays,
    the operator group and its arrays when the dataset has an operator), every chunk of every
    array stored and decoding (crc32c), shapes and dtypes as the attributes say, the mask's
    unmasked count equal to ``n_pixels``, the stored offsets equal to the band layout, and each
    operator batch marked with its values chunk intact. Reads every chunk of every array once
    (one listing of the dataset's keys, then one read per chunk). Never writes.

    Raises :class:`DatasetNotFoundError` if nothing is stored under that name; every other
    problem is reported in the returned :class:`DatasetCheck` (a dataset without status, or
    failed, is returned with ``needs_prepare`` and nothing else checked)."""
    root = _as_root(location, storage_options)
    validate_dataset_name(name)
    _datasets(root)
    path = _dataset_path(root, name)
    node = sync(_inspect_node(root.store, path))
    if node.kind == "absent":
        raise DatasetNotFoundError(f"dataset {name!r} is not in the store")
    if node.kind == "foreign":
        return DatasetCheck(name, None, damaged_arrays={"zarr.json": node.reason})
    if node.kind == "torn":
        if node.reason.endswith("is missing"):
            return DatasetCheck(name, None, missing_nodes=["zarr.json"])
        return DatasetCheck(name, None, damaged_arrays={"zarr.json": node.reason})
    attrs = node.doc.get("attributes") or {}
    status = attrs.get("status")
    if status not in (PREPARED, COMPLETE):
        return DatasetCheck(name, status)
    keys = set(sync(_list_prefix(root.store, f"{path}/")))
    return _Checker(root, name, attrs, keys).run()


# ---------------------------------------------------------------------------------------- readers
def dataset_attrs(location: StoreLike, name: str, *, storage_options: dict | None = None) -> dict:
    """All attributes of one dataset (:class:`DatasetNotFoundError` if there is none,
    :class:`DamagedDatasetError` if its group cannot be read)."""
    root = open_store(location, storage_options=storage_options)
    return dict(_dataset_group(root, name).attrs)


def dataset_status(location: StoreLike, name: str, *, storage_options: dict | None = None) -> str:
    """``prepared``, ``complete`` or ``failed``; ``preparing`` for a group without status yet
    (its prepare task is running, or was interrupted: a resume prepares it again)."""
    return str(
        dataset_attrs(location, name, storage_options=storage_options).get("status") or PREPARING
    )


_SCAN_CONCURRENCY = 64


def scan_datasets(
    location: StoreLike, *, storage_options: dict | None = None
) -> dict[str, dict | StoreError]:
    """Every child of the store's ``datasets/``, sorted by name: its attributes, or the error
    saying why it cannot be read (a torn or missing group document, an array or a foreign file
    where a dataset group should be, a name lenspipe never writes). Never raises because of one
    dataset: children are listed and their documents read through the store API (one listing,
    then one read per dataset, up to 64 at a time), not zarr's ``group_keys()``, which stops at
    the first unreadable child."""
    root = _as_root(location, storage_options)
    _datasets(root)
    base = f"{_prefix(root)}datasets"
    store = root.store

    async def one(name: str, limit: asyncio.Semaphore) -> dict | StoreError:
        try:
            validate_dataset_name(name)
        except StoreError as err:
            return DamagedDatasetError(
                f"{base}/{name} is not a lenspipe dataset ({err}); move it out of the store"
            )
        async with limit:
            node = await _inspect_node(store, f"{base}/{name}")
        if node.kind == "group":
            return dict(node.doc.get("attributes") or {})
        if node.kind == "foreign":
            return DamagedDatasetError(
                f"dataset {name!r} cannot be read: {node.reason}; move it out of the store"
            )
        return DamagedDatasetError(f"dataset {name!r} cannot be read: {node.reason}; {REPAIR}")

    async def scan() -> dict[str, dict | StoreError]:
        names = [key for key in await _list_dir(store, f"{base}/") if key != "zarr.json"]
        limit = asyncio.Semaphore(_SCAN_CONCURRENCY)
        found = await asyncio.gather(*(one(name, limit) for name in names))
        return dict(zip(names, found, strict=True))

    return sync(scan())


def list_datasets(location: StoreLike, *, storage_options: dict | None = None) -> dict[str, str]:
    """``{name: status}`` of every dataset in the store, sorted by name (statuses as in
    :func:`dataset_status`; ``damaged`` for a child that cannot be read, see
    :func:`scan_datasets` and :func:`dataset_problems`)."""
    return {
        name: DAMAGED if isinstance(found, StoreError) else str(found.get("status") or PREPARING)
        for name, found in scan_datasets(location, storage_options=storage_options).items()
    }


def dataset_problems(location: StoreLike, *, storage_options: dict | None = None) -> dict[str, str]:
    """``{name: reason}`` for every damaged (unreadable) or failed dataset, sorted by name: the
    scan's error, or the failed dataset's recorded ``error``."""
    out = {}
    for name, found in scan_datasets(location, storage_options=storage_options).items():
        if isinstance(found, StoreError):
            out[name] = str(found)
        elif found.get("status") == FAILED:
            out[name] = str(found.get("error") or "failed (no error recorded)")
    return out


def _readable_group(root: zarr.Group, name: str, allow_incomplete: bool) -> zarr.Group:
    group = _dataset_group(root, name)
    status = group.attrs.get("status")
    if status != COMPLETE and not allow_incomplete:
        error = group.attrs.get("error")
        reason = f" ({error})" if error else ""
        raise DatasetNotCompleteError(
            f"dataset {name!r} has status {status!r}{reason}, not 'complete'; pass "
            "allow_incomplete=True to read it anyway"
        )
    return group


class _Reader:
    """Reads one dataset's arrays, turning every failure into a :class:`DamagedDatasetError`
    naming dataset, node and repair. For a prepared or complete dataset it first checks, from
    one listing of the dataset's keys, that every node its attributes promise is stored and,
    for arrays with a checksum, every chunk (operator values: every chunk of a complete
    dataset), and that a complete dataset's markers all decode and are set."""

    def __init__(self, root: zarr.Group, name: str, group: zarr.Group):
        self.root, self.name, self.group = root, name, group
        self.attrs = dict(group.attrs)
        self.path = _dataset_path(root, name)
        self.status = self.attrs.get("status")
        self.keys: set[str] | None = None
        self.nodes: list[str] = []
        self.values_checked = False
        if self.status in (PREPARED, COMPLETE):
            self.keys = set(sync(_list_prefix(root.store, f"{self.path}/")))
            self.nodes = _expected_nodes(self.attrs, self.keys, self.path)
            missing = [n for n in self.nodes if f"{self.path}/{n}/zarr.json" not in self.keys]
            if missing:
                one = len(missing) == 1
                self.fail(
                    None,
                    f"{'node' if one else 'nodes'} "
                    f"{', '.join(f'{self.path}/{n}' for n in missing)} {'is' if one else 'are'} "
                    f"missing, though its status {self.status!r} promises "
                    f"{'it' if one else 'them'}",
                )

    def fail(self, node: str | None, why: str, err: BaseException | None = None):
        """Raise :class:`DamagedDatasetError` about ``node`` (``""``: the group, ``None``: no
        single node)."""
        where = "" if node is None else f"{self.path}/{node}: " if node else f"{self.path}: "
        raise DamagedDatasetError(f"dataset {self.name!r}: {where}{why}; {REPAIR}") from err

    def has(self, node: str) -> bool:
        if self.keys is not None:
            return node in self.nodes
        try:
            return node in self.group
        except Exception as err:  # noqa: BLE001 - a torn document
            self.fail(node, f"metadata does not decode ({type(err).__name__}: {err})", err)

    def array(self, node: str) -> zarr.Array:
        try:
            array = zarr.open_array(
                self.root.store, path=f"{self.path}/{node}", mode="r", zarr_format=3
            )
        except Exception as err:  # noqa: BLE001 - missing or torn document
            self.fail(node, f"cannot be opened ({type(err).__name__}: {err})", err)
        if self.keys is not None and _has_checksum(array):
            skip = node == "sparse_operator/batches_done" or (
                node == "sparse_operator/values" and self.status != COMPLETE
            )
            missing = [] if skip else [k for k in _chunk_keys(array) if k not in self.keys]
            if missing and node == "sparse_operator/values":
                # name every damaged batch at once (decodes the others: damage only)
                _CheckedArray(array, self.name, True)._raise_if_damaged(None)
            if missing:
                self.fail(node, f"chunk {missing[0]} is missing ({len(missing)} missing)")
            self.values_checked = self.values_checked or node == "sparse_operator/values"
        return array

    def read(self, node: str) -> np.ndarray:
        array = self.array(node)
        try:
            return array[...]
        except Exception as err:  # noqa: BLE001 - checksum mismatch, torn chunk
            self.fail(node, f"a chunk does not decode ({type(err).__name__}: {err})", err)

    def check_markers(self) -> None:
        if self.status != COMPLETE:
            return
        markers = self.array("sparse_operator/batches_done")
        done, bad = _read_markers(markers)
        if bad:
            first = next(iter(bad.items()))
            self.fail(
                "sparse_operator/batches_done",
                f"{len(bad)} marker chunk(s) do not decode (batch {first[0]}: {first[1]})",
            )
        if not done.all():
            missing = np.flatnonzero(~done)
            self.fail(
                "sparse_operator/batches_done",
                f"{missing.size} operator batch(es) of a complete dataset have no completion "
                f"marker (first: {missing[:10].tolist()})",
            )


def open_imaging(
    location: StoreLike,
    name: str,
    *,
    allow_incomplete: bool = False,
    storage_options: dict | None = None,
) -> Imaging:
    """Read a dataset back as an ``Imaging`` equal to the one written (arrays bit for bit), with
    its ``sparse_operator`` attached lazily (values read on first use) if the store has one.

    Raises :class:`DatasetNotFoundError`, :class:`DatasetNotCompleteError` (unless
    ``allow_incomplete``), or :class:`DamagedDatasetError` naming dataset, node and repair: a
    node its attributes promise is missing (e.g. ``sparse_operator``), a chunk of an array is
    missing or does not decode (checksum), a complete dataset's markers are not all set.
    Damaged operator values are reported when read (:class:`DamagedDatasetError`)."""
    root = open_store(location, storage_options=storage_options)
    group = _readable_group(root, name, allow_incomplete)
    reader = _Reader(root, name, group)
    attrs = reader.attrs
    try:
        pixel_scales, origin = tuple(attrs["pixel_scales"]), tuple(attrs["origin"])
    except (KeyError, TypeError) as err:
        reader.fail("zarr.json", f"attributes lack pixel_scales or origin ({err!r})", err)
    arrays = {node: reader.read(node) for node in _BASE_ARRAYS}
    if reader.has("psf"):
        arrays["psf"] = reader.read("psf")
    if reader.has("noise_covariance_matrix"):
        arrays["noise_covariance_matrix"] = reader.read("noise_covariance_matrix")
    has_operator = reader.has("sparse_operator")
    if has_operator:
        reader.check_markers()
    try:
        mask = Mask2D(arrays["mask"], pixel_scales, origin)
        psf = None
        if "psf" in arrays:
            psf = (
                Convolver.from_normalized_kernel(arrays["psf"], mask.pixel_scales)
                if attrs.get("psf_normalized")
                else Convolver(arrays["psf"], pixel_scales=mask.pixel_scales)
            )
        imaging = Imaging(
            Array2D(arrays["data"], mask),
            Array2D(arrays["noise_map"], mask),
            psf,
            noise_covariance_matrix=arrays.get("noise_covariance_matrix"),
            over_sample_size_lp=Array2D(arrays["over_sample_size_lp"], mask),
            over_sample_size_pixelization=Array2D(arrays["over_sample_size_pixelization"], mask),
            use_normalized_psf=bool(attrs.get("use_normalized_psf", True)),
            check_noise_map=bool(attrs.get("check_noise_map", True)),
            name=name,
        )
    except (ValueError, TypeError) as err:  # PipelineError subclasses: shapes disagree
        reader.fail("", f"its arrays do not form a valid dataset ({err})", err)
    if has_operator:
        imaging = imaging._replace(
            sparse_operator=_operator_from_reader(reader, imaging),
            check_noise_map=imaging.check_noise_map,
        )
    return imaging


def open_operator(
    location: StoreLike,
    name: str,
    *,
    allow_incomplete: bool = False,
    storage_options: dict | None = None,
) -> ImagingSparseOperator:
    """The dataset's sparse operator, values read lazily from the store (errors as
    :func:`open_imaging`; :class:`StoreError` if the dataset has no operator)."""
    imaging = open_imaging(
        location, name, allow_incomplete=allow_incomplete, storage_options=storage_options
    )
    if imaging.sparse_operator is None:
        raise StoreError(f"dataset {name!r} has no sparse operator in the store")
    return imaging.sparse_operator


def _operator_from_reader(reader: _Reader, imaging: Imaging) -> ImagingSparseOperator:
    try:
        path = f"{reader.path}/sparse_operator"
        group = zarr.open_group(reader.root.store, path=path, mode="r", zarr_format=3)
        op_attrs = dict(group.attrs)
        kernel_shape = tuple(op_attrs["kernel_shape"])
    except Exception as err:  # noqa: BLE001 - torn document, attributes lost
        reader.fail("sparse_operator", f"group document or kernel_shape unreadable ({err!r})", err)
    layout = OperatorLayout(np.asarray(imaging.mask), kernel_shape)
    stored_offsets = reader.read("sparse_operator/offsets")
    if not np.array_equal(stored_offsets, layout.offsets):
        reader.fail(
            "sparse_operator/offsets",
            "the stored offsets differ from this lenspipe's band layout of the mask and "
            "kernel_shape",
        )
    values = reader.array("sparse_operator/values")
    if tuple(values.shape) != (layout.n_pixels, layout.n_offsets):
        reader.fail(
            "sparse_operator/values",
            f"shape {tuple(values.shape)}, expected {(layout.n_pixels, layout.n_offsets)}",
        )
    inputs = OperatorInputs(
        layout,
        imaging.psf.kernel.native,
        inverse_variance_from(imaging.noise_map.native, np.asarray(imaging.mask)),
    )
    pwd = psf_weighted_data_from(imaging.data.native, inputs)
    checked = _CheckedArray(
        values, imaging.name, reader.status == COMPLETE, chunks_checked=reader.values_checked
    )
    return ImagingSparseOperator(checked, layout, pwd)


class _CheckedArray(zarr.Array):
    """A stored values array (a ``zarr.Array``) whose reads turn damage into a
    :class:`DamagedDatasetError` naming the dataset and the damaged batches: a chunk that fails
    to decode (instead of a codec's bare error or, for a torn chunk without checksum, garbage)
    and, for a complete dataset read whole, a missing chunk (instead of silent zeros; one
    listing, skipped when the reader already checked every chunk is stored)."""

    def __init__(
        self,
        array: zarr.Array | Any,
        dataset: str | None = None,
        complete: bool = False,
        *,
        chunks_checked: bool = False,
    ):
        super().__init__(getattr(array, "_async_array", array))
        self.dataset, self.complete, self.chunks_checked = dataset, complete, chunks_checked

    def __getitem__(self, selection):
        try:
            values = super().__getitem__(selection)
        except Exception as err:  # noqa: BLE001 - find which chunks are damaged, then report
            self._raise_if_damaged(err)
            raise DamagedDatasetError(
                f"dataset {self.dataset!r}: operator values {self.path} cannot be read "
                f"({type(err).__name__}: {err}); {REPAIR}"
            ) from err
        if (
            self.complete
            and not self.chunks_checked
            and selection is Ellipsis
            and self.nchunks_initialized < self.nchunks
        ):
            self._raise_if_damaged(None)
        return values

    def _raise_if_damaged(self, err: BaseException | None) -> None:
        plain = zarr.Array(self._async_array)
        damaged = _damaged(plain, range(plain.cdata_shape[0]))
        if damaged:
            first = "; ".join(f"batch {i}: {why}" for i, why in list(damaged.items())[:3])
            raise DamagedDatasetError(
                f"dataset {self.dataset!r}: {len(damaged)} damaged operator batch(es) "
                f"{sorted(damaged)[:10]} ({first}); rerun the survey with run.verify: true "
                "(`lenspipe run CONFIG --verify`) to recompute them"
            ) from err


# ---------------------------------------------------------------------------------------- users
def write_imaging(
    location: StoreLike,
    name: str,
    imaging: Imaging,
    *,
    batch_size: int = 1024,
    operator_storage: OperatorStorage = OperatorStorage(),
    sources: Iterable[Source] = (),
    settings: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    storage_options: dict | None = None,
) -> None:
    """Write a dataset built in Python (arrays, and its operator if it carries one) as a complete
    dataset, in one process."""
    root = create_store(location, storage_options=storage_options)
    operator = imaging.sparse_operator
    prepare_dataset(
        root,
        name,
        imaging,
        batch_size=batch_size if operator is not None else None,
        operator_storage=operator_storage,
        sources=sources,
        settings=settings,
        overwrite=overwrite,
    )
    if operator is not None:
        values = operator.values
        for index, start in enumerate(range(0, operator.n_pixels, batch_size)):
            write_operator_batch(root, name, index, values[start : start + batch_size])
    finalize_dataset(root, name)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return os.fspath(value)
    return value
