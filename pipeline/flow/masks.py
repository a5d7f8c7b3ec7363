"""The mask of one dataset from the config's ``mask`` section (:func:`dataset_mask`): a shape
(circular, annular, elliptical, with the manifest's per-dataset radius and centre), the
dataset's mask file, its flag map under a bit mask, or the union of several of these
(``mask.combine``).

Conventions: True = masked; a mask file masks where its value is non-zero; a flag map is an
integer image that masks where ``flags & bit_mask != 0``. A member's file must have the data's
shape. Every error is a :class:`~pipeline.exc.DatasetError` naming the dataset, the file, its
HDU and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pipeline.exc import DatasetError
from pipeline.flow.config import (
    AnnularMask,
    CircularMask,
    CombinedMask,
    EllipticalMask,
    FileMask,
    FlagsMask,
    MaskConfig,
    MaskMember,
)
from pipeline.imaging import Mask2D

if TYPE_CHECKING:
    from pipeline.flow.discover import DatasetSpec, FileRef

__all__ = ["DatasetMask", "dataset_mask", "describe_mask", "flag_map_mask"]

#: Largest integer that float64 holds exactly: flag values beyond it lose their low bits.
_EXACT = 2**53
_WHERE = {
    "mask": "folders: inputs.mask, manifest: mask column, MEF: the band's mask EXTNAME",
    "flags": "folders: inputs.flags, manifest: flags column, MEF: the band's flags EXTNAME",
}


@dataclass(frozen=True)
class DatasetMask:
    """A dataset's mask (True = masked) and, for each member of the config's mask in order,
    ``(kind, pixels it masks)`` (a pixel masked by two members counts in both); ``recorded``:
    whether the store records those counts (combined and flag-map masks)."""

    mask: Mask2D
    members: tuple[tuple[str, int], ...]
    recorded: bool = False

    def counts(self) -> list[dict[str, int | str]] | None:
        """What the store records as ``mask_members``: one ``{"kind", "masked"}`` per member,
        for a combined or flag-map mask (``None`` for the other kinds: older stores hold none)."""
        if not self.recorded:
            return None
        return [{"kind": kind, "masked": n} for kind, n in self.members]


def dataset_mask(
    spec: DatasetSpec, config: MaskConfig, shape: tuple[int, int], scales: tuple[float, float]
) -> DatasetMask:
    """The mask of ``spec``'s data (``shape`` pixels of ``scales`` arcsec): the union of what
    every member of ``config`` masks."""
    masks = [(m.kind, _member_mask(spec, m, shape, scales)) for m in config.members]
    members = tuple((kind, int(np.count_nonzero(np.asarray(m)))) for kind, m in masks)
    recorded = isinstance(config, CombinedMask | FlagsMask)
    if len(masks) == 1:
        return DatasetMask(masks[0][1], members, recorded)
    union = np.logical_or.reduce([np.asarray(m) for _, m in masks])
    return DatasetMask(Mask2D(union, scales), members, recorded)


def _member_mask(
    spec: DatasetSpec,
    member: MaskMember,
    shape: tuple[int, int],
    scales: tuple[float, float],
) -> Mask2D:
    if isinstance(member, CircularMask | AnnularMask | EllipticalMask):
        return _shape_mask(spec, member, shape, scales)
    if isinstance(member, FileMask):
        values = _read(spec, spec.mask, "mask", shape)
        return Mask2D(values != 0.0, scales)  # NaN != 0: masked
    if isinstance(member, FlagsMask):
        return Mask2D(flag_map_mask(spec, member.mask_value, shape), scales)
    raise DatasetError(f"dataset {spec.name!r}: unsupported mask settings {member!r}")


def _shape_mask(
    spec: DatasetSpec,
    member: CircularMask | AnnularMask | EllipticalMask,
    shape: tuple[int, int],
    scales: tuple[float, float],
) -> Mask2D:
    centre = spec.mask_centre or member.centre
    if isinstance(member, CircularMask):
        return Mask2D.circular(
            shape_native=shape,
            pixel_scales=scales,
            radius=spec.mask_radius or member.radius,
            centre=centre,
        )
    if isinstance(member, AnnularMask):
        return Mask2D.circular_annular(
            shape_native=shape,
            pixel_scales=scales,
            inner_radius=member.inner_radius,
            outer_radius=spec.mask_radius or member.outer_radius,
            centre=centre,
        )
    return Mask2D.elliptical(
        shape_native=shape,
        pixel_scales=scales,
        major_axis_radius=spec.mask_radius or member.major_axis_radius,
        axis_ratio=member.axis_ratio,
        angle=member.angle,
        centre=centre,
    )


def _what(role: str) -> str:
    return "mask file" if role == "mask" else "flag map"


def _missing(spec: DatasetSpec, role: str) -> DatasetError:
    kind = "file" if role == "mask" else "flags"
    return DatasetError(
        f"dataset {spec.name!r}: the mask uses a {_what(role)} (kind {kind!r}, alone or in "
        f"mask.combine) but the dataset of data '{spec.data.path}' has no {_what(role)}; "
        f"give one ({_WHERE[role]}) or remove that mask"
    )


def _read(spec: DatasetSpec, ref: FileRef | None, role: str, shape: tuple[int, int]) -> np.ndarray:
    """The pixels of the dataset's ``role`` file (``mask`` or ``flags``), of the data's shape."""
    from pipeline.io.fits import read_fits_array

    if ref is None:
        raise _missing(spec, role)
    what = _what(role)
    values = read_fits_array(ref.path, ref.hdu, dataset=spec.name)
    if values.shape != shape:
        raise DatasetError(
            f"dataset {spec.name!r}: {what} '{ref.path}' HDU {ref.hdu!r} has shape "
            f"{values.shape} but the data '{spec.data.path}' HDU {spec.data.hdu!r} are {shape}; "
            f"give a {what} of the data's cutout ({_WHERE[role]})"
        )
    return values


def flag_map_mask(spec: DatasetSpec, bit_mask: int, shape: tuple[int, int]) -> np.ndarray:
    """Where the dataset's flag map has any bit of ``bit_mask`` set (bool, True = masked).

    The map must be an integer image (``BITPIX`` > 0, no fractional ``BSCALE``/``BZERO``); a
    negative value of a ``BITPIX``-bit map is its two's complement (``-1`` in 16 bits has bits
    0 to 15 set); a blank (``BLANK``, read as NaN) is masked. Values of 2**53 or more cannot be
    read exactly and are refused."""
    from pipeline.io.fits import read_fits_header

    ref = spec.flags
    if ref is None:
        raise _missing(spec, "flags")
    where = f"dataset {spec.name!r}: flag map '{ref.path}' HDU {ref.hdu!r}"
    header = read_fits_header(ref.path, ref.hdu, dataset=spec.name)
    bitpix = header.get("BITPIX")
    scaling = [header.get(key, default) for key, default in (("BSCALE", 1), ("BZERO", 0))]
    integral = all(isinstance(v, int | float) and float(v).is_integer() for v in scaling)
    if not isinstance(bitpix, int) or bitpix < 0 or not integral or scaling[0] != 1:
        raise DatasetError(
            f"{where} is not an integer image (BITPIX={bitpix}, BSCALE={scaling[0]}, "
            f"BZERO={scaling[1]}); flag bits need integers: write the flags as an integer "
            "image, or use the file as a mask (non-zero = masked) with kind: file"
        )
    values = _read(spec, ref, "flags", shape)
    blank = np.isnan(values)
    if np.any(np.abs(values[~blank]) >= _EXACT):
        raise DatasetError(
            f"{where} holds values of 2**53 or more, whose bits cannot be read exactly; use a "
            "flag map of at most 53 bits (BITPIX 8, 16 or 32)"
        )
    flags = np.where(blank, 0, values).astype(np.int64)
    if bitpix < 64 and np.any(flags < 0):
        flags &= (1 << bitpix) - 1  # the map's own width: -1 in 16 bits is 0xFFFF
    return blank | ((flags & np.int64(bit_mask)) != 0)


def describe_mask(spec: DatasetSpec, config: MaskConfig) -> str:
    """The mask as the user specified it: its files, or its kinds and parameters (with the
    dataset's manifest overrides); a combination as ``union of ...``."""
    described = [_describe(spec, member) for member in config.members]
    if isinstance(config, CombinedMask):
        return f"union of {', '.join(described)}"
    return described[0]


def _describe(spec: DatasetSpec, member: MaskMember) -> str:
    if isinstance(member, FileMask):
        file = spec.mask
        return f"file '{file.path}' HDU {file.hdu!r}" if file is not None else "file"
    if isinstance(member, FlagsMask):
        flags = spec.flags
        where = f" '{flags.path}' HDU {flags.hdu!r}" if flags is not None else ""
        return f"flags{where} (bit_mask={member.mask_value})"
    params = member.model_dump(exclude={"kind", "bad_pixels"})
    if spec.mask_centre:
        params["centre"] = tuple(spec.mask_centre)
    if spec.mask_radius:
        kind = getattr(member, "kind", "")
        key = {"circular": "radius", "annular": "outer_radius"}.get(kind, "major_axis_radius")
        params[key] = spec.mask_radius
    text = ", ".join(f"{k}={v}" for k, v in params.items())
    return f"{getattr(member, 'kind', '')} ({text}; arcsec)"
