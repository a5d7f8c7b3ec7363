"""Where a store lives: creating and opening it, and refusing locations where it could destroy
what is not its own (PITFALLS: zarr's ``overwrite`` deletes whatever is at a path).

Stores may be local paths, fsspec URLs (``s3://bucket/survey.zarr`` with ``storage_options``) or
any ``zarr.abc.store.Store``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any, Literal

import zarr
import zarr.storage
from zarr.abc.store import Store

from pipeline.exc import NotAStoreError, StoreError, StoreVersionError, UnsafeStoreError
from pipeline.io.store._zarr import (
    StoreLike,
    describe,
    group_exists,
    open_group,
    software,
    sync,
)
from pipeline.io.store.schema import DATASETS, ROOT_ATTR, SCHEMA_VERSION, now

__all__ = ["create_store", "open_store", "store_exists", "store_overlaps"]


def check_schema(root: zarr.Group, location: Any) -> None:
    """Refuse a group that is not a lenspipe store (:class:`NotAStoreError`) or was written with
    a newer schema (:class:`StoreVersionError`)."""
    meta = root.attrs.get(ROOT_ATTR)
    if not isinstance(meta, dict) or "schema_version" not in meta:
        raise NotAStoreError(f"{describe(location)} is a Zarr group but not a lenspipe store")
    version = meta["schema_version"]
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise StoreVersionError(
            f"{describe(location)} was written with store schema_version {version!r}; this "
            f"lenspipe reads versions <= {SCHEMA_VERSION}: upgrade lenspipe to read it"
        )


def local_path(location: Any) -> str | None:
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
    if isinstance(attributes, dict) and isinstance(attributes.get(ROOT_ATTR), dict):
        return True
    return None if not attributes else False


def check_store_location(location: StoreLike) -> None:
    """Refuse (:class:`UnsafeStoreError`) a store location where creating a store could destroy
    what is not the store's own.

    Local paths only: the empty string, a path that resolves to the current folder, an existing
    file, and an existing non-empty folder that is not a lenspipe store (a folder holding only an
    empty Zarr group without attributes is adopted). URLs and store objects get the Zarr-level
    check of :func:`create_store`."""
    path = local_path(location)
    if path is None:
        return
    where = f"cannot create the Zarr store at {describe(location)}"
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
    check_store_location(location)
    root = open_group(location, "a", storage_options)
    if ROOT_ATTR not in root.attrs:
        if len(list(root.keys())):
            raise UnsafeStoreError(
                f"{describe(location)} is a non-empty Zarr group that is not a lenspipe store; "
                "choose another location"
            )
        root.attrs[ROOT_ATTR] = {
            "schema_version": SCHEMA_VERSION,
            "created": now(),
            "software": dict(software()),
        }
    check_schema(root, location)
    if DATASETS not in root:
        root.create_group(DATASETS)
    return root


def open_store(
    location: StoreLike, mode: Literal["r", "r+"] = "r", *, storage_options: dict | None = None
) -> zarr.Group:
    """Open an existing lenspipe store (``mode="r+"`` for tasks that write chunks).

    Raises :class:`StoreNotFoundError` if nothing is stored there, :class:`NotAStoreError` for a
    Zarr group that is not a lenspipe store, :class:`StoreVersionError` for a newer schema."""
    root = open_group(location, mode, storage_options)
    check_schema(root, location)
    return root


def as_root(location: StoreLike, storage_options: dict | None) -> zarr.Group:
    """``location`` itself if it is an open group, else the store opened for reading."""
    if isinstance(location, zarr.Group):
        return location
    return open_store(location, storage_options=storage_options)


def store_exists(location: StoreLike, *, storage_options: dict | None = None) -> bool:
    """Whether a Zarr node (a root ``zarr.json``) is stored at ``location``: then
    :func:`open_store` opens it or says why not (not a lenspipe store, newer schema); else
    :func:`create_store` would create a new store. Raises :class:`UnsafeStoreError` where
    :func:`create_store` would refuse the location (local paths: empty, the current folder, an
    existing file, a non-empty folder that is not a lenspipe store), so a dry run reports what
    a run would do. Writes nothing."""
    if isinstance(location, zarr.Group):
        return True
    check_store_location(location)
    path = local_path(location)
    if path is not None:
        return os.path.isfile(os.path.join(path, "zarr.json"))
    if isinstance(location, Store):
        return bool(sync(location.exists("zarr.json")))
    return group_exists(os.fspath(location), storage_options)


def store_overlaps(location: StoreLike, paths: Iterable[str | os.PathLike[str]]) -> str | None:
    """The first of ``paths`` (input files or folders) that is inside the local store folder
    ``location``, is that folder, or contains it (symlinks resolved); ``None`` if none does, or
    if the store is not local (URLs, store objects). A store there could overwrite inputs, or
    an input scan could read the store."""
    store = local_path(location)
    if store is None:
        return None
    store_real = os.path.realpath(store)
    for path in paths:
        real = os.path.realpath(path)
        if os.path.commonpath([real, store_real]) in (real, store_real):
            return os.fspath(path)
    return None
