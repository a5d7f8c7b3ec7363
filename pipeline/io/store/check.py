"""Whole-dataset checks: does a dataset hold everything its status promises, intact?

Every array carries a crc32c checksum and has every chunk stored, so :func:`check_dataset` finds
any flipped bit, torn or lost chunk, and any node the status promises that is missing. It never
writes; :class:`DatasetCheck` says what to redo (prepare again, or recompute operator batches).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from pipeline.exc import DatasetNotFoundError
from pipeline.io.store._zarr import (
    StoreLike,
    async_array,
    chunk_key,
    chunk_keys,
    decode_batches,
    get_bytes,
    has_checksum,
    inspect_node,
    list_prefix,
    open_array_async,
    read_markers,
    sync,
)
from pipeline.io.store.codecs import DTYPES
from pipeline.io.store.integrity import expected_nodes
from pipeline.io.store.location import as_root
from pipeline.io.store.nodes import dataset_path, datasets_group
from pipeline.io.store.schema import (
    BASE_ARRAYS,
    COMPLETE,
    MARKERS_NODE,
    OFFSETS_NODE,
    OPERATOR_ARRAYS,
    OPERATOR_GROUP,
    PREPARED,
    REPAIR,
    VALUES_NODE,
    validate_dataset_name,
)
from pipeline.operators import OperatorLayout

__all__ = ["DatasetCheck", "check_dataset"]


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


class _Checker:
    """The checks of :func:`check_dataset` on one prepared or complete dataset (arrays opened
    and read concurrently: one round trip's latency per step on an object store, not one per
    array)."""

    def __init__(self, root: zarr.Group, name: str, attrs: Mapping[str, Any], keys: set[str]):
        self.root, self.name, self.attrs, self.keys = root, name, attrs, keys
        self.path = dataset_path(root, name)
        self.missing: list[str] = []
        self.damaged: dict[str, str] = {}
        self.batches: dict[int, str] = {}
        self.pending: list[int] = []

    async def open(self, node: str) -> zarr.Array | None:
        if f"{self.path}/{node}/zarr.json" not in self.keys:
            self.missing.append(node)
            return None
        try:
            array = await open_array_async(self.root.store, f"{self.path}/{node}")
        except Exception as err:  # noqa: BLE001 - a torn document
            self.damaged[node] = f"metadata {node}/zarr.json does not decode ({err})"
            return None
        expected = DTYPES.get(node)
        if expected is not None and array.dtype != np.dtype(expected):
            self.damaged[node] = f"dtype {array.dtype}, expected {expected}"
            return None
        return array

    async def read(self, node: str, array: zarr.Array, shape: tuple[int, ...] | None) -> Any:
        """The whole array, or ``None`` (recorded as damaged) if a chunk is missing (arrays
        with a checksum store every chunk) or does not decode, or its shape is wrong."""
        if shape is not None and tuple(array.shape) != tuple(shape):
            self.damaged[node] = f"shape {tuple(array.shape)}, expected {tuple(shape)}"
            return None
        if has_checksum(array):
            missing = [key for key in chunk_keys(array) if key not in self.keys]
            if missing:
                self.damaged[node] = f"chunk {missing[0]} is missing" + (
                    f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                )
                return None
        try:
            return await async_array(array).getitem(Ellipsis)
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
        shapes = {key: shape for key in BASE_ARRAYS}
        shapes.update(
            grid=(n, 2) if n is not None else None,
            psf=psf_shape,
            noise_covariance_matrix=(n, n) if n is not None else None,
        )
        nodes = expected_nodes(attrs, self.keys, self.path)
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
            doc = json.loads(sync(get_bytes(self.root.store, key)) or b"null")
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
            return await asyncio.gather(*(self.open(node) for node in OPERATOR_ARRAYS))

        values, offsets, markers = sync(arrays())
        layout = None
        if kernel is not None and mask is not None:
            layout = OperatorLayout(np.asarray(mask), kernel)  # type: ignore[arg-type]
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
        done, bad_markers = read_markers(markers)
        for index in np.flatnonzero(~done).tolist():
            marker = chunk_key(markers, (index,))
            self.batches[index] = bad_markers.get(index, f"marker {marker} is not set")
        if self.attrs.get("status") != COMPLETE:
            self.pending = [i for i in np.flatnonzero(~done).tolist() if i not in bad_markers]
        self.batches.update(decode_batches(values, np.flatnonzero(done).tolist(), self.keys))


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
    root = as_root(location, storage_options)
    validate_dataset_name(name)
    datasets_group(root)
    path = dataset_path(root, name)
    node = sync(inspect_node(root.store, path))
    if node.kind == "absent":
        raise DatasetNotFoundError(f"dataset {name!r} is not in the store")
    if node.kind == "foreign":
        return DatasetCheck(name, None, damaged_arrays={"zarr.json": node.reason})
    if node.kind == "torn":
        if node.reason.endswith("is missing"):
            return DatasetCheck(name, None, missing_nodes=["zarr.json"])
        return DatasetCheck(name, None, damaged_arrays={"zarr.json": node.reason})
    attrs = (node.doc or {}).get("attributes") or {}
    status = attrs.get("status")
    if status not in (PREPARED, COMPLETE):
        return DatasetCheck(name, status)
    keys = set(sync(list_prefix(root.store, f"{path}/")))
    return _Checker(root, name, attrs, keys).run()
