"""The store's names: schema version, node names, attribute keys, dataset statuses, safe names.

The one place that spells a store node (DESIGN §2): every other module of :mod:`pipeline.io.store`
builds paths from these constants, and nothing outside the package names a node. No Zarr import:
this module is the schema, not its storage.
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.exc import InvalidDatasetNameError

__all__ = [
    "COMPLETE",
    "DAMAGED",
    "DATASETS",
    "FAILED",
    "LOCK_NAME",
    "OPERATOR_GROUP",
    "PREPARED",
    "PREPARING",
    "RESERVED_NAMES",
    "RUNS",
    "SCHEMA_VERSION",
    "ZARR_DOCUMENTS",
    "DatasetStatus",
    "settings_hash",
    "validate_dataset_name",
]

#: The documents that make a folder a Zarr group or array (format 3, then format 2).
ZARR_DOCUMENTS = ("zarr.json", ".zgroup", ".zarray")

SCHEMA_VERSION = 1


class DatasetStatus(enum.StrEnum):
    """The status of a dataset. Members are the strings stored in its ``status`` attribute (a
    member equals, formats and serialises as its value)."""

    PREPARED = "prepared"
    """Arrays written; operator batches may be missing (a resume computes them)."""
    COMPLETE = "complete"
    """Everything written and checked: readers open it."""
    FAILED = "failed"
    """Preparing or computing it failed; ``error`` holds the message."""
    PREPARING = "preparing"
    """Reported, never written: a group without status (being prepared, or its prepare was cut)."""
    DAMAGED = "damaged"
    """Reported, never written: a child of ``datasets/`` that cannot be read (torn or missing
    group document, an array or a foreign file where a dataset group should be)."""


PREPARED, COMPLETE, FAILED = DatasetStatus.PREPARED, DatasetStatus.COMPLETE, DatasetStatus.FAILED
PREPARING, DAMAGED = DatasetStatus.PREPARING, DatasetStatus.DAMAGED

# ------------------------------------------------------------------------------------ node names
ROOT_ATTR = "lenspipe"  # root attribute: {schema_version, created, software}
LAST_RUN_ATTR = "last_run"  # root attribute: the last run's summary
SUMMARY_ATTR = "summary"  # attribute of runs/<run_id>
DATASETS = "datasets"
RUNS = "runs"
LOCK_NAME = "lenspipe.lock"  # beside the root zarr.json, not a Zarr node
OPERATOR_GROUP = "sparse_operator"
VALUES_NODE = f"{OPERATOR_GROUP}/values"
OFFSETS_NODE = f"{OPERATOR_GROUP}/offsets"
MARKERS_NODE = f"{OPERATOR_GROUP}/batches_done"
OPERATOR_ARRAYS = (VALUES_NODE, OFFSETS_NODE, MARKERS_NODE)
PSF_NODE = "psf"
COVARIANCE_NODE = "noise_covariance_matrix"
# the arrays every prepared dataset holds
BASE_ARRAYS = (
    "data",
    "noise_map",
    "mask",
    "over_sample_size_lp",
    "over_sample_size_pixelization",
    "grid",
)
# the temporary file Zarr's local store writes a key to before renaming it into place
# (``zarr.json`` -> ``zarr.<uuid hex>.partial``, ``c/0/3`` -> ``c/0/3.<uuid hex>.partial``): a
# worker killed in between (scancel, a node lost) leaves it behind
_PARTIAL = r"(?:\.[0-9a-f]{32}\.partial)"
# the keys a dataset group holds, relative to it: documents and chunks of its arrays and of its
# operator's arrays, and their temporary files (what write_dataset_arrays may erase when the
# group document is torn)
DATASET_KEY = re.compile(
    rf"zarr(?:\.json|{_PARTIAL})"
    rf"|(?:sparse_operator/)?[A-Za-z0-9_]+/(?:zarr(?:\.json|{_PARTIAL})|c(?:/[0-9]+)*{_PARTIAL}?)"
)
# the repair advice of every damage message
REPAIR = "rerun `lenspipe run CONFIG --verify` to repair it"

# ------------------------------------------------------------------------------------ names
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
# names of Zarr's own documents and folders (v3 and v2) and of lenspipe's own store entries,
# refused as dataset names whatever their case (case-insensitive file systems: macOS, Windows)
RESERVED_NAMES = frozenset(
    ("zarr.json", "c", ".zarray", ".zgroup", ".zattrs", ".zmetadata", RUNS, DATASETS, LOCK_NAME)
)


def validate_dataset_name(name: str) -> str:
    """Return ``name`` if it is safe as a store key, else raise :class:`InvalidDatasetNameError`.

    Safe: letters, digits and ``._+-``, starting with a letter or digit, no ``..``, at most 200
    characters (so no path separator, control character or trailing newline: the whole string
    must match), and none of :data:`RESERVED_NAMES` in any case (Zarr's own ``zarr.json``,
    ``c`` and v2 documents; lenspipe's ``runs``, ``datasets``, ``lenspipe.lock``)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidDatasetNameError(
            f"dataset name {name!r} is not a safe store key: use letters, digits and '._+-', "
            "start with a letter or digit, no path separators, control characters or '..', at "
            "most 200 characters; rename the input"
        )
    if name.lower() in RESERVED_NAMES:
        raise InvalidDatasetNameError(
            f"dataset name {name!r} is not a safe store key: it is reserved for Zarr's or "
            f"lenspipe's own files ({', '.join(sorted(RESERVED_NAMES))}, in any case); rename "
            "the input"
        )
    return name


# ------------------------------------------------------------------------------------ values
def settings_hash(settings: Mapping[str, Any]) -> str:
    """Hex sha256 of the settings as canonical JSON (sorted keys)."""
    text = json.dumps(jsonable(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and arrays, tuples and paths turned into JSON types."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return os.fspath(value)
    return value


def now() -> str:
    """The current UTC time, ISO 8601 to the second (the store's timestamps)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
