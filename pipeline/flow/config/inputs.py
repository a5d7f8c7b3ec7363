"""Config models of what each dataset is made of: where its files are (``inputs``), its mask
(``mask``) and its over-sampling (``over_sampling``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import BeforeValidator, Field, field_serializer, field_validator, model_validator

from pipeline.flow.config.base import (
    MAX_ARCSEC,
    Centre,
    HduIndex,
    Int,
    SubSize,
    _Model,
    _sub_size,
)

__all__ = [
    "AdaptiveOverSampling",
    "AnnularMask",
    "CircularMask",
    "CombinedMask",
    "EllipticalMask",
    "FileMask",
    "FlagsMask",
    "FoldersInput",
    "Inputs",
    "ManifestInput",
    "MaskConfig",
    "MaskMember",
    "MefBand",
    "MefInput",
    "OverSamplingConfig",
    "RadialOverSampling",
    "UniformOverSampling",
    "implied_kind",
]


# ---------------------------------------------------------------------------------------- inputs
class FoldersInput(_Model):
    """One dataset per folder matching ``pattern`` under ``root``, with the same file names in
    each folder. The dataset name is the folder name. Not datasets, and listed once with the
    reason by ``lenspipe validate`` and ``run --dry-run``: names starting with ``.``
    (``.ipynb_checkpoints``), the run's own ``output.store`` and any other Zarr store (a folder
    holding ``zarr.json``, ``.zgroup`` or ``.zarray``), and folders holding none of the data,
    noise-map and PSF files (a folder with some of them is a dataset, whose missing file is
    reported when it is prepared). A file name ``x.fits`` also finds ``x.fits.gz``,
    ``x.fits.fz`` or ``x.fz`` when ``x.fits`` itself is absent (two of those at once are an
    error); HDU 0 of a tile-compressed file is its only image."""

    kind: Literal["folders"] = "folders"
    root: Path = Field(description="Folder holding one sub-folder per lens.")
    pattern: str = Field("*", description="Glob of dataset folders under root.")
    data: str = Field("data.fits", description="Image file name in each folder.")
    noise_map: str = Field("noise_map.fits", description="Noise-map (RMS) file name.")
    psf: str = Field("psf.fits", description="PSF file name.")
    mask: str | None = Field(None, description="Optional mask FITS file name (non-zero = masked).")
    flags: str | None = Field(
        None,
        description="Optional flag-map FITS file name (an integer image; `mask: {kind: flags}` "
        "or a `flags` member of `mask.combine` masks the pixels with the chosen bits set).",
    )
    pixel_scales_file: str | None = Field(
        None,
        description="Optional JSON file in each folder (e.g. PyAutoLens's `info.json`) whose key "
        "`pixel_scales` (a number or `[sy, sx]`, arcsec per pixel) overrides the top-level "
        "`pixel_scales` for that folder; a folder without the file or the key uses the top-level "
        "value. The file is recorded and hashed with the dataset's inputs.",
    )
    data_hdu: HduIndex | str = 0
    noise_map_hdu: HduIndex | str = 0
    psf_hdu: HduIndex | str = 0
    mask_hdu: HduIndex | str = 0
    flags_hdu: HduIndex | str = 0

    @field_validator("pixel_scales_file")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or Path(value).is_absolute()):
            raise ValueError(
                "must be a file name inside each lens folder (e.g. info.json), not empty and not "
                "an absolute path"
            )
        return value


class ManifestInput(_Model):
    """A CSV with one row per dataset: columns ``name, data, noise_map, psf`` and optionally
    ``data_hdu, noise_map_hdu, psf_hdu, mask, mask_hdu, flags, flags_hdu, pixel_scale,
    mask_radius, mask_centre_y, mask_centre_x, bad_pixels``. Paths are relative to the CSV's
    folder."""

    kind: Literal["manifest"] = "manifest"
    path: Path = Field(description="The manifest CSV file.")


class MefBand(_Model):
    """EXTNAMEs of one band's HDUs inside a multi-extension FITS cutout."""

    data: str
    noise_map: str
    psf: str
    mask: str | None = None
    flags: str | None = Field(
        None,
        description="EXTNAME of a flag map (an integer image, e.g. `VIS_FLAG`), for a `flags` "
        "mask or `mask.combine` member.",
    )


class MefInput(_Model):
    """Multi-extension FITS cutouts (e.g. Euclid MER: ``VIS_BGSUB``, ``VIS_RMS``, ``VIS_PSF``):
    one dataset per file and band, named ``<file stem>_<band>`` (``x`` for ``x.fits``,
    ``x.fits.gz`` and ``x.fits.fz``: a pattern ``*.fits*`` also takes compressed files). Files
    whose names start with ``.`` are skipped."""

    kind: Literal["mef"] = "mef"
    root: Path
    pattern: str = "*.fits"
    bands: dict[str, MefBand] = Field(min_length=1)


Inputs = Annotated[FoldersInput | ManifestInput | MefInput, Field(discriminator="kind")]


# ---------------------------------------------------------------------------------------- masks
#: Highest flag bit (a flag map is read as int64, whose bit 63 is its sign).
MAX_FLAG_BIT = 62


class _MaskBase(_Model):
    bad_pixels: Literal["fail", "mask"] = Field(
        "fail",
        description="Unmasked pixels with NaN or inf data, or noise that is not finite, <= 0 "
        "or out of float64's range for 1/sigma**2: `fail` the dataset naming the first one, or "
        "`mask` them (counted by kind, recorded with the dataset as `bad_pixels` and shown by "
        "`lenspipe status`). A manifest's `bad_pixels` column overrides it per dataset. In "
        "`mask.combine`, set it on the mask, not on a member.",
    )

    @property
    def members(self) -> tuple[MaskMember, ...]:
        """The masks whose union this mask is: itself, or a combination's members."""
        return (cast("MaskMember", self),)

    def uses(self, kind: str) -> bool:
        """Whether this mask, or one of its members, is of ``kind`` (``file``, ``flags``)."""
        return any(member.kind == kind for member in self.members)


class CircularMask(_MaskBase):
    kind: Literal["circular"] = "circular"
    radius: float = Field(gt=0, le=MAX_ARCSEC, description="arcsec")
    centre: Centre = (0.0, 0.0)


class AnnularMask(_MaskBase):
    kind: Literal["annular"] = "annular"
    inner_radius: float = Field(ge=0, le=MAX_ARCSEC, description="arcsec")
    outer_radius: float = Field(gt=0, le=MAX_ARCSEC, description="arcsec")
    centre: Centre = (0.0, 0.0)

    @model_validator(mode="after")
    def _ordered(self) -> AnnularMask:
        if self.inner_radius >= self.outer_radius:
            raise ValueError("inner_radius must be smaller than outer_radius")
        return self


class EllipticalMask(_MaskBase):
    kind: Literal["elliptical"] = "elliptical"
    major_axis_radius: float = Field(gt=0, le=MAX_ARCSEC, description="arcsec")
    axis_ratio: float = Field(gt=0, le=1)
    angle: float = Field(
        0.0, ge=-360, le=360, description="Degrees counter-clockwise from +x (one turn either way)."
    )
    centre: Centre = (0.0, 0.0)


class FileMask(_MaskBase):
    """Use each dataset's mask FITS file (folders ``mask:``, manifest ``mask`` column or MEF band
    ``mask`` EXTNAME)."""

    kind: Literal["file"] = "file"


FlagBit = Annotated[Int, Field(ge=0, le=MAX_FLAG_BIT)]


class FlagsMask(_MaskBase):
    """Mask the pixels of each dataset's flag map (folders ``flags:``, manifest ``flags``
    column or MEF band ``flags`` EXTNAME) where ``flags & bit_mask != 0``. Give ``bits`` or
    ``bit_mask``, not both. The map must be an integer image of the data's shape (a float one
    is refused: use it with ``kind: file``); blank pixels (``BLANK``) are masked."""

    kind: Literal["flags"] = "flags"
    bits: list[FlagBit] | None = Field(
        None,
        min_length=1,
        description=f"Flag bits that mask a pixel, numbered from 0 (the least significant) to "
        f"{MAX_FLAG_BIT}: `[0, 3]` is `bit_mask: 9`.",
    )
    bit_mask: Annotated[Int, Field(ge=1, le=2**63 - 1)] | None = Field(
        None, description="The bits that mask a pixel as one integer (`9` = bits 0 and 3)."
    )

    @model_validator(mode="after")
    def _one_form(self) -> FlagsMask:
        if (self.bits is None) == (self.bit_mask is None):
            raise ValueError(
                "give exactly one of bits (a list of bit numbers, e.g. [0, 3]) and bit_mask "
                "(one integer, e.g. 9)"
            )
        return self

    @property
    def mask_value(self) -> int:
        """The bits that mask a pixel, as one integer."""
        if self.bit_mask is not None:
            return self.bit_mask
        return sum(1 << bit for bit in set(self.bits or ()))


def _member(value: Any) -> Any:
    """A ``mask.combine`` member as written, refused early where it is a combination itself or
    sets what belongs to the whole mask."""
    if isinstance(value, dict):
        if "combine" in value or value.get("kind") == "combine":
            raise ValueError(
                "a member of mask.combine cannot be a combination itself: list all its members "
                "in the one mask.combine (a union of unions is one union)"
            )
        if "bad_pixels" in value:
            raise ValueError(
                "bad_pixels applies to the whole mask: set mask.bad_pixels, not a member's"
            )
        if "kind" not in value:
            raise ValueError(
                "each member needs its kind: circular, annular, elliptical, file or flags"
            )
    return value


MaskMember = Annotated[
    CircularMask | AnnularMask | EllipticalMask | FileMask | FlagsMask,
    Field(discriminator="kind"),
    BeforeValidator(_member),
]


class CombinedMask(_MaskBase):
    """The union of several masks: a pixel is masked when any member masks it (so it is
    unmasked only inside every geometric member, and where neither the mask file nor the flag
    map mask it). The manifest's ``mask_radius`` and ``mask_centre_y/x`` apply to every
    circular, annular and elliptical member. Written ``mask: {combine: [...]}``, ``kind:
    combine`` implied. Examples: [masks.md](masks.md)."""

    kind: Literal["combine"] = "combine"
    combine: list[MaskMember] = Field(
        min_length=1,
        description="The members: masks of kind circular, annular, elliptical, file or flags "
        "(each as in its own section, without bad_pixels).",
    )

    @property
    def members(self) -> tuple[MaskMember, ...]:
        return tuple(self.combine)

    @field_serializer("combine")
    def _members_only(self, members: list[MaskMember]) -> list[dict[str, Any]]:
        # bad_pixels is the whole mask's: a member's default is no setting of it
        return [m.model_dump(mode="json", exclude={"bad_pixels"}) for m in members]


def implied_kind(section: Any) -> str | None:
    """The ``kind`` a config section has without writing it: ``combine`` for a mask written
    ``{combine: [...]}``; else ``None``."""
    if isinstance(section, dict) and "combine" in section and "kind" not in section:
        return "combine"
    return None


def _combine_kind(value: Any) -> Any:
    """``mask: {combine: [...]}`` means ``kind: combine``."""
    kind = implied_kind(value)
    return value if kind is None else {"kind": kind, **value}


MaskConfig = Annotated[
    CircularMask | AnnularMask | EllipticalMask | FileMask | FlagsMask | CombinedMask,
    Field(discriminator="kind"),
    BeforeValidator(_combine_kind),
]


# ---------------------------------------------------------------------------------------- sampling
class UniformOverSampling(_Model):
    kind: Literal["uniform"] = "uniform"
    lp: SubSize = Field(
        4,
        description=_sub_size("Sub-pixels per axis of the light-profile grid"),
    )
    pixelization: SubSize = Field(
        4,
        description=_sub_size("Sub-pixels per axis of the pixelization grid"),
    )


class RadialOverSampling(_Model):
    """Sizes by distance to the mask centre: ``sub_size_list[i]`` inside ``radial_list[i]``."""

    kind: Literal["radial"] = "radial"
    sub_size_list: list[SubSize] = Field(
        min_length=1,
        description=_sub_size("Sub-pixels per axis, innermost ring first"),
    )
    radial_list: list[Annotated[float, Field(ge=0, le=MAX_ARCSEC)]] = Field(min_length=0)
    pixelization: SubSize = Field(
        4,
        description=_sub_size("Sub-pixels per axis of the pixelization grid"),
    )

    @model_validator(mode="after")
    def _lengths(self) -> RadialOverSampling:
        if len(self.radial_list) != len(self.sub_size_list) - 1:
            raise ValueError("radial_list needs exactly one entry fewer than sub_size_list")
        return self


class AdaptiveOverSampling(_Model):
    """Sizes by signal-to-noise: ``sub_size_upper`` where S/N > cut, else ``sub_size_lower``."""

    kind: Literal["adaptive"] = "adaptive"
    signal_to_noise_cut: float = Field(5.0, gt=0, le=10**12)
    sub_size_lower: SubSize = Field(
        2,
        description=_sub_size("Sub-pixels per axis at or below the cut"),
    )
    sub_size_upper: SubSize = Field(
        4,
        description=_sub_size("Sub-pixels per axis above the cut"),
    )
    pixelization: SubSize = Field(
        4,
        description=_sub_size("Sub-pixels per axis of the pixelization grid"),
    )


OverSamplingConfig = Annotated[
    UniformOverSampling | RadialOverSampling | AdaptiveOverSampling, Field(discriminator="kind")
]
