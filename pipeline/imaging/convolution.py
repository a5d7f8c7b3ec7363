"""Masked convolution, the engine behind :class:`~pipeline.imaging.convolver.Convolver`: pure
numpy/scipy functions of a kernel, a mask and values, no state.

* :func:`validated_kernel`: a finite, odd-shaped, non-zero 2-D kernel (float64 copy).
* :func:`frame_for`: the mask embedded in the blurring mask's frame (padded symmetrically when
  unmasked pixels lie within ``k // 2`` of the edge), and that blurring mask.
* :func:`frame_pixels`: the source (unmasked + blurring) and target (unmasked) pixels of a frame.
* :func:`sparse_convolution_matrix` / :func:`convolution_matrix_from`: the ``(N, N + M)`` matrix
  of true convolution (not correlation) from source to target pixels.
* :func:`convolve_columns`: convolve columns of values by the direct or the FFT method (``auto``
  picks the cheaper per call); both give the same values.

Conventions: see :mod:`pipeline.imaging.convolver`.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft
import scipy.signal
import scipy.sparse as sp

from pipeline.exc import ArrayError, KernelError
from pipeline.imaging.frames import blurring_mask_from, required_shape_for_kernel

__all__ = [
    "METHODS",
    "convolution_matrix_from",
    "convolve_columns",
    "frame_for",
    "frame_pixels",
    "sparse_convolution_matrix",
    "validated_kernel",
]

METHODS = ("auto", "direct", "fft")
_FFT_BATCH_BYTES = 64 * 2**20  # bounds the complex (batch, Ly, Lx // 2 + 1) stack of the FFT path


def validated_kernel(values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 2:
        raise KernelError(f"PSF kernel must be 2-D, got an array of shape {arr.shape}")
    if arr.shape[0] % 2 == 0 or arr.shape[1] % 2 == 0:
        raise KernelError(
            f"PSF kernel shape {arr.shape} must be odd in both axes so that it has a centre pixel "
            "(ky // 2, kx // 2); crop or pad it by one row/column"
        )
    arr = np.array(arr, dtype=np.float64, copy=True)
    bad = ~np.isfinite(arr)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise KernelError(f"PSF kernel has {int(bad.sum())} NaN/inf values, first at {(row, col)}")
    if not arr.any():
        raise KernelError(f"PSF kernel of shape {arr.shape} is all zeros")
    arr.flags.writeable = False
    return arr


def frame_for(
    mask: np.ndarray, kernel_shape: tuple[int, int], blurring_mask: np.ndarray | None, derive: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """The mask embedded in the blurring mask's frame, and that blurring mask (derived without a
    warning when ``derive`` and none is given)."""
    mask = np.asarray(mask, dtype=bool)
    if blurring_mask is None and derive:
        shape = required_shape_for_kernel(mask, kernel_shape)
    elif blurring_mask is not None:
        blurring_mask = np.asarray(blurring_mask, dtype=bool)
        shape = blurring_mask.shape
    else:
        return mask, None
    dy, dx = shape[0] - mask.shape[0], shape[-1] - mask.shape[1]
    if blurring_mask is not None and (blurring_mask.ndim != 2 or dy < 0 or dx < 0):
        raise ArrayError(
            f"blurring mask of shape {blurring_mask.shape} cannot hold the {mask.shape} mask; "
            "derive it with mask.blurring_mask_from(psf.shape_native)"
        )
    if dy or dx:
        pad = ((dy // 2, dy - dy // 2), (dx // 2, dx - dx // 2))
        mask = np.pad(mask, pad, constant_values=True)
    if blurring_mask is None:
        # the mask is already padded, so this derivation neither pads nor warns
        blurring_mask = blurring_mask_from(mask, kernel_shape)
    elif np.any(~mask & ~blurring_mask):
        raise ArrayError("blurring mask unmasks pixels that are unmasked in the image mask")
    return mask, blurring_mask


def frame_pixels(frame_mask: np.ndarray, blurring_mask: np.ndarray | None):
    """(row, col) of the sources (unmasked then blurring pixels, slim order) and of the targets."""
    tgt = np.nonzero(~frame_mask)
    if blurring_mask is None:
        return tgt, tgt
    b = np.nonzero(~blurring_mask)
    return (np.concatenate([tgt[0], b[0]]), np.concatenate([tgt[1], b[1]])), tgt


def sparse_convolution_matrix(
    kernel: np.ndarray, src, tgt, frame_shape: tuple[int, int]
) -> sp.csr_matrix:
    cy, cx = kernel.shape[0] // 2, kernel.shape[1] // 2
    # slim index of each target in a frame padded by the kernel half-width: -1 = no target there
    slim = np.full((frame_shape[0] + 2 * cy, frame_shape[1] + 2 * cx), -1, dtype=np.int64)
    slim[tgt[0] + cy, tgt[1] + cx] = np.arange(tgt[0].size)
    a, b = np.nonzero(kernel)
    targets = slim[src[0][:, None] + a[None, :], src[1][:, None] + b[None, :]]  # (n_src, nnz K)
    hit = targets >= 0
    # column-major assembly needs no sort: each source's entries are contiguous
    indptr = np.concatenate([[0], np.cumsum(hit.sum(axis=1))])
    vals = np.broadcast_to(kernel[a, b], targets.shape)[hit]
    return sp.csc_matrix((vals, targets[hit], indptr), shape=(tgt[0].size, src[0].size)).tocsr()


def convolve_columns(kernel, values, src, tgt, method: str, matrix=None) -> np.ndarray:
    """Convolve the columns of ``values`` (n_src, S) given at pixels ``src`` and read them at
    ``tgt``. ``matrix()`` returns the sparse operator for the direct path of a mapping matrix;
    without it (an image) the direct path is ``scipy.signal.convolve``."""
    if method not in METHODS:
        raise KernelError(f"method must be one of {METHODS}, got {method!r}")
    ky, kx = kernel.shape
    n_cols = values.shape[1]
    if tgt[0].size == 0:
        return np.zeros((0, n_cols))
    y0, x0 = int(src[0].min()), int(src[1].min())
    hy, hx = int(src[0].max()) - y0 + 1, int(src[1].max()) - x0 + 1
    # L >= box + k // 2 keeps circular wrap-around off every target (targets lie inside the box)
    ly = scipy.fft.next_fast_len(max(hy + ky // 2, ky))
    lx = scipy.fft.next_fast_len(max(hx + kx // 2, kx), real=True)
    if method == "auto":
        # unit costs measured with numpy 2.4 / scipy 1.17: a real-space multiply-add costs ~9x
        # (scipy direct) or ~0.4x per column (sparse @ dense) an FFT "L log L" unit; a sparse @
        # sparse product ~20x per stored entry of the mapping matrix
        fft_cost = n_cols * ly * lx * math.log2(ly * lx)
        if matrix is None:
            direct_cost = 9.0 * hy * hx * np.count_nonzero(kernel)
        else:
            per_col = 20.0 * values.nnz / values.shape[0] if sp.issparse(values) else 0.4 * n_cols
            direct_cost = tgt[0].size * np.count_nonzero(kernel) * per_col
        method = "direct" if direct_cost <= fft_cost else "fft"
    if method == "direct" and matrix is not None:
        out = matrix() @ values
        return np.asarray(out.toarray() if sp.issparse(out) else out, dtype=np.float64)
    sr, sc = src[0] - y0, src[1] - x0
    tr, tc = tgt[0] - y0, tgt[1] - x0
    if method == "direct":
        box = np.zeros((hy, hx))
        box[sr, sc] = values[:, 0]
        conv = scipy.signal.convolve(box, kernel, mode="same", method="direct")
        return conv[tr, tc][:, None]
    values = values.tocsc() if sp.issparse(values) else values
    kernel_ft = scipy.fft.rfft2(kernel, s=(ly, lx))
    batch = max(1, _FFT_BATCH_BYTES // (16 * ly * (lx // 2 + 1)))
    out = np.empty((tgt[0].size, n_cols), dtype=np.float64)
    for j0 in range(0, n_cols, batch):
        block = values[:, j0 : j0 + batch]
        block = block.toarray() if sp.issparse(block) else np.asarray(block, dtype=np.float64)
        stack = np.zeros((block.shape[1], ly, lx))
        stack[:, sr, sc] = block.T
        conv = scipy.fft.irfft2(scipy.fft.rfft2(stack) * kernel_ft, s=(ly, lx))
        out[:, j0 : j0 + block.shape[1]] = conv[:, tr + ky // 2, tc + kx // 2].T
    return out


def convolution_matrix_from(
    kernel_native: np.ndarray, mask: np.ndarray, blurring_mask: np.ndarray | None = None
) -> sp.csr_matrix:
    """The sparse true-convolution operator ``B[k, i] = K[k - i + c]`` restricted to a mask.

    Parameters
    ----------
    kernel_native
        ``(ky, kx)`` kernel, odd shape.
    mask
        True = masked; rows ``k`` of ``B`` are its unmasked pixels in slim order.
    blurring_mask
        Optional blurring mask (same frame, or the padded frame of
        :meth:`Mask2D.blurring_mask_from`).

    Returns
    -------
    scipy.sparse.csr_matrix
        ``(N, N)``, or ``(N, N + N_blur)`` with a blurring mask: columns are the unmasked pixels
        (slim order) then the blurring pixels (the blurring mask's slim order). Zero kernel
        pixels and off-array targets give no entry; negative kernel values are kept.
    """
    kernel = validated_kernel(kernel_native)
    frame_mask, bmask = frame_for(mask, kernel.shape, blurring_mask, derive=False)
    src, tgt = frame_pixels(frame_mask, bmask)
    return sparse_convolution_matrix(kernel, src, tgt, frame_mask.shape)
