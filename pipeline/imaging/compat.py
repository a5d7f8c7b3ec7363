"""Keywords of PyAutoArray's signatures that lenspipe accepts for porting parity.

Every call lenspipe shares with PyAutoArray takes the same positional order and keyword names, so a
ported script's calls bind to the same parameters. Some of the reference's keywords have no
meaning here (JAX array modules, FITS headers carried by arrays, precomputed convolution states):
they are accepted at the value that gives lenspipe's behaviour and refused otherwise, with an error
naming the keyword and the reason, never silently ignored.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.exc import PipelineError

__all__ = ["check_xp", "refuse_unless"]


def refuse_unless(
    ok: bool, error: type[PipelineError], where: str, keyword: str, value: Any, why: str
) -> None:
    """Raise ``error`` naming ``where``, ``keyword=value`` and ``why`` unless ``ok``."""
    if not ok:
        raise error(f"{where}: {keyword}={value!r} is not supported: {why}")


def check_xp(xp: Any, error: type[PipelineError], where: str) -> None:
    """Accept PyAutoArray's ``xp`` array module only as numpy (or None, meaning numpy)."""
    refuse_unless(
        xp is None or xp is np,
        error,
        where,
        "xp",
        getattr(xp, "__name__", xp),
        "lenspipe computes with numpy only (no JAX array module); pass xp=numpy or omit it",
    )
