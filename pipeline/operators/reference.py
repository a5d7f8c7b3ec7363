"""Brute-force W = H^T N^-1 H with explicit loops and dense matrices: small inputs, tests only.

``H[k, i] = K[k - i + c]`` is the true-convolution response at unmasked pixel ``k`` of a unit
image at unmasked pixel ``i`` (positions off the array dropped), ``N = diag(sigma_k**2)`` over
unmasked pixels, so ``W_ij = sum_k K[k - i + c] K[k - j + c] / sigma_k**2``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["convolution_matrix_dense", "sparse_operator_dense", "psf_weighted_data_dense"]


def convolution_matrix_dense(mask: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Dense ``(N, N)`` H over the unmasked pixels of ``mask`` (True = masked), by loops."""
    mask = np.asarray(mask, dtype=bool)
    kernel = np.asarray(kernel, dtype=np.float64)
    pixels = np.argwhere(~mask)
    cy, cx = kernel.shape[0] // 2, kernel.shape[1] // 2
    n = len(pixels)
    h = np.zeros((n, n))
    for k, (ky_, kx_) in enumerate(pixels):
        for i, (iy, ix) in enumerate(pixels):
            uy, ux = ky_ - iy + cy, kx_ - ix + cx
            if 0 <= uy < kernel.shape[0] and 0 <= ux < kernel.shape[1]:
                h[k, i] = kernel[uy, ux]
    return h


def sparse_operator_dense(
    mask: np.ndarray, kernel: np.ndarray, noise_map_native: np.ndarray
) -> np.ndarray:
    """Dense ``(N, N)`` W = H^T N^-1 H (slim order)."""
    mask = np.asarray(mask, dtype=bool)
    h = convolution_matrix_dense(mask, kernel)
    inverse_variance = 1.0 / np.asarray(noise_map_native, dtype=np.float64)[~mask] ** 2
    return h.T @ (inverse_variance[:, None] * h)


def psf_weighted_data_dense(
    mask: np.ndarray, kernel: np.ndarray, noise_map_native: np.ndarray, data_native: np.ndarray
) -> np.ndarray:
    """``H^T N^-1 d`` at the unmasked pixels (slim order)."""
    mask = np.asarray(mask, dtype=bool)
    h = convolution_matrix_dense(mask, kernel)
    noise = np.asarray(noise_map_native, dtype=np.float64)[~mask]
    return h.T @ (np.asarray(data_native, dtype=np.float64)[~mask] / noise**2)
