"""The input files of a dataset: what was read (path, HDU, sha256, size, mtime) and whether it
changed since. Files are checked with ``stat`` before they are opened: a FIFO or ``/dev/zero``
would block a hash forever (PITFALLS)."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.exc import InputFileError
from pipeline.io.files import file_kind, not_a_regular_file

__all__ = ["Source", "file_sha256", "not_a_regular_file", "source_changed"]


@dataclass(frozen=True)
class Source:
    """One input file of a dataset: its role (data, noise_map, psf, mask), path, HDU, sha256, and
    the size and modification time (ns) it had when it was hashed (:func:`source_changed`
    compares them, then the sha256 only when they differ)."""

    role: str
    path: str
    hdu: int | str = 0
    sha256: str | None = field(default=None)
    size: int | None = None
    mtime_ns: int | None = None

    @classmethod
    def from_file(cls, role: str, path: str | os.PathLike, hdu: int | str = 0) -> Source:
        """Hash ``path`` and record its size and mtime; refuses (:class:`InputFileError`) a
        path that is missing or not a regular file, before opening it: a FIFO or ``/dev/zero``
        would block the hash forever (PITFALLS)."""
        digest, info = _hash_regular_file(path)
        return cls(role, os.fspath(path), hdu, digest, int(info.st_size), int(info.st_mtime_ns))


def _regular_stat(path: str | os.PathLike) -> os.stat_result:
    """``os.stat`` of a regular file (symlinks followed), else :class:`InputFileError`."""
    try:
        info = os.stat(path)
    except FileNotFoundError as err:
        raise InputFileError(f"input file {os.fspath(path)!r}: file not found") from err
    except OSError as err:
        raise InputFileError(f"input file {os.fspath(path)!r} cannot be read: {err}") from err
    if not stat.S_ISREG(info.st_mode):
        raise InputFileError(
            f"input file {os.fspath(path)!r} is {file_kind(info.st_mode)}, not a regular file: "
            "only regular files are read (a FIFO or a device could block the run forever); "
            "give the path of the file itself"
        )
    return info


def _hash_regular_file(path: str | os.PathLike) -> tuple[str, os.stat_result]:
    """(hex sha256, stat before reading) of a regular file. The file is checked with ``stat``
    before it is opened, then opened non-blocking and checked again on the open descriptor (a
    file swapped for a FIFO in between is refused, never read)."""
    info = _regular_stat(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as err:
        raise InputFileError(f"input file {os.fspath(path)!r} cannot be read: {err}") from err
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputFileError(f"input file {os.fspath(path)!r} is not a regular file")
        digest = hashlib.sha256()
        try:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        except OSError as err:
            raise InputFileError(f"input file {os.fspath(path)!r} cannot be read: {err}") from err
    return digest.hexdigest(), info


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a regular file's bytes (:class:`InputFileError` for anything else)."""
    return _hash_regular_file(path)[0]


def source_changed(source: Source | Mapping[str, Any]) -> str | None:
    """Why the file of a recorded source no longer matches what was read, or ``None`` if it
    does. Size and mtime are compared first (no read); when they differ, the sha256 decides (a
    file touched but unchanged is unchanged). ``source``: a :class:`Source` or its recorded
    attribute dictionary. Reasons: ``"missing"``, ``"not a regular file (a FIFO ...)"``,
    ``"size 123 -> 456"``, ``"sha256 differs"``, ``"cannot be read: ..."``."""
    if isinstance(source, Mapping):
        known = {"role", "path", "hdu", "sha256", "size", "mtime_ns"}
        source = Source(**{k: v for k, v in source.items() if k in known})
    try:
        info = os.stat(source.path)
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        return f"cannot be read: {err}"
    if not stat.S_ISREG(info.st_mode):
        return f"{file_kind(info.st_mode)}, not a regular file"
    if source.size is not None and info.st_size != source.size:
        return f"size {source.size} -> {info.st_size}"
    if (
        source.mtime_ns is not None
        and source.size is not None
        and info.st_mtime_ns == source.mtime_ns
    ):
        return None
    if source.sha256 is None:
        return "no sha256 recorded to compare with"
    try:
        digest = file_sha256(source.path)
    except InputFileError as err:
        return str(err)
    return None if digest == source.sha256 else "sha256 differs"
