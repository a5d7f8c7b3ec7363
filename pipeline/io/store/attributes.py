"""A dataset's attributes as a typed, read-only record (:class:`DatasetRecord`): the one reader of
the attribute keys that :func:`~pipeline.io.store.prepared_attributes` and the driver's writes
(:mod:`pipeline.io.store.records`) spell. No Zarr import: a record is built from the attribute
mapping, wherever it was read.

Reading is tolerant: a key that is missing (a dataset still being prepared, a failed one, a
store of an older lenspipe) reads as ``None`` or empty, a value of the wrong type reads as
``None``, and keys the record does not know are kept in :attr:`DatasetRecord.raw`, never refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from pipeline.io.store.schema import DatasetStatus
from pipeline.io.store.sources import Source

__all__ = ["DatasetRecord"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})
# what `lenspipe inspect NAME` shows, in this order, as recorded
_SUMMARY_KEYS = (
    "status",
    "shape_native",
    "pixel_scales",
    "n_pixels",
    "psf_shape",
    "settings_hash",
    "timings",
    "error",
)
_SOURCE_FIELDS = frozenset(f.name for f in fields(Source))


def _empty() -> Mapping[str, Any]:
    return _EMPTY


@dataclass(frozen=True, kw_only=True)
class DatasetRecord:
    """What the store records about one dataset (the attributes of ``datasets/<name>``), typed.

    Attributes
    ----------
    status
        The recorded status; ``None`` if none is recorded yet (the group is being prepared, or
        its prepare was cut), :attr:`DatasetStatus.DAMAGED` for a value no lenspipe writes.
    settings_hash
        Hex sha256 of the settings the dataset was prepared with.
    settings
        Those settings (JSON types).
    n_batches
        Operator batches, if recorded with the dataset (schema 1 records them on the operator
        group instead: ``None`` then).
    token
        A random hex string, new each time the dataset is prepared (worker caches key on it).
    sources
        The input files it was prepared from, in recorded order.
    n_pixels
        Unmasked pixels N.
    shape_native
        (ny, nx) of the frame, pixels.
    psf_shape
        (ky, kx) of the PSF kernel, pixels; ``None`` without a PSF.
    pixel_scales
        (y, x) arcsec per pixel.
    timings
        Wall times in seconds by name (``prepare_seconds``, ``operator_seconds``).
    error
        Why the dataset failed; ``None`` unless it did.
    error_type
        The class name of the exception that failed it (``"FitsReadError"``), if recorded.
    bad_pixels
        Bad-pixel counts, if recorded: a total, or counts by kind (``{"nan_data": 3}``); ``None``
        where the dataset records none.
    check_noise_map
        Whether the noise map was checked (positive and finite) when prepared.
    bunit
        The unit of the data (its HDU's ``BUNIT`` card, e.g. ``"electron/s"``), as the input
        file gives it; ``None`` when the header has none.
    band
        The band of a multi-extension FITS input (its key under ``inputs.bands``); ``None`` for
        other inputs.
    lens
        The lens of a multi-extension FITS input: the file's stem, as in the dataset name
        ``<lens>_<band>``; ``None`` for other inputs.
    overrides
        The per-dataset settings it was prepared with (a manifest's ``pixel_scale``,
        ``mask_radius``, ``mask_centre``, ``bad_pixels``, a folder's ``pixel_scales_file``
        value; ``{}`` for none); ``None`` in stores that predate recording them.
    raw
        Every attribute as recorded (JSON types), the keys above included.
    """

    status: DatasetStatus | None = None
    settings_hash: str | None = None
    settings: Mapping[str, Any] = field(default_factory=_empty)
    n_batches: int | None = None
    token: str | None = None
    sources: tuple[Source, ...] = ()
    n_pixels: int | None = None
    shape_native: tuple[int, ...] | None = None
    psf_shape: tuple[int, ...] | None = None
    pixel_scales: tuple[float, ...] | None = None
    timings: Mapping[str, float] = field(default_factory=_empty)
    error: str | None = None
    error_type: str | None = None
    bad_pixels: int | Mapping[str, int] | None = None
    check_noise_map: bool | None = None
    bunit: str | None = None
    band: str | None = None
    lens: str | None = None
    overrides: Mapping[str, Any] | None = None
    raw: Mapping[str, Any] = field(default_factory=_empty)

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> DatasetRecord:
        """The record of a dataset's attribute mapping (as :func:`~pipeline.io.store.scan_datasets`
        or :func:`~pipeline.io.store.dataset_attrs` return it). Never raises on a missing,
        unknown or ill-typed key."""
        raw = MappingProxyType(dict(attrs))
        return cls(
            status=_status(raw.get("status")),
            settings_hash=_text(raw.get("settings_hash")),
            settings=_mapping(raw.get("settings")),
            n_batches=_count(raw.get("n_batches")),
            token=_text(raw.get("token")),
            sources=_sources(raw.get("sources")),
            n_pixels=_count(raw.get("n_pixels")),
            shape_native=_shape(raw.get("shape_native")),
            psf_shape=_shape(raw.get("psf_shape")),
            pixel_scales=_floats(raw.get("pixel_scales")),
            timings=_seconds(raw.get("timings")),
            error=_text(raw.get("error")),
            error_type=_text(raw.get("error_type")),
            bad_pixels=_bad_pixels(raw.get("bad_pixels")),
            check_noise_map=_flag(raw.get("check_noise_map")),
            bunit=_text(raw.get("bunit")),
            band=_text(raw.get("band")),
            lens=_text(raw.get("lens")),
            overrides=_mapping(raw["overrides"]) if "overrides" in raw else None,
            raw=raw,
        )

    def summary_items(self) -> tuple[tuple[str, Any], ...]:
        """(name, value as recorded) of the attributes a summary of the dataset shows, in
        display order (``None`` for one not recorded): status, shape_native, pixel_scales,
        n_pixels, psf_shape, settings_hash, timings, error."""
        return tuple((key, self.raw.get(key)) for key in _SUMMARY_KEYS)


def _status(value: Any) -> DatasetStatus | None:
    if value is None:
        return None
    try:
        return DatasetStatus(value)
    except ValueError:
        return DatasetStatus.DAMAGED


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return MappingProxyType(dict(value)) if isinstance(value, Mapping) else _EMPTY


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _shape(value: Any) -> tuple[int, ...] | None:
    if not isinstance(value, list | tuple) or not all(_count(v) is not None for v in value):
        return None
    return tuple(int(v) for v in value)


def _floats(value: Any) -> tuple[float, ...] | None:
    if not isinstance(value, list | tuple) or not all(_number(v) for v in value):
        return None
    return tuple(float(v) for v in value)


def _seconds(value: Any) -> Mapping[str, float]:
    if not isinstance(value, Mapping):
        return _EMPTY
    return MappingProxyType({str(k): float(v) for k, v in value.items() if _number(v)})


def _bad_pixels(value: Any) -> int | Mapping[str, int] | None:
    """A count, or counts by kind (entries that are not counts left out)."""
    if isinstance(value, Mapping):
        counts = {str(k): int(v) for k, v in value.items() if _count(v) is not None}
        return MappingProxyType(counts)
    return _count(value)


def _sources(value: Any) -> tuple[Source, ...]:
    """The recorded input files; an entry without a role or path (never written) is left out."""
    if not isinstance(value, list | tuple):
        return ()
    found = []
    for entry in value:
        if not isinstance(entry, Mapping):
            continue
        known = {k: v for k, v in entry.items() if k in _SOURCE_FIELDS}
        if isinstance(known.get("role"), str) and isinstance(known.get("path"), str):
            found.append(Source(**known))
    return tuple(found)
