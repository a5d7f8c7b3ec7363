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
from zarr.core.group import GroupMetadata
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.core.sync import sync

from pipeline.exc import StoreError
from pipeline.imaging import Array2D, Convolver, Imaging, Mask2D
from pipeline.operators import (
    ImagingSparseOperator,
    OperatorInputs,
    OperatorLayout,
    psf_weighted_data_from,
)

__all__ = [
    "SCHEMA_VERSION",
    "OperatorStorage",
    "Source",
    "batches_done",
    "begin_dataset",
    "create_store",
    "damaged_batches",
    "dataset_metadata",
    "dataset_attrs",
    "dataset_status",
    "file_sha256",
    "finalize_dataset",
    "list_datasets",
    "mark_failed",
    "open_imaging",
    "open_operator",
    "open_store",
    "prepare_dataset",
    "prepared_attributes",
    "record_prepared",
    "reopen_dataset",
    "reset_batches",
    "settings_hash",
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
StoreLike = str | os.PathLike | zarr.abc.store.Store | zarr.Group

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")


# ---------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class OperatorStorage:
    """How operator values are stored.

    Parameters
    ----------
    dtype
        ``"float64"`` or ``"float32"`` (values are always computed in float64; float32 storage has
        a relative error <= 2**-24 per entry).
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
        (``numcodecs.BitRound``): maximum relative error ``2**-(keep_bits + 1)``; float64 has 52
        bits, float32 23. The rounded values compress much better.
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
        less in a task's peak memory)."""
        out = np.asarray(values).astype(self.dtype, copy=self.keep_bits is not None)
        if self.keep_bits is not None:
            from numcodecs import BitRound

            # applied before writing rather than as a Zarr filter: BitRound is not in the Zarr v3
            # spec, and as a filter every reader would need numcodecs (and get a warning)
            out = BitRound(keepbits=self.keep_bits).encode(out).view(self.dtype).reshape(out.shape)
        return out


@dataclass(frozen=True)
class Source:
    """One input file of a dataset: its role (data, noise_map, psf, mask), path, HDU, sha256."""

    role: str
    path: str
    hdu: int | str = 0
    sha256: str | None = field(default=None)

    @classmethod
    def from_file(cls, role: str, path: str | os.PathLike, hdu: int | str = 0) -> Source:
        return cls(role, os.fspath(path), hdu, file_sha256(path))


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def settings_hash(settings: Mapping[str, Any]) -> str:
    """Hex sha256 of the settings as canonical JSON (sorted keys)."""
    text = json.dumps(_jsonable(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def validate_dataset_name(name: str) -> str:
    """Return ``name`` if it is safe as a store key (letters, digits, ``._+-``; no path
    separators, no ``..``; at most 200 characters), else raise :class:`StoreError`."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise StoreError(
            f"dataset name {name!r} is not a safe store key: use letters, digits and '._+-', "
            "start with a letter or digit, no path separators or '..', at most 200 characters"
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


def _describe(location: Any) -> str:
    return repr(os.fspath(location)) if isinstance(location, str | os.PathLike) else repr(location)


def _check_schema(root: zarr.Group, location: Any) -> None:
    meta = root.attrs.get("lenspipe")
    if not isinstance(meta, dict) or "schema_version" not in meta:
        raise StoreError(f"{_describe(location)} is a Zarr group but not a lenspipe store")
    version = meta["schema_version"]
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise StoreError(
            f"{_describe(location)} was written with store schema_version {version!r}; this "
            f"lenspipe reads versions <= {SCHEMA_VERSION}: upgrade lenspipe to read it"
        )


def create_store(location: StoreLike, *, storage_options: dict | None = None) -> zarr.Group:
    """Open the store at ``location`` for writing, creating it (schema attributes, ``datasets``
    group) if it does not exist. Driver only."""
    root = _open_group(location, "a", storage_options)
    if "lenspipe" not in root.attrs:
        if len(list(root.keys())):
            raise StoreError(
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


def _datasets(root: zarr.Group) -> zarr.Group:
    try:
        return root["datasets"]
    except KeyError:
        raise StoreError("the store has no 'datasets' group") from None


def _dataset_group(root: zarr.Group, name: str) -> zarr.Group:
    validate_dataset_name(name)
    try:
        return _datasets(root)[name]
    except KeyError:
        raise StoreError(f"dataset {name!r} is not in the store") from None


# ---------------------------------------------------------------------------------------- driver
def begin_dataset(root: zarr.Group, name: str, *, overwrite: bool = False) -> None:
    """Create the empty group of a dataset (no status yet). Driver only.

    An existing dataset of that name is refused unless ``overwrite``, which deletes it.
    """
    validate_dataset_name(name)
    datasets = _datasets(root)
    if name in datasets:
        if not overwrite:
            raise StoreError(
                f"dataset {name!r} already exists in the store; pass overwrite=True to replace it"
            )
        del datasets[name]
    datasets.create_group(name)


def dataset_metadata(imaging: Imaging) -> dict[str, Any]:
    """The attributes that describe a prepared dataset (JSON-ready)."""
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
    must exist (:func:`begin_dataset`). ``first_batch``: the rows of operator batch 0, written
    with the arrays, then its marker. ``attributes``: written onto the group last (e.g.
    :func:`prepared_attributes`), so a status never vouches for data not yet written.

    Every node is created in one batch of concurrent writes (:func:`zarr.create_hierarchy`),
    then every array filled in another, all in one call into Zarr's event loop: zarr-python's
    cost per node created one by one (~1-2 ms: existence checks, parent groups, its async
    machinery) was most of a small dataset's prepare time.
    """
    validate_dataset_name(name)
    datasets = _datasets(root)
    path = f"{datasets.path}/{name}"
    if not recreate and name not in datasets:
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
    small = [ZstdCodec(level=1)]
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
    sync(_create_and_fill(root.store, path, nodes, fills, marker, attributes))


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
        f"{path}/offsets": _array_metadata(offsets.shape, offsets.dtype, (n_off, 2), None, 0),
        f"{path}/batches_done": _array_metadata((n_batches,), np.dtype(np.uint8), (1,), None, 0),
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
        if isinstance(content, tuple):
            values, rows = content
            array = created[path].with_config({"write_empty_chunks": True})
            await array.setitem(rows, values)
        else:
            await created[path].setitem(Ellipsis, content)

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
    attrs = prepared_attributes(
        metadata, sources=sources, settings=settings, complete=complete, timings=timings
    )
    _dataset_group(root, name).update_attributes(attrs)


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
    record_prepared(root, name, dataset_metadata(imaging), sources=sources, settings=settings)
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
    was never prepared). Driver only."""
    validate_dataset_name(name)
    datasets = _datasets(root)
    group = datasets[name] if name in datasets else datasets.create_group(name)
    group.update_attributes({"status": FAILED, "error": str(error), "failed": _now()})


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


def batches_done(root: zarr.Group, name: str) -> np.ndarray:
    """Boolean array, one entry per operator batch: True if its marker was written (an unreadable
    marker chunk counts as not written)."""
    group = _dataset_group(root, name)
    if "sparse_operator" not in group:
        raise StoreError(f"dataset {name!r} has no sparse_operator, so no batches")
    markers = group["sparse_operator"]["batches_done"]
    try:
        return np.asarray(markers[...], dtype=bool)
    except Exception:  # noqa: BLE001 - a torn marker chunk: read them one by one
        done = np.zeros(markers.shape, dtype=bool)
        for index in range(markers.shape[0]):
            try:
                done[index] = bool(markers[index])
            except Exception:  # noqa: BLE001 - unreadable: not done, the batch is recomputed
                done[index] = False
        return done


def _damaged(array: zarr.Array, indexes: Iterable[int]) -> dict[int, str]:
    """``{batch: reason}`` for batches of a values array whose chunk is missing or does not
    decode (checksum mismatch, truncated, wrong size)."""
    batch_size = int(array.chunks[0])
    found: dict[int, str] = {}
    for index in indexes:
        key = f"{array.path}/{array.metadata.encode_chunk_key((int(index), 0))}"
        if not sync(array.store.exists(key)):
            found[int(index)] = f"chunk {key} is missing"
            continue
        start = int(index) * batch_size
        try:
            array[start : min(start + batch_size, array.shape[0])]
        except Exception as err:  # noqa: BLE001 - any decoding failure is damage
            found[int(index)] = f"chunk {key} cannot be decoded ({type(err).__name__}: {err})"
    return found


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
    return _damaged(group["sparse_operator"]["values"], indexes)


def verify_dataset(
    location: StoreLike, name: str, *, storage_options: dict | None = None
) -> list[int]:
    """The operator batches of a dataset that are not intact: without a completion marker, or
    whose values chunk is missing or fails to decode (crc32c mismatch, truncated file). Reads and
    decodes every chunk (the cost of reading the whole operator once); ``[]`` if all are intact
    or the dataset has no operator. ``lenspipe run`` with ``run.verify: true`` recomputes them."""
    root = (
        location
        if isinstance(location, zarr.Group)
        else open_store(location, storage_options=storage_options)
    )
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


# ---------------------------------------------------------------------------------------- readers
def dataset_attrs(location: StoreLike, name: str, *, storage_options: dict | None = None) -> dict:
    """All attributes of one dataset."""
    root = open_store(location, storage_options=storage_options)
    return dict(_dataset_group(root, name).attrs)


def dataset_status(location: StoreLike, name: str, *, storage_options: dict | None = None) -> str:
    """``prepared``, ``complete`` or ``failed``; ``preparing`` for a group without status yet
    (its prepare task is running, or was interrupted: a resume prepares it again)."""
    return str(
        dataset_attrs(location, name, storage_options=storage_options).get("status") or PREPARING
    )


def list_datasets(location: StoreLike, *, storage_options: dict | None = None) -> dict[str, str]:
    """``{name: status}`` of every dataset in the store, sorted by name (statuses as in
    :func:`dataset_status`)."""
    root = open_store(location, storage_options=storage_options)
    datasets = _datasets(root)
    return {
        key: str(datasets[key].attrs.get("status") or PREPARING)
        for key in sorted(datasets.group_keys())
    }


def _readable_group(root: zarr.Group, name: str, allow_incomplete: bool) -> zarr.Group:
    group = _dataset_group(root, name)
    status = group.attrs.get("status")
    if status != COMPLETE and not allow_incomplete:
        error = group.attrs.get("error")
        reason = f" ({error})" if error else ""
        raise StoreError(
            f"dataset {name!r} has status {status!r}{reason}, not 'complete'; pass "
            "allow_incomplete=True to read it anyway"
        )
    return group


def open_imaging(
    location: StoreLike,
    name: str,
    *,
    allow_incomplete: bool = False,
    storage_options: dict | None = None,
) -> Imaging:
    """Read a dataset back as an ``Imaging`` equal to the one written (arrays bit for bit), with
    its ``sparse_operator`` attached lazily (values read on first use) if the store has one."""
    root = open_store(location, storage_options=storage_options)
    group = _readable_group(root, name, allow_incomplete)
    attrs = group.attrs
    mask = Mask2D(group["mask"][...], tuple(attrs["pixel_scales"]), tuple(attrs["origin"]))
    psf = None
    if "psf" in group:
        kernel = group["psf"][...]
        psf = (
            Convolver.from_normalized_kernel(kernel, mask.pixel_scales)
            if attrs.get("psf_normalized")
            else Convolver(kernel, pixel_scales=mask.pixel_scales)
        )
    covariance = (
        group["noise_covariance_matrix"][...] if "noise_covariance_matrix" in group else None
    )
    imaging = Imaging(
        Array2D(group["data"][...], mask),
        Array2D(group["noise_map"][...], mask),
        psf,
        noise_covariance_matrix=covariance,
        over_sample_size_lp=Array2D(group["over_sample_size_lp"][...], mask),
        over_sample_size_pixelization=Array2D(group["over_sample_size_pixelization"][...], mask),
        use_normalized_psf=bool(attrs.get("use_normalized_psf", True)),
        check_noise_map=bool(attrs.get("check_noise_map", True)),
        name=name,
    )
    if "sparse_operator" in group:
        imaging = imaging._replace(
            sparse_operator=_operator_from_group(group, imaging),
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
    """The dataset's sparse operator, values read lazily from the store."""
    imaging = open_imaging(
        location, name, allow_incomplete=allow_incomplete, storage_options=storage_options
    )
    if imaging.sparse_operator is None:
        raise StoreError(f"dataset {name!r} has no sparse operator in the store")
    return imaging.sparse_operator


def _operator_from_group(group: zarr.Group, imaging: Imaging) -> ImagingSparseOperator:
    op = group["sparse_operator"]
    layout = OperatorLayout(np.asarray(imaging.mask), tuple(op.attrs["kernel_shape"]))
    stored_offsets = op["offsets"][...]
    if not np.array_equal(stored_offsets, layout.offsets):
        raise StoreError("the stored operator offsets differ from this lenspipe's band layout")
    inputs = OperatorInputs(layout, imaging.psf.kernel.native, _inverse_variance(imaging))
    pwd = psf_weighted_data_from(imaging.data.native, inputs)
    values = _CheckedArray(op["values"], imaging.name, group.attrs.get("status") == COMPLETE)
    return ImagingSparseOperator(values, layout, pwd)


class _CheckedArray(zarr.Array):
    """A stored values array (a ``zarr.Array``) whose reads turn damage into a
    :class:`StoreError` naming the dataset and the damaged batches: a chunk that fails to decode
    (instead of a codec's bare error or, for a torn chunk without checksum, garbage) and, for a
    complete dataset read whole, a missing chunk (instead of silent zeros; one listing)."""

    def __init__(self, array: zarr.Array | Any, dataset: str | None = None, complete: bool = False):
        super().__init__(getattr(array, "_async_array", array))
        self.dataset, self.complete = dataset, complete

    def __getitem__(self, selection):
        try:
            values = super().__getitem__(selection)
        except Exception as err:  # noqa: BLE001 - find which chunks are damaged, then report
            self._raise_if_damaged(err)
            raise
        if self.complete and selection is Ellipsis and self.nchunks_initialized < self.nchunks:
            self._raise_if_damaged(None)
        return values

    def _raise_if_damaged(self, err: BaseException | None) -> None:
        plain = zarr.Array(self._async_array)
        damaged = _damaged(plain, range(plain.cdata_shape[0]))
        if damaged:
            first = "; ".join(f"batch {i}: {why}" for i, why in list(damaged.items())[:3])
            raise StoreError(
                f"dataset {self.dataset!r}: {len(damaged)} damaged operator batch(es) "
                f"{sorted(damaged)[:10]} ({first}); rerun the survey with run.verify: true to "
                "recompute them"
            ) from err


def _inverse_variance(imaging: Imaging) -> np.ndarray:
    noise = imaging.noise_map.native
    out = np.zeros_like(noise)
    unmasked = ~np.asarray(imaging.mask)
    out[unmasked] = 1.0 / noise[unmasked] ** 2
    return out


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
