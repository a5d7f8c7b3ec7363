"""Trimming a PSF kernel to a smaller odd box around its centre.

The operator W = Hᵀ N⁻¹ H couples pixels up to ``2 (k // 2)`` apart, so its size grows with the
square of the kernel's area (``n_offsets = (2 ky - 1)(2 kx - 1) / 2`` per pixel): a 49×49 survey
PSF whose light is all within 21×21 makes W 5.6 times larger than it needs to be. Trimming keeps
the central ``(ky, kx)`` window (both odd, the centre ``(Ky // 2, Kx // 2)`` stays the centre);
the dataset then normalises the trimmed kernel as it does any kernel.
"""

from __future__ import annotations

import numpy as np

from pipeline.exc import KernelError

__all__ = ["operator_offsets", "trim_shape_for_fraction", "trimmed_kernel"]


def _checked(kernel: np.ndarray) -> np.ndarray:
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2 or kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        raise KernelError(f"PSF trimming needs a 2-D kernel of odd shape, got {kernel.shape}")
    if not np.all(np.isfinite(kernel)):
        raise KernelError("PSF trimming needs a finite kernel (NaN or inf found)")
    return kernel


def trimmed_kernel(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The central ``shape`` window of ``kernel`` (a copy).

    ``shape``: ``(ky, kx)``, both odd and at least 1. A shape at least the kernel's in an axis
    keeps that axis whole (a PSF is never padded).
    """
    kernel = _checked(kernel)
    ky, kx = (int(v) for v in shape)
    if ky < 1 or kx < 1 or ky % 2 == 0 or kx % 2 == 0:
        raise KernelError(f"a PSF is trimmed to an odd shape (ky, kx), got {tuple(shape)}")
    ky, kx = min(ky, kernel.shape[0]), min(kx, kernel.shape[1])
    top = kernel.shape[0] // 2 - ky // 2
    left = kernel.shape[1] // 2 - kx // 2
    return kernel[top : top + ky, left : left + kx].copy()


def trim_shape_for_fraction(kernel: np.ndarray, fraction: float) -> tuple[int, int]:
    """The smallest odd ``(ky, kx)`` box around the centre holding at least ``fraction`` of
    ``sum |kernel|``.

    Smallest by area; among boxes of equal area, the squarest; ``fraction`` in ``(0, 1]``. Sums
    of ``|K|`` so that negative lobes count as light. ``fraction = 1`` gives the box of the
    nonzero pixels (symmetric about the centre).
    """
    kernel = _checked(kernel)
    if not (0.0 < fraction <= 1.0):
        raise KernelError(f"PSF trim fraction must lie in (0, 1], got {fraction}")
    weight = np.abs(kernel)
    total = weight.sum()
    if total == 0.0:
        raise KernelError("PSF trimming: the kernel is all zeros")
    big_y, big_x = kernel.shape
    cy, cx = big_y // 2, big_x // 2
    # prefix sums: the light of the central (2a + 1) x (2b + 1) box in O(1)
    cumulative = np.zeros((big_y + 1, big_x + 1))
    cumulative[1:, 1:] = weight.cumsum(axis=0).cumsum(axis=1)

    def light(half_y: int, half_x: int) -> float:
        y0, y1, x0, x1 = cy - half_y, cy + half_y + 1, cx - half_x, cx + half_x + 1
        return float(
            cumulative[y1, x1] - cumulative[y0, x1] - cumulative[y1, x0] + cumulative[y0, x0]
        )

    # a relative tolerance, so that fraction = 1 is reached by the box of all the light
    needed = fraction * total * (1.0 - 1e-12)
    best: tuple[int, int, int] | None = None  # (area, squareness, half_y, half_x) in order
    best_shape = (big_y, big_x)
    half_x = cx
    for half_y in range(cy + 1):
        # the smallest half_x for this half_y: it does not grow as half_y grows
        while half_x > 0 and light(half_y, half_x - 1) >= needed:
            half_x -= 1
        if light(half_y, half_x) < needed:
            continue
        ky, kx = 2 * half_y + 1, 2 * half_x + 1
        key = (ky * kx, abs(ky - kx), ky)
        if best is None or key < best:
            best, best_shape = key, (ky, kx)
    return best_shape


def operator_offsets(shape: tuple[int, int]) -> int:
    """Stored band values per unmasked pixel for a kernel of ``shape``: ``((2 ky - 1)(2 kx - 1)
    + 1) / 2`` (the upper half of W's band, the diagonal included)."""
    ky, kx = shape
    return ((2 * ky - 1) * (2 * kx - 1) + 1) // 2
