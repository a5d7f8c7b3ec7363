"""What a path is, found with ``stat`` and never by opening it: opening a FIFO or reading
``/dev/zero`` would block forever (PITFALLS), so every reader of input files asks here first."""

from __future__ import annotations

import os
import stat

__all__ = ["file_kind", "not_a_regular_file"]


def not_a_regular_file(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be an input file (it exists but is a FIFO, a device, a socket or a
    folder; symbolic links are followed), or ``None`` for a regular file or a missing one (a
    missing file is reported by whoever reads it, naming its dataset). Never opens it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as err:
        return f"cannot be examined ({err.strerror or err})"
    return None if stat.S_ISREG(mode) else f"is {file_kind(mode)}, not a regular file"


def file_kind(mode: int) -> str:
    """``"a folder"``, ``"a FIFO (named pipe)"``, ... for a ``st_mode`` that is not a regular
    file's."""
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")
