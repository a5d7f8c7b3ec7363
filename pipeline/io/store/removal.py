"""Removing datasets from a store (``lenspipe rm``): :func:`select_datasets` says what a removal
would take, :func:`remove_datasets` takes it.

Removal is a writer's act, like a run: it holds the store's run lock (:mod:`.lock`) from before
it looks at the datasets until the last one is gone, so it never removes what a running
``lenspipe run`` is writing, and no run starts half-way through. A lock held by a live run is
refused at once with :class:`~pipeline.exc.StoreLockedError` naming its holder, never waited for;
a stale lock (a dead driver) is taken over as a run would (docs/reliability.md).

Every name is checked before anything is removed, so a typo removes nothing. A dataset's group
document goes first, then every key below it: a removal cut short leaves a group without its
document, which ``lenspipe status`` lists as damaged, readers refuse, a run prepares again and a
second removal finishes. Nothing else is touched: other datasets, the run records (``runs/`` and
the last run: the history of what runs did, failures included), the store's own metadata.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import uuid
from collections.abc import Iterable, Mapping
from typing import Literal

import zarr

from pipeline.exc import DatasetNotFoundError, StoreError
from pipeline.io.store._zarr import StoreLike, describe, list_prefix, sync
from pipeline.io.store.catalog import list_datasets
from pipeline.io.store.location import open_store
from pipeline.io.store.lock import acquire_run_lock
from pipeline.io.store.nodes import check_replaceable, dataset_path
from pipeline.io.store.schema import FAILED, validate_dataset_name

__all__ = ["remove_datasets", "select_datasets"]


def select_datasets(
    location: StoreLike,
    names: Iterable[str] = (),
    *,
    failed: bool = False,
    storage_options: dict | None = None,
) -> dict[str, str]:
    """The datasets a removal of ``names`` (and, with ``failed``, of every failed dataset) would
    take: ``{name: status}``, sorted by name (statuses as
    :func:`~pipeline.io.store.list_datasets` reports them). Reads only.

    Raises
    ------
    InvalidDatasetNameError
        A name is not a safe store key (no such dataset can exist).
    DatasetNotFoundError
        Names that are not in the store, each with the closest names that are.
    """
    wanted = [validate_dataset_name(name) for name in names]
    root = _root(location, storage_options)
    statuses = list_datasets(root)
    missing = [name for name in dict.fromkeys(wanted) if name not in statuses]
    if missing:
        hints = []
        for name in missing:
            close = difflib.get_close_matches(name, list(statuses), n=3, cutoff=0.6)
            hints.append(f"{name!r}" + (f" (close: {', '.join(close)})" if close else ""))
        where = describe(location) if not isinstance(location, zarr.Group) else "the store"
        raise DatasetNotFoundError(
            f"not in {where}: {'; '.join(hints)}; nothing was removed. `lenspipe status STORE` "
            "lists the datasets it holds"
        )
    chosen = set(wanted)
    if failed:
        chosen |= {name for name, status in statuses.items() if status == FAILED}
    return {name: statuses[name] for name in sorted(chosen)}


def remove_datasets(
    location: StoreLike,
    names: Iterable[str] = (),
    *,
    failed: bool = False,
    expected: Mapping[str, str] | None = None,
    storage_options: dict | None = None,
    stale_after: float = 120.0,
) -> dict[str, str]:
    """Remove datasets ``names`` (and, with ``failed``, every failed dataset) from the store, each
    with everything below its group; returns ``{name: status before}`` of those removed.

    The selection is made again under the store's run lock (:func:`select_datasets`; its errors
    pass through, and nothing is removed). ``expected``: the ``{name: status}`` a caller showed
    before asking for confirmation; if the selection under the lock differs (a run finished
    meanwhile), :class:`StoreError` says so and nothing is removed.

    Raises
    ------
    StoreLockedError
        A live run holds the store's lock (``stale_after``: seconds without heartbeat after
        which a lock is stale and taken over).
    UnsafeStoreError
        A selected name holds something that is not a lenspipe dataset group (an array, a
        foreign file): nothing is removed.
    StoreError
        The store cannot be written, or keys were left behind (run the removal again).
    """
    root = _root(location, storage_options, "r+")
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    lock = acquire_run_lock(root, f"rm-{stamp}-{uuid.uuid4().hex[:6]}", stale_after=stale_after)
    lock.start_heartbeat()
    try:
        chosen = select_datasets(root, names, failed=failed)
        if expected is not None and dict(expected) != chosen:
            raise StoreError(
                f"the datasets to remove changed since they were listed (now: "
                f"{_brief(chosen)}; listed: {_brief(dict(expected))}); nothing was removed: "
                "list them again"
            )
        for name in chosen:
            check_replaceable(root, name)  # never delete what is not a dataset group
        for name in chosen:
            _remove_one(root, name)
    finally:
        lock.release()
    return chosen


def _root(
    location: StoreLike, storage_options: dict | None, mode: Literal["r", "r+"] = "r"
) -> zarr.Group:
    if isinstance(location, zarr.Group):
        return location
    return open_store(location, mode, storage_options=storage_options)


def _remove_one(root: zarr.Group, name: str) -> None:
    path = dataset_path(root, name)
    store = root.store
    try:
        # the document first: a removal cut short leaves a group readers refuse, never a
        # "complete" group missing arrays
        sync(store.delete(f"{path}/zarr.json"))
        sync(store.delete_dir(path))
        left = sync(list_prefix(store, f"{path}/"))
    except Exception as err:  # noqa: BLE001 - a read-only store, a permission error
        raise StoreError(
            f"dataset {name!r} could not be removed ({type(err).__name__}: {err}); what was "
            "removed before stays removed: fix the store's permissions and remove it again"
        ) from err
    if left:
        raise StoreError(
            f"dataset {name!r}: {len(left)} key(s) were left behind (first: {left[0]}); remove "
            "it again"
        )


def _brief(statuses: Mapping[str, str]) -> str:
    shown = ", ".join(f"{n} ({s})" for n, s in list(statuses.items())[:5])
    more = len(statuses) - 5
    return (shown or "none") + (f" and {more} more" if more > 0 else "")
