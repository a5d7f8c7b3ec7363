"""Zarr plumbing: the only module of lenspipe that touches Zarr's internals.

``zarr.core`` (the event loop's ``sync``, buffer prototypes, metadata classes) and the private
attributes of ``zarr.Array`` are reached from here only, so a Zarr upgrade that moves them breaks
one module. Documents and listings are read through the store API, not through zarr's node
objects: one torn document then fails only the dataset that holds it, with a message naming it,
never a listing of the whole store (zarr's ``group_keys()`` stops at the first unreadable child).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, TypeVar

import numpy as np
import zarr
import zarr.api.asynchronous
import zarr.errors
import zarr.storage
from zarr.abc.store import Store
from zarr.codecs import Crc32cCodec
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.core.group import GroupMetadata
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.core.sync import sync as _sync

from pipeline.exc import StoreError, StoreNotFoundError
from pipeline.io.store.schema import DATASET_KEY, jsonable

__all__ = ["StoreLike"]

StoreLike = str | os.PathLike[str] | Store | zarr.Group
T = TypeVar("T")


def sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on Zarr's event loop and return its result."""
    return _sync(coroutine)


@lru_cache(maxsize=1)
def software() -> dict[str, str]:
    """The versions of lenspipe and of the libraries that wrote a store or dataset."""
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


def describe(location: Any) -> str:
    """A location as messages show it: a path's repr, else the object's repr."""
    return repr(os.fspath(location)) if isinstance(location, str | os.PathLike) else repr(location)


def open_group(location: StoreLike, mode: str, storage_options: dict | None) -> zarr.Group:
    """``zarr.open_group`` with every failure a :class:`StoreError` naming the location
    (:class:`StoreNotFoundError` when reading where nothing is stored)."""
    if isinstance(location, zarr.Group):
        return location
    if isinstance(location, os.PathLike):
        location = os.fspath(location)
    kwargs = {"storage_options": storage_options} if storage_options else {}
    try:
        return zarr.open_group(location, mode=mode, **kwargs)  # type: ignore[arg-type]
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as err:
        if mode == "r" or mode == "r+":
            raise StoreNotFoundError(f"no Zarr store at {describe(location)}") from err
        raise StoreError(
            f"cannot create the Zarr store at {describe(location)} (is the location writable?): "
            f"{err}"
        ) from err
    except (OSError, ValueError, TypeError) as err:
        raise StoreError(f"cannot open the Zarr store at {describe(location)}: {err}") from err
    except Exception as err:  # noqa: BLE001 - e.g. a torn root zarr.json: never a bare error
        raise StoreError(
            f"cannot open the Zarr store at {describe(location)}: {type(err).__name__}: {err}"
        ) from err


def group_exists(location: str, storage_options: dict | None) -> bool:
    """Whether anything Zarr can find is stored at the URL ``location`` (a group, an array, a
    torn document: anything but nothing)."""
    kwargs = {"storage_options": storage_options} if storage_options else {}
    try:
        zarr.open_group(location, mode="r", **kwargs)  # type: ignore[arg-type]
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return False
    except Exception:  # noqa: BLE001 - something is there (an array, a torn document)
        return True
    return True


def open_array(store: Store, path: str, mode: Literal["r", "r+"] = "r") -> zarr.Array:
    """The v3 array at ``path`` (zarr's own errors pass through)."""
    return zarr.open_array(store, path=path, mode=mode, zarr_format=3)


async def open_array_async(store: Store, path: str) -> zarr.Array:
    """The v3 array at ``path``, opened read-only on Zarr's event loop."""
    array = await zarr.api.asynchronous.open_array(store=store, path=path, mode="r", zarr_format=3)
    return zarr.Array(array)


def open_subgroup(store: Store, path: str) -> zarr.Group:
    """The v3 group at ``path``, read-only (zarr's own errors pass through)."""
    return zarr.open_group(store, path=path, mode="r", zarr_format=3)


def async_array(array: zarr.Array) -> Any:
    """The ``AsyncArray`` behind ``array`` (its coroutine API: ``getitem``, ``setitem``)."""
    return array._async_array


# ------------------------------------------------------------------------------ raw store access
async def get_bytes(store: Store, key: str) -> bytes | None:
    """The bytes stored at ``key``, or ``None``."""
    buffer = await store.get(key, prototype=default_buffer_prototype())
    return None if buffer is None else buffer.to_bytes()


def as_buffer(raw: bytes) -> Buffer:
    """``raw`` as a Zarr buffer, ready for ``store.set``."""
    return default_buffer_prototype().buffer.from_bytes(raw)


async def list_prefix(store: Store, prefix: str) -> list[str]:
    """Every key under ``prefix`` (which ends with ``/``), sorted."""
    return sorted([key async for key in store.list_prefix(prefix) if key.startswith(prefix)])


async def list_dir(store: Store, prefix: str) -> list[str]:
    """The names directly under ``prefix``, sorted."""
    return sorted({key.rstrip("/") async for key in store.list_dir(prefix) if key})


def group_document(attributes: Mapping[str, Any]) -> Buffer:
    """The ``zarr.json`` of a group with these attributes."""
    metadata = GroupMetadata(attributes=jsonable(dict(attributes)))
    return metadata.to_buffer_dict(default_buffer_prototype())["zarr.json"]


@dataclass(frozen=True)
class Node:
    """What is stored at a dataset's path: ``kind`` is ``group`` (its document decodes: ``doc``),
    ``absent`` (nothing), ``torn`` (keys of a dataset, but its group document missing or not
    decodable: ``reason``), ``foreign`` (an array, a file, or keys that are not a dataset's)."""

    kind: Literal["group", "absent", "torn", "foreign"]
    reason: str = ""
    doc: dict | None = None


async def inspect_node(store: Store, path: str, *, list_keys: bool = True) -> Node:
    """Classify what is at ``path`` (a dataset's group path) from its document and, unless it is
    a group, a listing of its keys."""
    try:
        raw = await get_bytes(store, f"{path}/zarr.json")
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
                return Node("group", doc=doc)
            why = f"its group document {path}/zarr.json has no valid attributes"
        elif isinstance(doc, dict) and doc.get("node_type") == "array":
            return Node("foreign", f"{path} is a Zarr array, not a dataset group")
        elif doc is not None:
            why = f"its group document {path}/zarr.json is not a Zarr group document"
    keys = await list_prefix(store, f"{path}/") if list_keys else []
    if raw is None and not keys:
        if await store.exists(path):
            return Node("foreign", f"{path} is a file, not a dataset group")
        return Node("absent", f"nothing is stored at {path}")
    foreign = [k for k in keys if not DATASET_KEY.fullmatch(k[len(path) + 1 :])]
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        return Node("foreign", f"{path} holds files that are not a dataset's ({shown})")
    return Node("torn", why)


# ---------------------------------------------------------------------------------- metadata
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


def array_metadata(
    shape: tuple[int, ...],
    dtype: np.dtype,
    chunks: tuple[int, ...],
    compressors: list | None,
    fill_value: Any,
    attributes: dict[str, Any] | None = None,
) -> ArrayV3Metadata:
    """The metadata of a v3 array, as ``zarr.create_array`` would write it."""
    document = dict(_metadata_template(dtype, compressors, fill_value))
    document.update(
        shape=tuple(int(v) for v in shape),
        chunk_grid={"name": "regular", "configuration": {"chunk_shape": tuple(chunks)}},
        attributes=dict(attributes or {}),
    )
    return ArrayV3Metadata.from_dict(document)


def group_metadata(attributes: Mapping[str, Any] | None = None) -> GroupMetadata:
    """The metadata of a v3 group (for :func:`create_and_fill`)."""
    return GroupMetadata(attributes=dict(attributes or {}))


async def create_and_fill(
    store: Store,
    group_path: str,
    nodes: dict[str, Any],
    fills: Mapping[str, Any],
    marker: str | None,
    attributes: Mapping[str, Any] | None,
) -> None:
    """Create ``nodes``; fill arrays (``fills``: values, or (values, row slice)); then set batch
    0's marker; then write the group's attributes: each step starts once the previous is
    stored."""
    created: dict[str, Any] = {}
    async for path, node in zarr.api.asynchronous.create_hierarchy(
        store=store, nodes=nodes, overwrite=True
    ):
        created[path] = node

    async def fill(path: str, content: Any) -> None:
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
        await group.update_attributes(jsonable(dict(attributes)))


# ---------------------------------------------------------------------------------- chunks
def chunk_key(array: zarr.Array, coords: tuple[int, ...]) -> str:
    """The store key of the chunk of ``array`` at chunk-grid ``coords``."""
    return f"{array.path}/{array.metadata.encode_chunk_key(coords)}"


def chunk_keys(array: zarr.Array) -> list[str]:
    """The store key of every chunk of ``array``, in C order of the chunk grid."""
    return [chunk_key(array, coords) for coords in np.ndindex(*array.cdata_shape)]


def present_chunks(array: zarr.Array) -> set[str]:
    """Keys of the chunks of ``array`` that are stored (one listing)."""
    prefix = f"{array.path}/"
    return {key for key in sync(list_prefix(array.store, prefix)) if key != f"{prefix}zarr.json"}


def has_checksum(array: zarr.Array) -> bool:
    """Whether the array was written with a crc32c codec (every array since issue 11; before it
    only operator values): such arrays have every chunk stored, so a missing one is damage."""
    return any(isinstance(codec, Crc32cCodec) for codec in getattr(array.metadata, "codecs", ()))


# decoded chunks held at once while checking (bounds a check's memory for large batches)
_CHECK_BYTES = 256 * 2**20


async def decode_each(
    array: zarr.Array, selections: Mapping[int, Any], what: Mapping[int, str]
) -> dict[int, str]:
    """``{index: reason}`` for the selections of ``array`` (one chunk each) that fail to
    decode, read concurrently (a few at a time: the decoded chunks are held in memory)."""
    chunk_bytes = int(np.prod(array.chunks)) * array.dtype.itemsize
    limit = asyncio.Semaphore(max(1, min(16, _CHECK_BYTES // max(chunk_bytes, 1))))
    source = async_array(array)

    async def one(index: int, selection: Any) -> tuple[int, str | None]:
        async with limit:
            try:
                await source.getitem(selection)
            except Exception as err:  # noqa: BLE001 - any decoding failure is damage
                return index, f"{what[index]} cannot be decoded ({type(err).__name__}: {err})"
        return index, None

    found = await asyncio.gather(*(one(i, sel) for i, sel in selections.items()))
    return {index: why for index, why in found if why is not None}


def read_markers(markers: zarr.Array) -> tuple[np.ndarray, dict[int, str]]:
    """(done, {batch: why its marker chunk does not decode}); a missing marker chunk is a batch
    not done (markers are written only once their batch is stored)."""
    try:
        return np.asarray(markers[...] != 0, dtype=bool), {}
    except Exception:  # noqa: BLE001 - a torn or corrupted marker chunk: find which
        n = int(markers.shape[0])
        what = {i: f"marker chunk {chunk_key(markers, (i,))}" for i in range(n)}
        bad = sync(decode_each(markers, {i: slice(i, i + 1) for i in range(n)}, what))
        done = np.zeros(markers.shape, dtype=bool)
        good = [i for i in range(n) if i not in bad]
        if good:
            done[good] = markers.get_orthogonal_selection(np.asarray(good)) != 0
        return done, bad


def decode_batches(
    array: zarr.Array, indexes: Iterable[int], present: set[str] | None = None
) -> dict[int, str]:
    """``{batch: reason}`` for batches of a values array whose chunk is missing or does not
    decode (checksum mismatch, truncated, wrong size). ``present``: the stored chunk keys, if
    already listed (else one listing). Chunks are read concurrently, in batch order."""
    batch_size = int(array.chunks[0])
    if present is None:
        present = present_chunks(array)
    found: dict[int, str] = {}
    selections: dict[int, slice] = {}
    what: dict[int, str] = {}
    for index in (int(i) for i in indexes):
        key = chunk_key(array, (index, 0))
        if key not in present:
            found[index] = f"chunk {key} is missing"
            continue
        start = index * batch_size
        selections[index] = slice(start, min(start + batch_size, array.shape[0]))
        what[index] = f"chunk {key}"
    found.update(sync(decode_each(array, selections, what)))
    return dict(sorted(found.items()))
