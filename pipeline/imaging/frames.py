"""Shapes and frames of pixel masks: pure numpy on plain boolean arrays (True = masked).

Distances from a centre in arcsec (y up, same arithmetic as PyAutoArray so that pixels exactly on
a boundary fall on the same side), elliptical radii, centre crops and pads, the frame a kernel
needs around the unmasked pixels, and blurring masks. :class:`~pipeline.imaging.mask.Mask2D`
wraps these with pixel scales and origin.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.ndimage import binary_dilation

from pipeline.exc import MaskError, MaskPaddedWarning

__all__ = [
    "blurring_mask_from",
    "check_axis_ratio",
    "distance_squared",
    "elliptical_radius",
    "offsets_from_centre",
    "required_shape_for_kernel",
    "resized_array_from",
    "shape_pair",
]


def shape_pair(shape_native) -> tuple[int, int]:
    """``(ny, nx)`` as positive ints, or :class:`MaskError`."""
    try:
        ny, nx = (int(s) for s in shape_native)
    except (TypeError, ValueError):
        raise MaskError(
            f"shape_native must be a (ny, nx) pair of ints, got {shape_native!r}"
        ) from None
    if ny < 1 or nx < 1:
        raise MaskError(f"shape_native must be positive, got {(ny, nx)}")
    return (ny, nx)


def check_axis_ratio(q: float) -> None:
    """Refuse an axis ratio (minor / major) outside (0, 1]."""
    if not (0.0 < q <= 1.0):
        raise MaskError(f"axis_ratio must be in (0, 1] (minor / major axis), got {q}")


def offsets_from_centre(shape, scales, centre) -> tuple[np.ndarray, np.ndarray]:
    """Broadcastable ``(dy, dx)`` in arcsec of every pixel from ``centre`` (dy down)."""
    # Same arithmetic as the reference (mask_2d_util.mask_2d_centres_from) so that pixels exactly on
    # a boundary fall on the same side: y measured downwards from the centre, in arcsec.
    yc = 0.5 * (shape[0] - 1) - centre[0] / scales[0]
    xc = 0.5 * (shape[1] - 1) + centre[1] / scales[1]
    y, x = np.ogrid[: shape[0], : shape[1]]
    return (y - yc) * scales[0], (x - xc) * scales[1]


def distance_squared(shape, scales, centre) -> np.ndarray:
    """``(ny, nx)`` squared distance in arcsec² of every pixel from ``centre``."""
    dy, dx = offsets_from_centre(shape, scales, centre)
    return dx**2 + dy**2


def elliptical_radius(shape, scales, centre, axis_ratio, angle_deg) -> np.ndarray:
    """``(ny, nx)`` elliptical radius in arcsec (major-axis units) of every pixel."""
    dy, dx = offsets_from_centre(shape, scales, centre)
    r = np.sqrt(dx**2 + dy**2)
    # dy points down, so arctan2(dy, dx) + angle = -(phi - angle): the sign flip cancels in the
    # squared components, giving the usual counter-clockwise (y-up) ellipse.
    theta = np.arctan2(dy, dx) + np.radians(angle_deg)
    y_e = r * np.sin(theta)
    x_e = r * np.cos(theta)
    return np.sqrt(x_e**2 + (y_e / axis_ratio) ** 2)


def resized_array_from(
    array: np.ndarray, new_shape: tuple[int, int], pad_value: float | bool = 0.0
) -> np.ndarray:
    """Centre-crop or pad ``array`` to ``new_shape`` around pixel ``(ny // 2, nx // 2)``."""
    cy, cx = array.shape[0] // 2, array.shape[1] // 2
    y0 = cy - new_shape[0] // 2
    x0 = cx - new_shape[1] // 2
    out = np.full(new_shape, pad_value, dtype=array.dtype)
    sy0, sy1 = max(y0, 0), min(y0 + new_shape[0], array.shape[0])
    sx0, sx1 = max(x0, 0), min(x0 + new_shape[1], array.shape[1])
    dy0, dx0 = sy0 - y0, sx0 - x0
    out[dy0 : dy0 + (sy1 - sy0), dx0 : dx0 + (sx1 - sx0)] = array[sy0:sy1, sx0:sx1]
    return out


def required_shape_for_kernel(
    mask: np.ndarray, kernel_shape_native: tuple[int, int]
) -> tuple[int, int]:
    """Smallest frame (same parity per axis) in which every unmasked pixel is at least
    ``(ky // 2, kx // 2)`` pixels from the array edge."""
    mask = np.asarray(mask, dtype=bool)
    rows, cols = np.nonzero(~mask)
    if rows.size == 0:
        raise MaskError("the mask has no unmasked pixel")
    ky, kx = kernel_shape_native
    dist_y = min(rows.min(), mask.shape[0] - 1 - rows.max())
    dist_x = min(cols.min(), mask.shape[1] - 1 - cols.max())
    new_y = mask.shape[0] + 2 * max(0, ky // 2 - dist_y)
    new_x = mask.shape[1] + 2 * max(0, kx // 2 - dist_x)
    return (int(new_y), int(new_x))


def blurring_mask_from(
    mask: np.ndarray, kernel_shape_native: tuple[int, int], allow_padding: bool = True
) -> np.ndarray:
    """Boolean blurring mask (False = blurring pixel) of a plain boolean ``mask``; see
    :meth:`Mask2D.blurring_mask_from`."""
    mask = np.asarray(mask, dtype=bool)
    ky, kx = (int(k) for k in kernel_shape_native)
    required = required_shape_for_kernel(mask, (ky, kx))
    if required != mask.shape:
        if not allow_padding:
            raise MaskError(
                f"unmasked pixels lie within the PSF half-width {(ky // 2, kx // 2)} of the array "
                f"edge: the blurring region needs a frame of {required} pixels, the mask is "
                f"{mask.shape}; pass allow_padding=True or use a smaller mask"
            )
        warnings.warn(
            f"Mask padded from {mask.shape} to {required} (parity preserved) to hold the "
            f"blurring region of a {(ky, kx)} kernel",
            MaskPaddedWarning,
            stacklevel=3,
        )
        dy = required[0] - mask.shape[0]
        dx = required[1] - mask.shape[1]
        mask = np.pad(
            mask, ((dy // 2, dy - dy // 2), (dx // 2, dx - dx // 2)), constant_values=True
        )
    unmasked = np.pad(~mask, ((ky // 2, ky // 2), (kx // 2, kx // 2)), constant_values=False)
    near = binary_dilation(unmasked, structure=np.ones((ky, kx), dtype=bool))
    near = near[ky // 2 : ky // 2 + mask.shape[0], kx // 2 : kx // 2 + mask.shape[1]]
    return ~(mask & near)
