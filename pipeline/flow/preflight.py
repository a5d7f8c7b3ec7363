"""Checks of every dataset's input files before anything runs (``lenspipe validate``,
``lenspipe run --dry-run``): the problems a run would meet, all of them at once.

Reads headers only (:mod:`pipeline.io.headers`, one open per file, files in parallel threads),
and pixels only of the PSFs when ``psf.trim_fraction`` needs them. A dataset's inputs are those of
:meth:`~pipeline.flow.discover.DatasetSpec.files`; per role:

* every FITS input exists, is FITS, has the HDU named (else the HDUs present are listed) and that
  HDU is a 2-D image (not a table, not empty, not a cube);
* every per-pixel input (``noise_map``, ``mask``, ``flags``, ...) has the data's shape, a flag
  map holds integers; the PSF any 2-D shape, odd in both axes, not larger than the data once
  trimmed as ``psf`` says;
* the pixel scale: under ``pixel_scales: header`` the data header must give one; an explicit
  scale (the config's, a manifest's ``pixel_scale``, a folder's ``pixel_scales_file``) that differs
  by more than :data:`SCALE_TOLERANCE` from the data header's is a warning, an error under
  ``pixel_scales_check: strict`` (headers without a scale are not compared);
* the mask's circular, annular and elliptical members (the mask itself, or those of
  ``mask.combine``) leave at least one pixel unmasked.

With ``psf.trim_to`` or ``psf.trim_fraction`` set, :class:`TrimmingEstimate` gives the stored
operator's size with whole and with trimmed kernels.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from pipeline.exc import FitsReadError, KernelError
from pipeline.flow.config import (
    AnnularMask,
    CircularMask,
    CombinedMask,
    Config,
    EllipticalMask,
    MaskConfig,
)
from pipeline.flow.discover import DatasetSpec, FileRef
from pipeline.flow.masks import dataset_mask
from pipeline.imaging.geometry import (
    PIXEL_SCALE_TOLERANCE,
    as_pixel_scales,
    pixel_scale_mismatch,
)
from pipeline.imaging.trimming import trim_shape_for_fraction
from pipeline.io.fits import pixel_scales_from_header
from pipeline.io.headers import FileHeaders, HduSummary, read_file_headers, warnings_as_errors
from pipeline.operators.layout import n_offsets_for_kernel

__all__ = ["SCALE_TOLERANCE", "Preflight", "Problem", "TrimmingEstimate", "preflight"]

#: Relative difference between an explicit pixel scale and the header's that is reported.
SCALE_TOLERANCE = PIXEL_SCALE_TOLERANCE
#: Roles of :meth:`DatasetSpec.files` that are not FITS images.
NOT_FITS = frozenset({"pixel_scales_file"})
#: Files read at once (I/O bound: headers of local or network files).
MAX_THREADS = 32

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One problem of one dataset: where (``role``, ``file``, ``hdu``; None for the dataset as a
    whole) and what, with the fix."""

    dataset: str
    role: str | None
    file: str | None
    hdu: int | str | None
    severity: Severity
    message: str

    def __str__(self) -> str:
        """``lens_1: data 'a/data.fits' HDU 'SCI': no such HDU; ...``"""
        parts = [self.dataset]
        if self.file is not None:
            parts.append(f"{self.role} '{self.file}' HDU {self.hdu!r}")
        return ": ".join([*parts, self.message])


@dataclass(frozen=True)
class TrimmingEstimate:
    """The stored operator ``values`` (N rows of ``n_offsets`` numbers, before compression) of
    ``n_datasets`` datasets with whole and with trimmed PSFs, in bytes. ``n_exact``: the
    datasets whose N is exact, their mask being geometric (circular, annular, elliptical, or a
    combination of those); for the others N is an upper bound, as mask files and flag maps are
    not read: the pixels the geometric members leave, or every pixel of the data."""

    n_datasets: int
    whole_bytes: int
    trimmed_bytes: int
    n_exact: int

    def line(self) -> str:
        """``PSF trimming: operator ~3.1 GB -> 0.9 GB (-71%) over 40 datasets (...)``."""
        saving = 1 - self.trimmed_bytes / self.whole_bytes if self.whole_bytes else 0.0
        bound = self.n_datasets - self.n_exact
        if not bound:
            basis = "N: the unmasked pixels of the geometric mask"
        elif not self.n_exact:
            basis = "N: an upper bound, mask files and flag maps are not read"
        else:
            basis = (
                f"N exact for {self.n_exact}, an upper bound for {bound}: mask files and flag "
                "maps are not read"
            )
        return (
            f"PSF trimming: operator ~{format_bytes(self.whole_bytes)} -> "
            f"{format_bytes(self.trimmed_bytes)} (-{saving:.0%}) over {self.n_datasets} "
            f"dataset{'' if self.n_datasets == 1 else 's'} ({basis}; before compression)"
        )


@dataclass(frozen=True)
class Preflight:
    """What :func:`preflight` found: every problem (datasets in order) and, with PSF trimming
    set, the operator-size estimate over the datasets it could size."""

    problems: list[Problem] = field(default_factory=list)
    trimming: TrimmingEstimate | None = None
    n_files: int = 0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]


def format_bytes(n: float) -> str:
    """``3.1 GB`` (decimal units)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def preflight(
    config: Config, specs: Iterable[DatasetSpec], *, max_threads: int = MAX_THREADS
) -> Preflight:
    """Every problem of every dataset's input files (see the module docstring), reading each
    file's headers once, ``max_threads`` files at a time; never raises for a bad input."""
    specs = list(specs)
    keys: dict[str, set[int | str]] = defaultdict(set)
    arrays: dict[str, set[int | str]] = defaultdict(set)
    for spec in specs:
        for role, ref in spec.files():
            if role not in NOT_FITS:
                keys[ref.path].add(ref.hdu)
        if config.psf.trim_fraction is not None:
            arrays[spec.psf.path].add(spec.psf.hdu)

    def read(path: str) -> FileHeaders | str:
        try:
            return read_file_headers(path, keys[path], arrays=arrays.get(path, ()))
        except FitsReadError as err:
            return str(err).removeprefix(f"FITS file '{path}': ")

    files: dict[str, FileHeaders | str] = {}
    if keys:
        # astropy's warnings are errors here as in every read of pipeline.io.fits, in all threads
        with (
            warnings_as_errors(),
            ThreadPoolExecutor(max(1, min(max_threads, len(keys)))) as pool,
        ):
            files = dict(zip(keys, pool.map(read, keys), strict=True))

    problems: list[Problem] = []
    sizes: list[tuple[int, int, bool]] = []
    for spec in specs:
        checked = _DatasetCheck(spec, config, files)
        checked.run()
        problems += checked.problems
        if checked.size is not None:
            sizes.append(checked.size)
    trimming = None
    if config.psf.trims and config.sparse_operator.enabled:
        trimming = TrimmingEstimate(
            n_datasets=len(sizes),
            whole_bytes=sum(s[0] for s in sizes),
            trimmed_bytes=sum(s[1] for s in sizes),
            n_exact=sum(1 for s in sizes if s[2]),
        )
    return Preflight(problems, trimming, len(files))


class _DatasetCheck:
    """The checks of one dataset; ``problems`` in the order of its files, ``size``: its
    operator's (whole, trimmed) bytes and whether N is exact, when it can be sized."""

    def __init__(self, spec: DatasetSpec, config: Config, files: dict[str, FileHeaders | str]):
        self.spec, self.config, self.files = spec, config, files
        self.problems: list[Problem] = []
        self.size: tuple[int, int, bool] | None = None

    def add(
        self, role: str | None, ref: FileRef | None, message: str, severity: Severity = "error"
    ):
        file, hdu = (ref.path, ref.hdu) if ref is not None else (None, None)
        self.problems.append(Problem(self.spec.name, role, file, hdu, severity, message))

    def run(self) -> None:
        images: dict[str, HduSummary] = {}
        refs = dict(self.spec.files())
        broken: set[str] = set()  # files already reported unreadable for this dataset
        for role, ref in refs.items():
            if role in NOT_FITS:
                continue
            got = self.files[ref.path]
            if isinstance(got, str):
                if ref.path not in broken:
                    broken.add(ref.path)
                    self.add(role, ref, _with_fix(got))
                continue
            hdu = self.image(role, ref, got)
            if hdu is not None:
                images[role] = hdu
        data = images.get("data")
        if data is None:
            return
        for role, hdu in images.items():
            if role not in ("data", "psf") and hdu.shape != data.shape:
                self.add(
                    role,
                    refs[role],
                    f"shape {hdu.shape} differs from the data's {data.shape} (data "
                    f"'{self.spec.data.path}' HDU {self.spec.data.hdu!r}); every per-pixel input "
                    "must have the image's shape",
                )
        flags = images.get("flags")
        if flags is not None and not _integer_image(flags):
            self.add(
                "flags",
                refs["flags"],
                f"a flag map must be an integer image, not {flags.dtype} (BITPIX="
                f"{flags.header.get('BITPIX')}): write the flags as integers, or use the file "
                "as a mask (non-zero = masked) with kind: file",
            )
        psf = images.get("psf")
        if psf is not None and any(side % 2 == 0 for side in psf.shape):
            self.add(
                "psf",
                self.spec.psf,
                f"shape {psf.shape} is not odd in both axes: a PSF is centred on a pixel; cut "
                "it to an odd shape",
            )
            psf = None
        used = self.used_kernel(psf) if psf is not None else None
        too_big = used is not None and (used[0] > data.shape[0] or used[1] > data.shape[1])
        if psf is not None and used is not None and too_big:
            trimmed = " (trimmed by psf)" if used != psf.shape else ""
            self.add(
                "psf",
                self.spec.psf,
                f"the PSF kernel {used}{trimmed} is larger than the image {data.shape}; give "
                "a smaller PSF or a larger cutout, or trim it (psf.trim_to)",
            )
            used = None
        scales = self.pixel_scales(data)
        if scales is None:
            return
        unmasked, exact = _unmasked_pixels(self.spec, self.config.mask, data.shape, scales)
        if unmasked == 0:
            kinds = " + ".join(m.kind for m in self.config.mask.members if m.kind in _GEOMETRIC)
            self.add(
                None,
                None,
                f"the {kinds} mask leaves no pixel of the {data.shape[0]}x"
                f"{data.shape[1]} data unmasked at {scales[0]:g}x{scales[1]:g} arcsec per "
                "pixel; check the mask's radius and centre (arcsec) and the pixel scale",
            )
            return
        if psf is not None and used is not None and self.config.psf.trims:
            n = unmasked if unmasked is not None else math.prod(data.shape)
            itemsize = np.dtype(self.config.sparse_operator.dtype).itemsize
            whole = n * n_offsets_for_kernel((psf.shape[0], psf.shape[1])) * itemsize
            self.size = (whole, n * n_offsets_for_kernel(used) * itemsize, exact)

    def image(self, role: str, ref: FileRef, got: FileHeaders) -> HduSummary | None:
        """The 2-D image ``ref`` names, else None with its problem added."""
        index = got.found.get(ref.hdu)
        if index is None:
            self.add(
                role,
                ref,
                f"no such HDU; the file has HDU {got.listing()}: name one of them (index or "
                "EXTNAME)",
            )
            return None
        hdu = got.hdus[index]
        named = f"HDU {hdu.index} {hdu.name!r}"
        if not hdu.is_image:
            self.add(role, ref, f"{named} is a {hdu.kind}, not an image; name an image HDU")
        elif not hdu.shape:
            images = ", ".join(f"{h.index} {h.name!r}" for h in got.images())
            hint = f"; the images in this file are HDU {images}: name one" if images else ""
            self.add(role, ref, f"{named} has no data (NAXIS = 0){hint}")
        elif len(hdu.shape) != 2:
            self.add(
                role,
                ref,
                f"{named} is {len(hdu.shape)}-D (shape {hdu.shape}), not a 2-D image; name a 2-D "
                "HDU or write the plane you want to a file of its own",
            )
        else:
            return hdu
        return None

    def pixel_scales(self, data: HduSummary) -> tuple[float, float] | None:
        """The dataset's ``(sy, sx)`` arcsec as a run would use them, None when unreadable
        (its problem added); an explicit scale is compared with the header's."""
        spec, config = self.spec, self.config
        explicit = spec.pixel_scales if spec.pixel_scales is not None else config.pixel_scales
        if explicit == "header":
            try:
                return pixel_scales_from_header(data.header, spec.data.hdu)
            except FitsReadError as err:
                self.add(
                    "data",
                    spec.data,
                    f"{str(err).partition(': ')[2]}; under pixel_scales: header the data header "
                    "must give the scale: add PIXSCAY/PIXSCAX cards, or give pixel_scales "
                    "(arcsec) in the config, a manifest pixel_scale column or a folder "
                    "pixel_scales_file",
                )
                return None
        scales = as_pixel_scales(explicit)
        in_header = data.pixel_scales()
        if in_header is None:
            return scales
        worst = pixel_scale_mismatch(scales, in_header)
        if worst > SCALE_TOLERANCE:
            if spec.pixel_scales_file is not None:
                source = f"pixel_scales_file '{spec.pixel_scales_file.path}'"
            elif spec.pixel_scales is not None:
                source = "the manifest's pixel_scale column"
            else:
                source = "the config's pixel_scales"
            strict = config.pixel_scales_check == "strict"
            escalate = "" if strict else "; pixel_scales_check: strict makes this an error"
            self.add(
                "data",
                spec.data,
                f"pixel scale {_pair(scales)} arcsec from {source} differs by {worst:.0%} from "
                f"the header's {_pair(in_header)} arcsec; fix whichever is wrong (`pixel_scales: "
                f"header` uses the header's){escalate}",
                "error" if strict else "warning",
            )
        return scales

    def used_kernel(self, psf: HduSummary) -> tuple[int, int] | None:
        """The PSF's shape as the operator uses it (trimmed when ``psf`` says so), None when
        ``psf.trim_fraction`` cannot trim it (its problem added)."""
        trim = self.config.psf
        whole = (psf.shape[0], psf.shape[1])
        if trim.trim_to is not None:
            return (min(trim.trim_to[0], whole[0]), min(trim.trim_to[1], whole[1]))
        if trim.trim_fraction is None:
            return whole
        got = self.files[self.spec.psf.path]
        assert isinstance(got, FileHeaders)  # psf is a readable 2-D image: its pixels were read
        try:
            return trim_shape_for_fraction(got.arrays[self.spec.psf.hdu], trim.trim_fraction)
        except KernelError as err:
            self.add("psf", self.spec.psf, f"{err}; fix the PSF file")
            return None


_GEOMETRIC = ("circular", "annular", "elliptical")


def _unmasked_pixels(
    spec: DatasetSpec, config: MaskConfig, shape: tuple[int, ...], scales: tuple[float, float]
) -> tuple[int | None, bool]:
    """The pixels the mask's circular, annular and elliptical members leave unmasked (as a run
    makes them: :func:`~pipeline.flow.masks.dataset_mask`), None without such a member; and
    whether that is exact (False: mask files or flag maps, not read, mask more)."""
    shapes = [
        m for m in config.members if isinstance(m, CircularMask | AnnularMask | EllipticalMask)
    ]
    if not shapes:
        return None, False
    exact = len(shapes) == len(config.members)
    only_shapes = shapes[0] if len(shapes) == 1 else CombinedMask(combine=list(shapes))
    native = (int(shape[0]), int(shape[1]))
    return dataset_mask(spec, only_shapes, native, scales).mask.pixels_in_mask, exact


def _integer_image(hdu: HduSummary) -> bool:
    """Integers as read (``BITPIX`` > 0, ``BSCALE`` 1, an integral ``BZERO``): what a flag
    map's bits need (:func:`~pipeline.flow.masks.flag_map_mask`)."""
    header = hdu.header
    scale, zero = header.get("BSCALE", 1), header.get("BZERO", 0)
    return (
        int(header.get("BITPIX", 0)) > 0
        and scale == 1
        and isinstance(zero, int | float)
        and float(zero).is_integer()
    )


def _pair(scales: tuple[float, float]) -> str:
    return f"{scales[0]:g}" if scales[0] == scales[1] else f"[{scales[0]:g}, {scales[1]:g}]"


def _with_fix(message: str) -> str:
    if message == "file not found":
        return "file not found; fix the path (inputs in the config, or the manifest) or restore the file"
    return message
