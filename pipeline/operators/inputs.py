"""What every operator kernel needs: the layout, the PSF kernel and the inverse-variance map."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from pipeline.exc import InvalidValueError, OperatorError
from pipeline.operators.layout import OperatorLayout
from pipeline.operators.precision import inverse_variance_from

__all__ = ["OperatorInputs"]


@dataclass(frozen=True, eq=False)
class OperatorInputs:
    """Inputs of W = H^T N^-1 H for one dataset.

    Parameters
    ----------
    layout
        Mask (True = masked) and kernel shape.
    kernel
        ``(ky, kx)`` float64 PSF as used (normalised if the dataset normalises), centre
        ``(ky // 2, kx // 2)``, applied as a true convolution.
    inverse_variance
        ``(ny, nx)`` float64 ``1 / sigma**2`` at unmasked pixels, 0 at masked pixels.
    """

    layout: OperatorLayout
    kernel: np.ndarray
    inverse_variance: np.ndarray

    @classmethod
    def from_noise_map(
        cls, noise_map_native: np.ndarray, mask: np.ndarray, kernel: np.ndarray
    ) -> OperatorInputs:
        """Build from a native noise map (RMS at unmasked pixels: positive, finite, and such that
        ``1 / sigma**2`` is a finite normal float64; see
        :func:`~pipeline.operators.precision.inverse_variance_from`)."""
        mask = np.asarray(mask, dtype=bool)
        noise = np.asarray(noise_map_native, dtype=np.float64)
        kernel = np.ascontiguousarray(kernel, dtype=np.float64)
        if noise.shape != mask.shape:
            raise OperatorError(
                f"noise map shape {noise.shape} differs from mask shape {mask.shape}"
            )
        if kernel.ndim != 2 or kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
            raise OperatorError(f"PSF kernel shape {kernel.shape} must be 2-D and odd in both axes")
        if not np.all(np.isfinite(kernel)):
            raise OperatorError("PSF kernel has NaN/inf values")
        try:
            inverse_variance = inverse_variance_from(noise, mask)
        except InvalidValueError as err:
            # OperatorError stays this constructor's one error type (callers catch it)
            raise OperatorError(str(err)) from None
        return cls(OperatorLayout(mask, kernel.shape), kernel, inverse_variance)

    def __post_init__(self) -> None:
        if self.kernel.shape != self.layout.kernel_shape:
            raise OperatorError(
                f"kernel shape {self.kernel.shape} differs from the layout's {self.layout.kernel_shape}"
            )
        if self.inverse_variance.shape != self.layout.shape_native:
            raise OperatorError(
                f"inverse-variance map shape {self.inverse_variance.shape} differs from the mask's "
                f"{self.layout.shape_native}"
            )

    @cached_property
    def padded_inverse_variance(self) -> np.ndarray:
        """The inverse-variance map zero-padded by ``(ky // 2, kx // 2)`` on every side, so that
        ``padded[py + a, px + ux] = 1/sigma**2`` at pixel ``(py + a - cy, px + ux - cx)``."""
        cy, cx = self.kernel.shape[0] // 2, self.kernel.shape[1] // 2
        return np.pad(self.inverse_variance, ((cy, cy), (cx, cx)))

    def check_range(self, start: int, stop: int) -> None:
        n = self.layout.n_pixels
        if not (0 <= start <= stop <= n):
            raise OperatorError(f"row range [{start}, {stop}) is outside [0, {n})")
