"""Shared pieces of the config models: the bounds every number is checked against, the base model
(unknown keys are errors, frozen, no inf/NaN), annotated field types, and :func:`brief_repr`, which
keeps values in error messages short (a value built from YAML aliases is never expanded in full)."""

from __future__ import annotations

import math
import reprlib
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "MAX_ARCSEC",
    "MAX_CONFIG_BYTES",
    "MAX_ERROR_LINES",
    "MAX_OPTION_NUMBER",
    "MAX_PIXEL_SCALE",
    "MAX_REPR",
    "MAX_SECONDS",
    "MAX_SUB_SIZE",
    "MAX_YAML_ALIASES",
    "MAX_YAML_NODES",
    "brief_repr",
]

# ---------------------------------------------------------------------------------------- bounds
#: Longest wait of any kind (task deadline, cluster start): 7 days, longer than any batch walltime.
MAX_SECONDS = 7 * 86400
#: Largest radius or centre coordinate (arcsec): ~28 degrees, far beyond any lens cutout.
MAX_ARCSEC = 100_000
#: Largest pixel scale (arcsec per pixel): one degree.
MAX_PIXEL_SCALE = 3600
#: Largest over-sampling size (sub-pixels per axis). The sub-grids hold size² points per pixel
#: (32 -> 1024 per pixel: ~160 MB of float64 (y, x) coordinates for a 100x100 mask); larger sizes
#: only exhaust memory.
MAX_SUB_SIZE = 32
#: Largest number of aliases (``*name``) in a YAML config file.
MAX_YAML_ALIASES = 100
#: Largest number of YAML nodes a config file may expand to once its aliases are followed.
MAX_YAML_NODES = 100_000
#: Largest config file (bytes): a config is a page of text.
MAX_CONFIG_BYTES = 4 * 2**20
#: Largest magnitude of a number given to dask-jobqueue or fsspec as an option (1 PB in bytes).
MAX_OPTION_NUMBER = 1e15
#: At most this many characters of a value in an error message.
MAX_REPR = 200
#: At most this many keys listed in one error message.
MAX_ERROR_LINES = 25


class _BriefRepr(reprlib.Repr):
    """``reprlib`` with longer strings, and integers of any size (``repr`` of an integer with
    more than 4300 digits raises ``ValueError`` since Python 3.11)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxother = 80
        self.maxlong = 40
        self.maxlist = self.maxtuple = self.maxset = 8
        self.maxdict = 6
        self.maxlevel = 3

    def repr_int(self, x, level):
        if x.bit_length() > 128:
            digits = int(x.bit_length() * math.log10(2)) + 1
            return f"<{'-' if x < 0 else ''}integer of about {digits} digits>"
        return super().repr_int(x, level)

    def repr_bool(self, x, level):
        return repr(x)


_REPR = _BriefRepr()


def brief_repr(value: Any, limit: int = MAX_REPR) -> str:
    """``repr(value)`` shortened for error messages: long strings, lists and mappings are
    elided with ``...``, huge integers summarised, and the whole is at most ``limit``
    characters (a value built from YAML aliases is never expanded in full)."""
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the config error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _integral(value: Any) -> Any:
    """Integral floats beyond int64 (``1e23``, ``1e308``) become ints, so that the field's bound
    refuses them with its own message instead of pydantic's "unable to parse" one."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        if abs(value) >= 2**63:
            return int(value)
    return value


#: An integer field: huge integral floats reach the bound check (see :func:`_integral`).
Int = Annotated[int, BeforeValidator(_integral)]
#: A coordinate in arcsec (mask centres).
Coordinate = Annotated[float, Field(ge=-MAX_ARCSEC, le=MAX_ARCSEC)]
Centre = tuple[Coordinate, Coordinate]
HduIndex = Annotated[Int, Field(ge=0, le=9999)]
SubSize = Annotated[Int, Field(ge=1, le=MAX_SUB_SIZE)]


def _sub_size(what: str) -> str:
    return f"{what} (at most {MAX_SUB_SIZE}: a sub-grid holds size² points per pixel)."


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _check_option_numbers(options: dict[str, Any]) -> None:
    """Numbers among the options handed to another library: finite and at most 1e15."""
    for key, item in options.items():
        if isinstance(item, int | float) and not isinstance(item, bool):
            if not (math.isfinite(item) and abs(item) <= MAX_OPTION_NUMBER):
                raise ValueError(
                    f"option {brief_repr(key)} is {brief_repr(item)}: numbers here must be finite "
                    f"and at most {MAX_OPTION_NUMBER:g} in magnitude"
                )
