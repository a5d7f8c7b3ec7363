"""Inputs -> dataset specs: which files make each dataset.

Three layouts (``inputs.kind`` in the config): folders with the same file names in each, a
manifest CSV, or multi-extension FITS cutouts with named HDUs (one dataset per file and band).
Discovery reads no pixel data and opens no FITS file: it only ``stat``s them, so that a FIFO, a
device (``/dev/zero``) or a folder named as an input is reported before anything would block
reading it (the one file it reads, after the same check, is a folder's small
``pixel_scales_file`` when the config names one).
Problems (unsafe or duplicate names, missing columns, inputs that are not regular files) are
collected per dataset, never raised for the whole survey. A mask file is part of a dataset only
when the config uses mask files (``mask.kind: file``, or a ``file`` member of ``mask.combine``),
and a flag map only when it uses flag maps (``flags``, likewise): an unused mask or flags column
is neither checked nor hashed.

What is not a dataset is *skipped*, once, with its reason (``Discovery.skipped``; one INFO log
line each): names starting with ``.``, and under a folders root the run's own store, any Zarr
store and folders holding none of the data, noise-map and PSF files; a configured ``x.fits``
also finds ``x.fits.gz``, ``x.fits.fz`` and ``x.fz``. The folder rules live in
:mod:`pipeline.flow.folders`.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.exc import ConfigError, StoreError
from pipeline.flow.config import (
    MAX_ARCSEC,
    MAX_PIXEL_SCALE,
    Config,
    FoldersInput,
    ManifestInput,
    MefInput,
    brief_repr,
)
from pipeline.flow.folders import COMPRESSED, HIDDEN, FolderScan, pixel_scales_in_file
from pipeline.io.store import not_a_regular_file, validate_dataset_name

__all__ = ["Discovery", "DatasetSpec", "FileRef", "discover"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileRef:
    """One image HDU: a file path and an HDU index or EXTNAME."""

    path: str
    hdu: int | str = 0


@dataclass(frozen=True)
class DatasetSpec:
    """The recipe of one dataset: its name, its files and per-dataset overrides."""

    name: str
    data: FileRef
    noise_map: FileRef
    psf: FileRef
    mask: FileRef | None = None
    pixel_scales: float | tuple[float, float] | None = None
    mask_radius: float | None = None
    mask_centre: tuple[float, float] | None = None
    pixel_scales_file: FileRef | None = None
    bad_pixels: str | None = None  # "fail" or "mask": overrides mask.bad_pixels
    flags: FileRef | None = None  # a flag map (integer image), for flags masks
    band: str | None = None  # MEF input: the band's key under inputs.bands
    lens: str | None = None  # MEF input: the file's stem (the name is <lens>_<band>)

    def overrides(self) -> dict[str, Any]:
        """The per-dataset settings that change its prepared arrays (those set, in JSON types):
        recorded with the dataset, so that an edit of a manifest's ``mask_radius`` (say)
        prepares it again instead of keeping a result made with the old value."""
        values = {
            "pixel_scales": self.pixel_scales,
            "mask_radius": self.mask_radius,
            "mask_centre": self.mask_centre,
            "bad_pixels": self.bad_pixels,
        }
        return {
            key: list(value) if isinstance(value, tuple | list) else value
            for key, value in values.items()
            if value is not None
        }

    def files(self) -> list[tuple[str, FileRef]]:
        """``(role, file)`` of every input this dataset uses: data, noise_map, psf, mask and
        flags when it has them, and pixel_scales_file when its pixel scales came from one
        (recorded and hashed like the others, so an edit of it prepares the dataset again)."""
        refs = [("data", self.data), ("noise_map", self.noise_map), ("psf", self.psf)]
        if self.mask is not None:
            refs.append(("mask", self.mask))
        if self.flags is not None:
            refs.append(("flags", self.flags))
        if self.pixel_scales_file is not None:
            refs.append(("pixel_scales_file", self.pixel_scales_file))
        return refs


@dataclass
class Discovery:
    """Specs of the valid datasets, ``(name, message)`` of the invalid ones, and ``(path,
    reason)`` of the folders and files under the input root that are not datasets."""

    specs: list[DatasetSpec] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Skip:
    path: str
    reason: str


def discover(config: Config) -> Discovery:
    """The datasets a config describes, in a stable order (sorted by file/folder or CSV order),
    the problems of invalid entries, and what under the input root is not a dataset (each once,
    with its reason, also logged at INFO)."""
    inputs = config.inputs
    if isinstance(inputs, FoldersInput):
        candidates = _from_folders(config, inputs)
    elif isinstance(inputs, ManifestInput):
        candidates = _from_manifest(config, inputs)
    else:
        candidates = _from_mef(config, inputs)
    uses_mask_files, uses_flags = config.mask.uses("file"), config.mask.uses("flags")
    found = Discovery()
    seen: dict[str, DatasetSpec] = {}
    claimed: set[str] = set()  # names of problems: a later spec must not reuse them
    for spec_or_problem in candidates:
        if isinstance(spec_or_problem, _Skip):
            logger.info("inputs: skipped '%s': %s", spec_or_problem.path, spec_or_problem.reason)
            found.skipped.append((spec_or_problem.path, spec_or_problem.reason))
            continue
        if isinstance(spec_or_problem, tuple):
            found.problems.append(spec_or_problem)
            claimed.add(spec_or_problem[0])
            continue
        spec = spec_or_problem
        if not uses_mask_files and spec.mask is not None:
            spec = replace(spec, mask=None)  # unused: never opened, checked or hashed
        if not uses_flags and spec.flags is not None:
            spec = replace(spec, flags=None)
        odd = _first_irregular(spec)
        if odd is not None:
            found.problems.append((spec.name, odd))
            claimed.add(spec.name)
            continue
        try:
            validate_dataset_name(spec.name)
        except StoreError as err:
            found.problems.append((spec.name, f"{err} (from {spec.data.path})"))
            continue
        if spec.name in seen:
            found.problems.append(
                (
                    spec.name,
                    f"duplicate dataset name {spec.name!r}: {spec.data.path} and "
                    f"{seen[spec.name].data.path} both claim it; the first is kept",
                )
            )
            continue
        if spec.name in claimed:
            found.problems.append(
                (
                    spec.name,
                    f"duplicate dataset name {spec.name!r}: {spec.data.path} reuses the name of "
                    "an invalid entry above; fix or rename one of them",
                )
            )
            continue
        seen[spec.name] = spec
        found.specs.append(spec)
    return found


def _first_irregular(spec: DatasetSpec) -> str | None:
    for role, ref in spec.files():
        why = not_a_regular_file(ref.path)
        if why is not None:
            return (
                f"dataset {spec.name!r}: {role} '{ref.path}' {why}; inputs must be regular FITS "
                "files (reading this one could block the run forever)"
            )
    return None


def _folder_spec(
    folder: Path, inputs: FoldersInput, scan: FolderScan
) -> DatasetSpec | _Skip | tuple[str, str]:
    """The dataset of one folder, a problem naming it, or why it is not a lens folder."""
    listing = scan.listing(folder)
    why = scan.not_a_lens(folder, listing)
    if why is not None:
        return _Skip(os.fspath(folder), why)
    name = folder.name
    names = {"data": inputs.data, "noise_map": inputs.noise_map, "psf": inputs.psf}
    if inputs.mask:
        names["mask"] = inputs.mask
    if inputs.flags:
        names["flags"] = inputs.flags
    paths: dict[str, str | None] = {}
    for role, file in names.items():
        paths[role], problem = scan.find(folder, listing, file, role, name)
        if problem is not None:
            return (name, problem)
    if paths["data"] is None and paths["noise_map"] is None and paths["psf"] is None:
        return _Skip(
            os.fspath(folder),
            f"holds none of {inputs.data}, {inputs.noise_map}, {inputs.psf} (nor their .gz/.fz "
            "forms): not a lens folder",
        )

    def ref(role: str, hdu: int | str) -> FileRef:
        # an absent file stays in the spec: the prepare task fails naming it
        return FileRef(paths[role] or os.fspath(folder / names[role]), hdu)

    scales = scales_file = None
    if inputs.pixel_scales_file and scan.has(folder, listing, inputs.pixel_scales_file):
        path = folder / inputs.pixel_scales_file
        try:
            scales = pixel_scales_in_file(path)
        except ValueError as err:
            return (
                name,
                f"dataset {name!r}: pixel_scales_file '{path}' {err}; fix the file (without a "
                "pixel_scales key the folder uses the top-level pixel_scales)",
            )
        scales_file = FileRef(os.fspath(path)) if scales is not None else None
    return DatasetSpec(
        name=name,
        data=ref("data", inputs.data_hdu),
        noise_map=ref("noise_map", inputs.noise_map_hdu),
        psf=ref("psf", inputs.psf_hdu),
        mask=ref("mask", inputs.mask_hdu) if inputs.mask else None,
        flags=ref("flags", inputs.flags_hdu) if inputs.flags else None,
        pixel_scales=scales,
        pixel_scales_file=scales_file,
    )


def _from_folders(
    config: Config, inputs: FoldersInput
) -> Iterator[DatasetSpec | _Skip | tuple[str, str]]:
    root = config.path(inputs.root)
    if not root.is_dir():
        raise ConfigError(f"inputs.root: folder '{root}' does not exist")
    scan = FolderScan(root, config.store_location)
    for folder in sorted(p for p in root.glob(inputs.pattern) if p.is_dir()):
        try:
            yield _folder_spec(folder, inputs, scan)
        except OSError as err:
            yield (
                folder.name,
                f"dataset {folder.name!r}: folder '{folder}' cannot be examined "
                f"({err.strerror or err}); fix its permissions or move it out of inputs.root",
            )


def _hdu(value: str | None) -> int | str:
    if value is None or value.strip() == "":
        return 0
    value = value.strip()
    return int(value) if value.lstrip("-").isdigit() else value


def _number(
    value: str | None, column: str, *, positive: bool = False, limit: float = MAX_ARCSEC
) -> float | None:
    """A manifest cell as a number (``None`` if empty), finite, ``|x| <= limit`` (arcsec, the
    config's own bounds), positive where asked; else ``ValueError`` naming the column."""
    if value is None or value.strip() == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"column {column!r} must be a number, got {brief_repr(value)}") from None
    if not math.isfinite(number) or (positive and number <= 0) or abs(number) > limit:
        kind = "a positive, finite" if positive else "a finite"
        raise ValueError(
            f"column {column!r} must be {kind} number of at most {limit:g} in size, got "
            f"{brief_repr(value)}"
        )
    return number


def _manifest_ref(row: dict, column: str, base: Path) -> FileRef:
    file = Path((row.get(column) or "").strip())
    path = file if file.is_absolute() else base / file
    return FileRef(os.fspath(path), _hdu(row.get(f"{column}_hdu")))


def _from_manifest(
    config: Config, inputs: ManifestInput
) -> Iterator[DatasetSpec | tuple[str, str]]:
    path = config.path(inputs.path)
    why = not_a_regular_file(path)
    if why is not None:
        raise ConfigError(f"inputs.path: manifest '{path}' {why}: give a CSV file")
    try:
        handle = open(path, newline="", encoding="utf-8-sig")  # tolerate a BOM (Excel)
    except OSError as err:
        raise ConfigError(f"inputs.path: cannot read manifest '{path}': {err.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        required = {"name", "data", "noise_map", "psf"}
        missing = required - set(reader.fieldnames or ())
        if missing:
            raise ConfigError(
                f"manifest '{path}' lacks the column(s) {sorted(missing)}; the header must start "
                "with name,data,noise_map,psf"
            )
        base = path.parent
        for line, row in enumerate(reader, start=2):
            name = (row.get("name") or "").strip()
            label = name or f"line {line}"
            empty = [c for c in ("data", "noise_map", "psf") if not (row.get(c) or "").strip()]
            if empty:
                yield (label, f"manifest '{path}' line {line}: empty column(s) {empty}")
                continue
            try:
                radius = _number(row.get("mask_radius"), "mask_radius", positive=True)
                cy = _number(row.get("mask_centre_y"), "mask_centre_y")
                cx = _number(row.get("mask_centre_x"), "mask_centre_x")
                scale = _number(
                    row.get("pixel_scale"), "pixel_scale", positive=True, limit=MAX_PIXEL_SCALE
                )
            except ValueError as err:
                yield (label, f"manifest '{path}' line {line}: {err}")
                continue
            if (cy is None) != (cx is None):
                yield (
                    label,
                    f"manifest '{path}' line {line}: give both mask_centre_y and mask_centre_x",
                )
                continue
            bad_pixels = (row.get("bad_pixels") or "").strip() or None
            if bad_pixels not in (None, "fail", "mask"):
                yield (
                    label,
                    f"manifest '{path}' line {line}: bad_pixels is {bad_pixels!r}; use 'fail', "
                    "'mask' or leave it empty (the config's mask.bad_pixels)",
                )
                continue
            mask_file = (row.get("mask") or "").strip()
            flags_file = (row.get("flags") or "").strip()
            yield DatasetSpec(
                name=name,
                data=_manifest_ref(row, "data", base),
                noise_map=_manifest_ref(row, "noise_map", base),
                psf=_manifest_ref(row, "psf", base),
                mask=_manifest_ref(row, "mask", base) if mask_file else None,
                flags=_manifest_ref(row, "flags", base) if flags_file else None,
                pixel_scales=scale,
                mask_radius=radius,
                mask_centre=(cy, cx) if cy is not None and cx is not None else None,
                bad_pixels=bad_pixels,
            )


def _mef_stem(file: Path) -> str:
    """``x`` for ``x.fits``, ``x.fits.gz``, ``x.fits.fz`` and ``x.fz``."""
    name = file.name
    return Path(name[:-3] if name.lower().endswith(COMPRESSED) else name).stem


def _from_mef(config: Config, inputs: MefInput) -> Iterator[DatasetSpec | _Skip]:
    root = config.path(inputs.root)
    if not root.is_dir():
        raise ConfigError(f"inputs.root: folder '{root}' does not exist")
    for file in sorted(p for p in root.glob(inputs.pattern) if p.is_file()):
        if any(part.startswith(".") for part in file.relative_to(root).parts):
            # macOS writes ._x.fits (AppleDouble) beside every x.fits copied to some disks
            yield _Skip(os.fspath(file), HIDDEN)
            continue
        for band, hdus in inputs.bands.items():
            path, lens = os.fspath(file), _mef_stem(file)
            yield DatasetSpec(
                name=f"{lens}_{band}",
                data=FileRef(path, hdus.data),
                noise_map=FileRef(path, hdus.noise_map),
                psf=FileRef(path, hdus.psf),
                mask=FileRef(path, hdus.mask) if hdus.mask else None,
                flags=FileRef(path, hdus.flags) if hdus.flags else None,
                band=band,
                lens=lens,
            )
