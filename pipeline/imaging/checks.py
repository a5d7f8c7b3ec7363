"""Checks of a dataset's inputs at its unmasked pixels: finite data and noise, positive noise,
a noise covariance that fits the mask. Errors name the dataset (``label``), the count of bad
pixels and the first one (row, col in the native array), and the fix."""

from __future__ import annotations

import numpy as np

from pipeline.exc import DatasetError, InvalidValueError
from pipeline.imaging.arrays import Array2D
from pipeline.imaging.mask import Mask2D

__all__ = ["check_finite", "check_positive", "checked_covariance", "first_bad_pixel"]


def first_bad_pixel(array: Array2D, bad: np.ndarray) -> tuple[int, int, float]:
    """``(row, col, value)`` of the first True of ``bad`` (slim order) in ``array``."""
    index = int(np.flatnonzero(bad)[0])
    row, col = array.mask.native_for_slim[index]
    return int(row), int(col), float(array.slim[index])


def check_finite(array: Array2D, what: str, label: str) -> None:
    """Refuse NaN or inf at unmasked pixels, naming the count and the first pixel."""
    bad = ~np.isfinite(np.asarray(array.slim, dtype=np.float64))
    if bad.any():
        row, col, value = first_bad_pixel(array, bad)
        raise InvalidValueError(
            f"{label}: {what} has {int(bad.sum())} non-finite values at unmasked pixels "
            f"(first: {value} at row {row}, col {col}); mask those pixels or fix the input"
        )


def check_positive(noise_map: Array2D, label: str) -> None:
    """Refuse noise <= 0 at unmasked pixels, naming the count and the first pixel."""
    bad = np.asarray(noise_map.slim) <= 0.0
    if bad.any():
        row, col, value = first_bad_pixel(noise_map, bad)
        raise InvalidValueError(
            f"{label}: the noise_map has {int(bad.sum())} values <= 0 at unmasked pixels "
            f"(first: {value} at row {row}, col {col}); noise must be positive where the data are "
            "used: mask those pixels or pass check_noise_map=False"
        )


def checked_covariance(covariance, mask: Mask2D, label: str) -> np.ndarray | None:
    """A read-only float64 ``(N, N)`` copy of ``covariance`` (N unmasked pixels, slim order),
    or ``None``; refuses a wrong shape or non-finite values."""
    if covariance is None:
        return None
    cov = np.array(covariance, dtype=np.float64)
    n = mask.pixels_in_mask
    if cov.shape != (n, n):
        raise DatasetError(
            f"{label}: noise_covariance_matrix has shape {cov.shape}; it must be ({n}, {n}), one "
            "row and column per unmasked pixel in slim (row-major) order"
        )
    if not np.all(np.isfinite(cov)):
        raise InvalidValueError(f"{label}: noise_covariance_matrix has non-finite values")
    cov.flags.writeable = False
    return cov
