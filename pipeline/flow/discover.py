"""Inputs -> dataset specs: which files make each dataset.

Three layouts (``inputs.kind`` in the config): folders with the same file names in each, a
manifest CSV, or multi-extension FITS cutouts with named HDUs (one dataset per file and band).
Discovery reads no pixel data and opens no input file: it only ``stat``s them, so that a FIFO, a
device (``/dev/zero``) or a folder named as an input is reported before anything would block
reading it. Problems (unsafe or duplicate names, missing columns, inputs that are not regular
files) are collected per dataset, never raised for the whole survey. A mask file is part of a
dataset only when the config uses mask files (``mask.kind: file``): an unused mask column is
neither checked nor hashed.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline.exc import ConfigError, StoreError
from pipeline.flow.config import (
    MAX_ARCSEC,
    MAX_PIXEL_SCALE,
    Config,
    FileMask,
    FoldersInput,
    ManifestInput,
    MefInput,
    brief_repr,
)
from pipeline.io.store import not_a_regular_file, validate_dataset_name

__all__ = ["Discovery", "DatasetSpec", "FileRef", "discover"]


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

    def files(self) -> list[tuple[str, FileRef]]:
        """``(role, file)`` of every input this dataset uses: data, noise_map, psf, and mask
        when it has one."""
        refs = [("data", self.data), ("noise_map", self.noise_map), ("psf", self.psf)]
        return refs + ([("mask", self.mask)] if self.mask is not None else [])


@dataclass
class Discovery:
    """Specs of the valid datasets and ``(name, message)`` of the invalid ones."""

    specs: list[DatasetSpec] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


def discover(config: Config) -> Discovery:
    """The datasets a config describes, in a stable order (sorted by file/folder or CSV order)."""
    inputs = config.inputs
    if isinstance(inputs, FoldersInput):
        candidates = _from_folders(config, inputs)
    elif isinstance(inputs, ManifestInput):
        candidates = _from_manifest(config, inputs)
    else:
        candidates = _from_mef(config, inputs)
    uses_mask_files = isinstance(config.mask, FileMask)
    found = Discovery()
    seen: dict[str, DatasetSpec] = {}
    claimed: set[str] = set()  # names of problems: a later spec must not reuse them
    for spec_or_problem in candidates:
        if isinstance(spec_or_problem, tuple):
            found.problems.append(spec_or_problem)
            claimed.add(spec_or_problem[0])
            continue
        spec = spec_or_problem
        if not uses_mask_files and spec.mask is not None:
            spec = replace(spec, mask=None)  # unused: never opened, checked or hashed
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


def _from_folders(config: Config, inputs: FoldersInput):
    root = config.path(inputs.root)
    if not root.is_dir():
        raise ConfigError(f"inputs.root: folder '{root}' does not exist")
    for folder in sorted(p for p in root.glob(inputs.pattern) if p.is_dir()):
        yield DatasetSpec(
            name=folder.name,
            data=FileRef(os.fspath(folder / inputs.data), inputs.data_hdu),
            noise_map=FileRef(os.fspath(folder / inputs.noise_map), inputs.noise_map_hdu),
            psf=FileRef(os.fspath(folder / inputs.psf), inputs.psf_hdu),
            mask=FileRef(os.fspath(folder / inputs.mask), inputs.mask_hdu) if inputs.mask else None,
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


def _from_manifest(config: Config, inputs: ManifestInput):
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
            mask_file = (row.get("mask") or "").strip()
            yield DatasetSpec(
                name=name,
                data=_manifest_ref(row, "data", base),
                noise_map=_manifest_ref(row, "noise_map", base),
                psf=_manifest_ref(row, "psf", base),
                mask=_manifest_ref(row, "mask", base) if mask_file else None,
                pixel_scales=scale,
                mask_radius=radius,
                mask_centre=(cy, cx) if cy is not None and cx is not None else None,
            )


def _from_mef(config: Config, inputs: MefInput):
    root = config.path(inputs.root)
    if not root.is_dir():
        raise ConfigError(f"inputs.root: folder '{root}' does not exist")
    for file in sorted(p for p in root.glob(inputs.pattern) if p.is_file()):
        for band, hdus in inputs.bands.items():
            path = os.fspath(file)
            yield DatasetSpec(
                name=f"{file.stem}_{band}",
                data=FileRef(path, hdus.data),
                noise_map=FileRef(path, hdus.noise_map),
                psf=FileRef(path, hdus.psf),
                mask=FileRef(path, hdus.mask) if hdus.mask else None,
            )
