"""Pixel <-> arcsec geometry of a uniform 2-D frame (pure functions).

Convention (same as PyAutoArray): ``(y, x)`` in arcsec, y up, row 0 is the top row::

    y = ((ny - 1) / 2 - row) * sy + origin_y
    x = (col - (nx - 1) / 2) * sx + origin_x
"""

from __future__ import annotations

import numbers

import numpy as np

from pipeline.exc import MaskError

__all__ = [
    "PIXEL_SCALE_TOLERANCE",
    "as_pair",
    "as_pixel_scales",
    "pixel_centre_coordinates",
    "pixel_scale_mismatch",
    "scaled_coordinates_of",
]

#: Largest relative difference between a given pixel scale and a header's that goes unreported.
PIXEL_SCALE_TOLERANCE = 0.01


def as_pixel_scales(pixel_scales: object) -> tuple[float, float]:
    """Return ``(sy, sx)`` in arcsec per pixel from a number or a pair; both must be > 0 and finite
    (anything else, ``None`` included, raises :class:`MaskError`)."""
    if isinstance(pixel_scales, numbers.Real) and not isinstance(pixel_scales, bool):
        pair = (float(pixel_scales), float(pixel_scales))
    else:
        try:
            sy, sx = pixel_scales  # type: ignore[misc]
            pair = (float(sy), float(sx))  # type: ignore[has-type]
        except (TypeError, ValueError):
            raise MaskError(
                f"pixel_scales must be a positive number or a (y, x) pair in arcsec, got {pixel_scales!r}"
            ) from None
    if not all(np.isfinite(p) and p > 0 for p in pair):
        raise MaskError(f"pixel_scales must be positive and finite (arcsec per pixel), got {pair}")
    return pair


def pixel_scale_mismatch(scales: tuple[float, float], reference: tuple[float, float]) -> float:
    """The larger relative difference ``|s - r| / r`` of two ``(sy, sx)`` pairs (arcsec)."""
    return max(abs(s - r) / r for s, r in zip(scales, reference, strict=True))


def as_pair(value: float | tuple[float, float], name: str) -> tuple[float, float]:
    """Return a ``(y, x)`` pair of floats from a pair (or a number used for both)."""
    if isinstance(value, numbers.Real):
        return (float(value), float(value))
    try:
        a, b = value  # type: ignore[misc]
        return (float(a), float(b))
    except (TypeError, ValueError):
        raise MaskError(f"{name} must be a (y, x) pair, got {value!r}") from None


def scaled_coordinates_of(
    rows: np.ndarray,
    cols: np.ndarray,
    shape_native: tuple[int, int],
    pixel_scales: tuple[float, float],
    origin: tuple[float, float] = (0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Arcsec ``(y, x)`` of the centres of pixels ``(rows, cols)`` (arrays broadcast together)."""
    ny, nx = shape_native
    sy, sx = pixel_scales
    y = ((ny - 1) / 2.0 - np.asarray(rows, dtype=np.float64)) * sy + origin[0]
    x = (np.asarray(cols, dtype=np.float64) - (nx - 1) / 2.0) * sx + origin[1]
    return y, x


def pixel_centre_coordinates(
    shape_native: tuple[int, int],
    pixel_scales: tuple[float, float],
    origin: tuple[float, float] = (0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Arcsec ``(y, x)`` of every pixel centre as broadcastable ``(ny, 1)`` and ``(1, nx)`` arrays."""
    ny, nx = shape_native
    rows = np.arange(ny)[:, None]
    cols = np.arange(nx)[None, :]
    return scaled_coordinates_of(rows, cols, shape_native, pixel_scales, origin)
