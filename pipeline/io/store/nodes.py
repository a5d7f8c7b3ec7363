"""Finding a dataset's nodes in an open store: paths, its group, its operator arrays, with every
failure a :class:`StoreError` subclass that names the dataset."""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from pipeline.exc import DamagedDatasetError, DatasetNotFoundError, StoreError, UnsafeStoreError
from pipeline.io.store._zarr import Node, inspect_node, open_array, read_markers, sync
from pipeline.io.store.location import check_schema
from pipeline.io.store.schema import (
    DATASETS,
    MARKERS_NODE,
    OPERATOR_GROUP,
    REPAIR,
    validate_dataset_name,
)

__all__ = ["batches_done", "operator_batch_count"]


def prefix(root: zarr.Group) -> str:
    """The key prefix of the store's root group (``""`` at the store's root)."""
    return f"{root.path}/" if root.path else ""


def dataset_path(root: zarr.Group, name: str) -> str:
    """The store key of dataset ``name``'s group."""
    return f"{prefix(root)}{DATASETS}/{name}"


def check_replaceable(root: zarr.Group, name: str) -> Node:
    """What is at dataset ``name``'s path, if it may be (over)written: nothing, a Zarr group, or
    a torn dataset (only dataset keys below it, its group document missing or not decodable).
    Anything else (an array, a file, other files) raises :class:`UnsafeStoreError`: zarr's
    ``overwrite`` would delete it (PITFALLS)."""
    check_schema(root, root.store)
    node = sync(inspect_node(root.store, dataset_path(root, name)))
    if node.kind == "foreign":
        raise UnsafeStoreError(
            f"dataset {name!r}: {node.reason}; lenspipe overwrites only its own dataset groups: "
            f"move it out of the store's datasets/ folder, or rename the dataset"
        )
    return node


def datasets_group(root: zarr.Group) -> zarr.Group:
    """The store's ``datasets`` group (:class:`StoreError` if it is missing or unreadable)."""
    try:
        node = root[DATASETS]
    except KeyError:
        raise StoreError(
            "the store has no 'datasets' group; run `lenspipe run CONFIG` to create it"
        ) from None
    except Exception as err:  # noqa: BLE001 - a torn document
        raise StoreError(
            f"the store's 'datasets' group cannot be read ({type(err).__name__}: {err}); restore "
            f"{prefix(root)}datasets/zarr.json (a group document) from a backup"
        ) from err
    if not isinstance(node, zarr.Group):
        raise StoreError("the store's 'datasets' node is an array, not a group")
    return node


def dataset_group(root: zarr.Group, name: str) -> zarr.Group:
    """The group of dataset ``name``: :class:`DatasetNotFoundError` if nothing is stored there,
    :class:`DamagedDatasetError` if what is there is not a readable dataset group."""
    validate_dataset_name(name)
    datasets = datasets_group(root)
    try:
        node = datasets[name]
    except KeyError:
        node = None
    except Exception:  # noqa: BLE001 - described below, from the store itself
        node = None
    if isinstance(node, zarr.Group):
        return node
    found = sync(inspect_node(root.store, dataset_path(root, name)))
    if found.kind == "absent":
        raise DatasetNotFoundError(f"dataset {name!r} is not in the store")
    reason = found.reason if found.kind != "group" else "its group cannot be opened"
    raise DamagedDatasetError(f"dataset {name!r} cannot be read: {reason}; {REPAIR}")


def has_operator(group: zarr.Group) -> bool:
    """Whether a dataset group holds a sparse operator group."""
    return OPERATOR_GROUP in group


def operator_array(root: zarr.Group, name: str, node: str) -> zarr.Array:
    """Array ``node`` (e.g. ``sparse_operator/values``) of a dataset: :class:`StoreError` if the
    dataset has no operator group, :class:`DamagedDatasetError` if the array is missing or
    unreadable."""
    group = dataset_group(root, name)
    path = f"{dataset_path(root, name)}/{node}"
    try:
        present = has_operator(group)
    except Exception:  # noqa: BLE001 - a torn operator group document: the array may still open
        present = True
    if not present:
        raise StoreError(f"dataset {name!r} has no sparse_operator, so no batches")
    try:
        return open_array(root.store, path)
    except Exception as err:  # noqa: BLE001 - missing or torn document
        raise DamagedDatasetError(
            f"dataset {name!r}: array {path} cannot be opened ({type(err).__name__}: "
            f"{err}); {REPAIR}"
        ) from err


def batches_done(root: zarr.Group, name: str) -> np.ndarray:
    """Boolean array, one entry per operator batch: True if its marker was written (an unreadable
    marker chunk counts as not written)."""
    return read_markers(operator_array(root, name, MARKERS_NODE))[0]


def operator_batch_count(root: zarr.Group, name: str) -> int:
    """The number of operator batches of dataset ``name`` (its operator group's ``n_batches``);
    0 if it has no operator."""
    group = dataset_group(root, name)
    if not has_operator(group):
        return 0
    attrs: dict[str, Any] = dict(group[OPERATOR_GROUP].attrs)
    return int(attrs["n_batches"])
