"""What a store holds: its datasets' statuses and attributes, its own metadata and last run.

:func:`scan_datasets` lists every dataset it can read and names the others: children are listed
and their documents read through the store API, so one torn document fails only its dataset.
Attributes come as recorded (dictionaries: :func:`dataset_attrs`, :func:`scan_datasets`,
:func:`survey_attrs`) or typed (:class:`~pipeline.io.store.DatasetRecord`:
:func:`dataset_record`, :func:`dataset_records`, :func:`survey_records`), which is how code
outside the store reads them: it never spells an attribute key.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pipeline.exc import DamagedDatasetError, StoreError
from pipeline.io.store._zarr import StoreLike, inspect_node, list_dir, sync
from pipeline.io.store.attributes import DatasetRecord
from pipeline.io.store.location import as_root, open_store
from pipeline.io.store.nodes import dataset_group, datasets_group, prefix
from pipeline.io.store.schema import (
    DAMAGED,
    DATASETS,
    FAILED,
    LAST_RUN_ATTR,
    PREPARING,
    REPAIR,
    ROOT_ATTR,
    validate_dataset_name,
)

__all__ = [
    "dataset_attrs",
    "dataset_problems",
    "dataset_record",
    "dataset_records",
    "dataset_status",
    "last_run",
    "list_datasets",
    "scan_datasets",
    "store_metadata",
    "survey_attrs",
    "survey_records",
]

_SCAN_CONCURRENCY = 64


def dataset_attrs(location: StoreLike, name: str, *, storage_options: dict | None = None) -> dict:
    """All attributes of one dataset (:class:`DatasetNotFoundError` if there is none,
    :class:`DamagedDatasetError` if its group cannot be read)."""
    root = open_store(location, storage_options=storage_options)
    return dict(dataset_group(root, name).attrs)


def dataset_record(
    location: StoreLike, name: str, *, storage_options: dict | None = None
) -> DatasetRecord:
    """The attributes of one dataset, typed (errors as :func:`dataset_attrs`)."""
    return DatasetRecord.from_attrs(dataset_attrs(location, name, storage_options=storage_options))


def dataset_status(location: StoreLike, name: str, *, storage_options: dict | None = None) -> str:
    """``prepared``, ``complete`` or ``failed``; ``preparing`` for a group without status yet
    (its prepare task is running, or was interrupted: a resume prepares it again). See
    :class:`~pipeline.io.store.DatasetStatus`."""
    return str(
        dataset_attrs(location, name, storage_options=storage_options).get("status") or PREPARING
    )


def scan_datasets(
    location: StoreLike, *, storage_options: dict | None = None
) -> dict[str, dict | StoreError]:
    """Every child of the store's ``datasets/``, sorted by name: its attributes, or the error
    saying why it cannot be read (a torn or missing group document, an array or a foreign file
    where a dataset group should be, a name lenspipe never writes). Never raises because of one
    dataset: children are listed and their documents read through the store API (one listing,
    then one read per dataset, up to 64 at a time), not zarr's ``group_keys()``, which stops at
    the first unreadable child."""
    root = as_root(location, storage_options)
    datasets_group(root)
    base = f"{prefix(root)}{DATASETS}"
    store = root.store

    async def one(name: str, limit: asyncio.Semaphore) -> dict | StoreError:
        try:
            validate_dataset_name(name)
        except StoreError as err:
            return DamagedDatasetError(
                f"{base}/{name} is not a lenspipe dataset ({err}); move it out of the store"
            )
        async with limit:
            node = await inspect_node(store, f"{base}/{name}")
        if node.kind == "group" and node.doc is not None:
            return dict(node.doc.get("attributes") or {})
        if node.kind == "foreign":
            return DamagedDatasetError(
                f"dataset {name!r} cannot be read: {node.reason}; move it out of the store"
            )
        return DamagedDatasetError(f"dataset {name!r} cannot be read: {node.reason}; {REPAIR}")

    async def scan() -> dict[str, dict | StoreError]:
        names = [key for key in await list_dir(store, f"{base}/") if key != "zarr.json"]
        limit = asyncio.Semaphore(_SCAN_CONCURRENCY)
        found = await asyncio.gather(*(one(name, limit) for name in names))
        return dict(zip(names, found, strict=True))

    return sync(scan())


def dataset_records(
    location: StoreLike, *, storage_options: dict | None = None
) -> dict[str, DatasetRecord | StoreError]:
    """:func:`scan_datasets` with each readable dataset's attributes typed: ``{name: record or
    the error saying why it cannot be read}``, sorted by name."""
    return {
        name: found if isinstance(found, StoreError) else DatasetRecord.from_attrs(found)
        for name, found in scan_datasets(location, storage_options=storage_options).items()
    }


def list_datasets(location: StoreLike, *, storage_options: dict | None = None) -> dict[str, str]:
    """``{name: status}`` of every dataset in the store, sorted by name (statuses as in
    :func:`dataset_status`; ``damaged`` for a child that cannot be read, see
    :func:`scan_datasets` and :func:`dataset_problems`)."""
    return {
        name: DAMAGED.value
        if isinstance(found, StoreError)
        else str(found.get("status") or PREPARING)
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


def store_metadata(location: StoreLike, *, storage_options: dict | None = None) -> dict[str, Any]:
    """The store's own metadata: ``{schema_version, created, software}`` (errors as
    :func:`~pipeline.io.store.open_store`)."""
    attrs: dict[str, Any] = dict(open_store(location, storage_options=storage_options).attrs)
    return dict(attrs.get(ROOT_ATTR, {}))


def last_run(location: StoreLike, *, storage_options: dict | None = None) -> dict[str, Any] | None:
    """The summary of the last run recorded in the store, or ``None`` if none was."""
    attrs: dict[str, Any] = dict(open_store(location, storage_options=storage_options).attrs)
    found = attrs.get(LAST_RUN_ATTR)
    return dict(found) if found else None


def survey_attrs(
    location: StoreLike, *, storage_options: dict | None = None
) -> tuple[dict[str, dict], dict]:
    """(``{name: attributes}`` of every child of ``datasets/``, sorted by name; the last run's
    summary, ``{}`` if none): what a survey overview shows. A dataset that cannot be read (see
    :func:`scan_datasets`) is listed as ``{"status": "damaged", "error": why}``, so one torn
    group never hides the others."""
    root = as_root(location, storage_options)
    attrs: dict[str, dict] = {}
    for name, found in sorted(scan_datasets(root).items()):
        if isinstance(found, StoreError):
            attrs[name] = {"status": DAMAGED.value, "error": str(found)}
        else:
            attrs[name] = found
    root_attrs: dict[str, Any] = dict(root.attrs)
    return attrs, dict(root_attrs.get(LAST_RUN_ATTR) or {})


def survey_records(
    location: StoreLike, *, storage_options: dict | None = None
) -> tuple[dict[str, DatasetRecord], dict]:
    """:func:`survey_attrs` with each dataset's attributes typed: a dataset that cannot be read
    is a record of status ``damaged`` whose ``error`` says why."""
    attrs, run = survey_attrs(location, storage_options=storage_options)
    return {name: DatasetRecord.from_attrs(found) for name, found in attrs.items()}, run
