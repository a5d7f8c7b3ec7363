"""What is in a lens folder: the folders input's view of the file system, for
:mod:`pipeline.flow.discover`.

Rules (issue 14: a survey's store inside its input root was taken for a lens, so ``validate`` and
``run`` counted different surveys):

* Not a lens folder: a name starting with ``.`` (``.ipynb_checkpoints``), the run's own store or
  anything inside it, any other Zarr store (a folder holding ``zarr.json``, ``.zgroup`` or
  ``.zarray``) or anything inside one, and a folder holding none of the data, noise-map and PSF
  files. A folder holding some of them *is* a lens: its missing file is reported when it is
  prepared, so that a lens that lost a file never vanishes from the survey unnoticed.
* A configured file name ``x.fits`` also finds ``x.fits.gz`` (gzip), ``x.fits.fz`` and ``x.fz``
  (fpack, as DES delivers) when ``x.fits`` itself is absent (:func:`fits_name_forms`); two of those
  at once are ambiguous. :mod:`pipeline.io.fits` reads both kinds as they are.
* ``pixel_scales_file`` (e.g. PyAutoLens's ``info.json``): its key ``pixel_scales``, a number or
  ``[sy, sx]`` in arcsec per pixel, overrides the survey's for that folder
  (:func:`pixel_scales_in_file`).

Each folder is listed once (one ``readdir``) rather than ``stat``-ed per name: roots of 100,000
lenses sit on parallel file systems, where every metadata call costs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.flow.config import MAX_PIXEL_SCALE, brief_repr
from pipeline.io.store import not_a_regular_file
from pipeline.io.store.schema import ZARR_DOCUMENTS

__all__ = [
    "COMPRESSED",
    "HIDDEN",
    "MAX_PIXEL_SCALES_FILE",
    "FolderScan",
    "fits_name_forms",
    "pixel_scales_in_file",
]

#: Documents that make a folder a Zarr node (v3, v2 group, v2 array): never a lens folder.
#: Largest ``pixel_scales_file`` read (bytes): a few keys of JSON, never a data file.
MAX_PIXEL_SCALES_FILE = 2**20
#: gzip (astropy reads it whole) and fpack (tile-compressed HDUs) suffixes.
COMPRESSED = (".gz", ".fz")
#: Why a name starting with ``.`` is skipped (folders, and files of the MEF input).
HIDDEN = "hidden (its name starts with '.'): never a dataset"


def fits_name_forms(name: str) -> tuple[str, ...]:
    """The names under which a configured FITS file name is found, in order: the name itself,
    then its gzip and fpack forms (``x.fits`` -> ``x.fits.gz``, ``x.fits.fz``, ``x.fz``). A name
    that is already compressed is found only as itself."""
    if name.lower().endswith(COMPRESSED):
        return (name,)
    forms = [name, name + ".gz", name + ".fz"]
    if name.lower().endswith(".fits"):
        forms.append(name[: -len(".fits")] + ".fz")
    return tuple(forms)


def _present(path: Path) -> bool:
    """Whether ``path`` exists (a dangling link too: the task that reads it names it)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


class FolderScan:
    """One scan of a folders root: which matched folders are lenses, and their files.

    ``store_location``: the run's ``output.store`` (a path or URL)."""

    def __init__(self, root: Path, store_location: str) -> None:
        self.root = root
        self.store = _parts_under(root, store_location)
        self._zarr_above: dict[Path, bool] = {}

    def listing(self, folder: Path) -> frozenset[str]:
        """The names in ``folder`` (empty for a hidden one, which is never looked into)."""
        parts = folder.relative_to(self.root).parts
        if any(part.startswith(".") for part in parts):
            return frozenset()
        return frozenset(os.listdir(folder))

    def not_a_lens(self, folder: Path, listing: frozenset[str]) -> str | None:
        """Why ``folder`` (its names: ``listing``) is not a lens folder, or ``None``."""
        parts = folder.relative_to(self.root).parts
        if any(part.startswith(".") for part in parts):
            return HIDDEN
        if self.store is not None and parts[: len(self.store)] == self.store:
            if parts == self.store:
                return "the run's own output store (output.store), not a lens folder"
            return f"inside the run's own output store '{self.root.joinpath(*self.store)}'"
        for depth in range(1, len(parts)):  # folders above it (nested patterns), listed once
            node = self.root.joinpath(*parts[:depth])
            if node not in self._zarr_above:
                self._zarr_above[node] = not set(ZARR_DOCUMENTS).isdisjoint(os.listdir(node))
            if self._zarr_above[node]:
                return f"inside the Zarr store '{node}'"
        document = next((d for d in ZARR_DOCUMENTS if d in listing), None)
        if document is not None:
            return f"a Zarr store (it holds {document}), not a lens folder"
        return None

    @staticmethod
    def has(folder: Path, listing: frozenset[str], name: str) -> bool:
        """Whether ``name`` (a file name, or a path below ``folder``) is in ``folder``."""
        return _present(folder / name) if "/" in name or os.sep in name else name in listing

    def find(
        self, folder: Path, listing: frozenset[str], name: str, role: str, dataset: str
    ) -> tuple[str | None, str | None]:
        """``(path, problem)`` of a configured file in ``folder``: the name itself, else its
        one compressed form present; ``(None, None)`` when absent."""
        forms = fits_name_forms(name)
        if self.has(folder, listing, forms[0]):
            return os.fspath(folder / forms[0]), None
        found = [form for form in forms[1:] if self.has(folder, listing, form)]
        if len(found) > 1:
            return None, (
                f"dataset {dataset!r}: folder '{folder}' has no {name} but several compressed "
                f"forms of it ({', '.join(found)}); keep one, or set inputs.{role} to the one "
                "to use"
            )
        return (os.fspath(folder / found[0]), None) if found else (None, None)


def _parts_under(root: Path, location: str) -> tuple[str, ...] | None:
    """A local store at ``location`` as path parts under ``root`` (symlinks resolved), or
    ``None`` when it is elsewhere or at a URL."""
    if location.startswith("file://"):
        location = location[len("file://") :]
    elif "://" in location:
        return None
    store, real_root = os.path.realpath(location), os.path.realpath(root)
    if store == real_root or os.path.commonpath([store, real_root]) != real_root:
        return None
    return Path(store).relative_to(real_root).parts


def pixel_scales_in_file(path: Path) -> float | tuple[float, float] | None:
    """The ``pixel_scales`` key of a folder's JSON file: a number or ``(sy, sx)``, arcsec per
    pixel; ``None`` when the object has no such key.

    Raises
    ------
    ValueError
        Saying what is wrong with the file (completed by the caller with its path): not a
        regular file (checked before opening: a FIFO would block), larger than
        :data:`MAX_PIXEL_SCALES_FILE`, unreadable, not UTF-8, not a JSON object, or a value that
        is not one or two positive numbers of at most one degree.
    """
    why = not_a_regular_file(path)
    if why is not None:
        raise ValueError(f"{why}: it must be a JSON file")
    try:
        if os.stat(path).st_size > MAX_PIXEL_SCALES_FILE:
            raise ValueError(f"is larger than {MAX_PIXEL_SCALES_FILE} bytes: not a small JSON file")
        text = path.read_text(encoding="utf-8")
    except OSError as err:  # a dangling link, no permission
        raise ValueError(f"cannot be read ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"is not UTF-8 text ({err.reason})") from None
    try:
        content = json.loads(text)
    except (ValueError, RecursionError) as err:  # RecursionError: absurdly nested arrays
        raise ValueError(f"is not valid JSON ({err})") from None
    if not isinstance(content, dict):
        raise ValueError("must hold a JSON object with a key pixel_scales")
    if "pixel_scales" not in content:
        if "pixel_scale" in content:
            raise ValueError("has a key pixel_scale: name it pixel_scales (a number or [sy, sx])")
        return None
    value = content["pixel_scales"]
    values = value if isinstance(value, list) else [value]
    if not (
        len(values) == (2 if isinstance(value, list) else 1)
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        and all(0 < v <= MAX_PIXEL_SCALE for v in values)  # NaN fails too
    ):
        raise ValueError(
            f"has pixel_scales {brief_repr(value)}: give a number or a pair [sy, sx] of "
            f"positive numbers of at most {MAX_PIXEL_SCALE:g} (arcsec per pixel)"
        )
    if isinstance(value, list):
        return (float(values[0]), float(values[1]))
    return float(value)
