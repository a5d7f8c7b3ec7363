"""Operator batches that are not intact, and what a dataset's attributes promise.

A chunk's presence never proves completion: the markers do. Conversely every marked batch has a
stored values chunk (written even when equal to the fill value) whose crc32c checksum detects a
torn or corrupted file: :func:`verify_dataset` lists the marked batches whose chunk is missing or
does not decode, and reading such a chunk raises :class:`DamagedDatasetError` naming the dataset
and the batch. Whole-dataset checks: :mod:`pipeline.io.store.check`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import zarr

from pipeline.exc import DamagedDatasetError
from pipeline.io.store._zarr import StoreLike, async_array, decode_batches
from pipeline.io.store.location import as_root
from pipeline.io.store.nodes import (
    batches_done,
    dataset_group,
    has_operator,
    operator_array,
)
from pipeline.io.store.schema import (
    BASE_ARRAYS,
    COVARIANCE_NODE,
    MARKERS_NODE,
    OPERATOR_ARRAYS,
    OPERATOR_GROUP,
    PSF_NODE,
    REPAIR,
    VALUES_NODE,
)

__all__ = ["damaged_batches", "reset_batches", "verify_dataset"]


def damaged_batches(
    root: zarr.Group, name: str, indexes: Iterable[int] | None = None
) -> dict[int, str]:
    """``{batch: reason}`` for the given batches (default: every batch with a marker) of a
    dataset whose values chunk is missing or does not decode. Reads every chunk asked for."""
    group = dataset_group(root, name)
    if not has_operator(group):
        return {}
    if indexes is None:
        indexes = np.flatnonzero(batches_done(root, name)).tolist()
    return decode_batches(operator_array(root, name, VALUES_NODE), indexes)


def verify_dataset(
    location: StoreLike, name: str, *, storage_options: dict | None = None
) -> list[int]:
    """The operator batches of a dataset that are not intact: without a completion marker, or
    whose values chunk is missing or fails to decode (crc32c mismatch, truncated file). Reads and
    decodes every chunk (the cost of reading the whole operator once); ``[]`` if all are intact
    or the dataset has no operator. ``lenspipe run`` with ``run.verify: true`` recomputes them.
    :func:`~pipeline.io.store.check_dataset` checks every other array and node as well."""
    root = as_root(location, storage_options)
    group = dataset_group(root, name)
    if not has_operator(group):
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
    markers = dataset_group(root, name)[MARKERS_NODE]
    for index in indexes:
        markers[index] = 0  # type: ignore[index]


def promises_operator(attrs: Mapping[str, Any], present: bool) -> bool:
    """Whether a prepared dataset stores an operator: its ``has_operator`` attribute (written
    since issue 11), else its settings (``sparse_operator.enabled`` with a PSF), else whether
    the operator group is there (stores written before either)."""
    if isinstance(attrs.get("has_operator"), bool):
        return bool(attrs["has_operator"])
    settings = attrs.get("settings")
    operator = settings.get("sparse_operator") if isinstance(settings, dict) else None
    if isinstance(operator, dict) and isinstance(operator.get("enabled"), bool):
        return operator["enabled"] and bool(attrs.get("psf_shape"))
    return present


def expected_nodes(attrs: Mapping[str, Any], keys: set[str], path: str) -> list[str]:
    """The array nodes a prepared dataset's attributes promise (paths relative to it)."""
    nodes = list(BASE_ARRAYS)
    if attrs.get("psf_shape"):
        nodes.append(PSF_NODE)
    covariance = attrs.get("has_noise_covariance")
    if covariance or (covariance is None and f"{path}/{COVARIANCE_NODE}/zarr.json" in keys):
        nodes.append(COVARIANCE_NODE)
    if promises_operator(attrs, f"{path}/{OPERATOR_GROUP}/zarr.json" in keys):
        nodes += [OPERATOR_GROUP, *OPERATOR_ARRAYS]
    return nodes


class CheckedArray(zarr.Array):
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
        super().__init__(async_array(array) if isinstance(array, zarr.Array) else array)
        self.dataset, self.complete, self.chunks_checked = dataset, complete, chunks_checked

    def __getitem__(self, selection: Any) -> Any:
        try:
            values = super().__getitem__(selection)
        except Exception as err:  # noqa: BLE001 - find which chunks are damaged, then report
            self.raise_if_damaged(err)
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
            self.raise_if_damaged(None)
        return values

    def raise_if_damaged(self, err: BaseException | None) -> None:
        """Raise :class:`DamagedDatasetError` naming every batch whose chunk is missing or does
        not decode (reads every chunk); return if there is none."""
        plain = zarr.Array(async_array(self))
        damaged = decode_batches(plain, range(plain.cdata_shape[0]))
        if damaged:
            first = "; ".join(f"batch {i}: {why}" for i, why in list(damaged.items())[:3])
            raise DamagedDatasetError(
                f"dataset {self.dataset!r}: {len(damaged)} damaged operator batch(es) "
                f"{sorted(damaged)[:10]} ({first}); rerun the survey with run.verify: true "
                "(`lenspipe run CONFIG --verify`) to recompute them"
            ) from err
