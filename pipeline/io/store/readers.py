"""Reading datasets back: :func:`open_imaging` rebuilds the ``Imaging`` written (arrays bit for
bit) and :func:`open_operator` its sparse operator, values read lazily.

Readers refuse datasets that are not complete unless asked, and turn every failure into a
:class:`DamagedDatasetError` naming the dataset, the node and the repair.
"""

from __future__ import annotations

from typing import Any, NoReturn

import numpy as np
import zarr

from pipeline.exc import DamagedDatasetError, DatasetNotCompleteError, StoreError
from pipeline.imaging import Array2D, Convolver, Imaging, Mask2D
from pipeline.io.store._zarr import (
    StoreLike,
    chunk_keys,
    has_checksum,
    list_prefix,
    open_array,
    open_subgroup,
    read_markers,
    sync,
)
from pipeline.io.store.integrity import CheckedArray, expected_nodes
from pipeline.io.store.location import open_store
from pipeline.io.store.nodes import dataset_group, dataset_path
from pipeline.io.store.schema import (
    BASE_ARRAYS,
    COMPLETE,
    COVARIANCE_NODE,
    MARKERS_NODE,
    OFFSETS_NODE,
    OPERATOR_GROUP,
    PREPARED,
    PSF_NODE,
    REPAIR,
    VALUES_NODE,
)
from pipeline.operators import (
    ImagingSparseOperator,
    OperatorLayout,
)

__all__ = ["open_imaging", "open_operator", "read_dataset_arrays"]


def _readable_group(root: zarr.Group, name: str, allow_incomplete: bool) -> zarr.Group:
    group = dataset_group(root, name)
    status = group.attrs.get("status")
    if status != COMPLETE and not allow_incomplete:
        error = group.attrs.get("error")
        reason = f" ({error})" if error else ""
        raise DatasetNotCompleteError(
            f"dataset {name!r} has status {status!r}{reason}, not 'complete'; to read it "
            "anyway pass allow_incomplete=True (on the command line: lenspipe plot or inspect "
            "--allow-incomplete)"
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
        self.attrs: dict[str, Any] = dict(group.attrs)
        self.path = dataset_path(root, name)
        self.status = self.attrs.get("status")
        self.keys: set[str] | None = None
        self.nodes: list[str] = []
        self.values_checked = False
        if self.status in (PREPARED, COMPLETE):
            self.keys = set(sync(list_prefix(root.store, f"{self.path}/")))
            self.nodes = expected_nodes(self.attrs, self.keys, self.path)
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

    def fail(self, node: str | None, why: str, err: BaseException | None = None) -> NoReturn:
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
            array = open_array(self.root.store, f"{self.path}/{node}")
        except Exception as err:  # noqa: BLE001 - missing or torn document
            self.fail(node, f"cannot be opened ({type(err).__name__}: {err})", err)
        if self.keys is not None and has_checksum(array):
            skip = node == MARKERS_NODE or (node == VALUES_NODE and self.status != COMPLETE)
            missing = [] if skip else [k for k in chunk_keys(array) if k not in self.keys]
            if missing and node == VALUES_NODE:
                # name every damaged batch at once (decodes the others: damage only)
                CheckedArray(array, self.name, True).raise_if_damaged(None)
            if missing:
                self.fail(node, f"chunk {missing[0]} is missing ({len(missing)} missing)")
            self.values_checked = self.values_checked or node == VALUES_NODE
        return array

    def read(self, node: str) -> np.ndarray:
        array = self.array(node)
        try:
            return np.asarray(array[...])
        except Exception as err:  # noqa: BLE001 - checksum mismatch, torn chunk
            self.fail(node, f"a chunk does not decode ({type(err).__name__}: {err})", err)

    def check_markers(self) -> None:
        if self.status != COMPLETE:
            return
        markers = self.array(MARKERS_NODE)
        done, bad = read_markers(markers)
        if bad:
            first = next(iter(bad.items()))
            self.fail(
                MARKERS_NODE,
                f"{len(bad)} marker chunk(s) do not decode (batch {first[0]}: {first[1]})",
            )
        if not done.all():
            missing = np.flatnonzero(~done)
            self.fail(
                MARKERS_NODE,
                f"{missing.size} operator batch(es) of a complete dataset have no completion "
                f"marker (first: {missing[:10].tolist()})",
            )


def read_dataset_arrays(
    location: StoreLike,
    name: str,
    nodes: tuple[str, ...] = ("data", "noise_map", "mask"),
    *,
    allow_incomplete: bool = False,
    storage_options: dict | None = None,
) -> dict[str, np.ndarray]:
    """Only the named arrays of a dataset (native 2-D), read and checked as :func:`open_imaging`
    reads them (checksums), without building the dataset or checking its operator (the report's
    thumbnails). Errors as :func:`open_imaging`."""
    root = open_store(location, storage_options=storage_options)
    reader = _Reader(root, name, _readable_group(root, name, allow_incomplete))
    return {node: reader.read(node) for node in nodes}


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
    arrays = {node: reader.read(node) for node in BASE_ARRAYS}
    if reader.has(PSF_NODE):
        arrays["psf"] = reader.read(PSF_NODE)
    if reader.has(COVARIANCE_NODE):
        arrays["noise_covariance_matrix"] = reader.read(COVARIANCE_NODE)
    has_operator = reader.has(OPERATOR_GROUP)
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
        group = open_subgroup(reader.root.store, f"{reader.path}/{OPERATOR_GROUP}")
        op_attrs: dict[str, Any] = dict(group.attrs)
        kernel_shape = tuple(op_attrs["kernel_shape"])
    except Exception as err:  # noqa: BLE001 - torn document, attributes lost
        reader.fail(OPERATOR_GROUP, f"group document or kernel_shape unreadable ({err!r})", err)
    layout = OperatorLayout(np.asarray(imaging.mask), kernel_shape)
    stored_offsets = reader.read(OFFSETS_NODE)
    if not np.array_equal(stored_offsets, layout.offsets):
        reader.fail(
            OFFSETS_NODE,
            "the stored offsets differ from this lenspipe's band layout of the mask and "
            "kernel_shape",
        )
    values = reader.array(VALUES_NODE)
    if tuple(values.shape) != (layout.n_pixels, layout.n_offsets):
        reader.fail(
            VALUES_NODE,
            f"shape {tuple(values.shape)}, expected {(layout.n_pixels, layout.n_offsets)}",
        )
    checked = CheckedArray(
        values, imaging.name, reader.status == COMPLETE, chunks_checked=reader.values_checked
    )
    return ImagingSparseOperator.from_stored_values(
        checked,
        layout,
        kernel=imaging.psf.kernel.native,  # type: ignore[union-attr]
        noise_map_native=imaging.noise_map.native,
        data_native=imaging.data.native,
    )
