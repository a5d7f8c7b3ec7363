"""Rows of W by a discrete Fourier transform along x: exact, and faster than the band products of
:mod:`pipeline.operators.numpy_rows` for kernels from about 17x17 on (all in BLAS products).

For pixel ``p``, offset ``d = (dy, dx)`` with ``dy >= 0`` and kernel rows ``a``::

    W(p, d) = sum_a sum_ux z_p(a, ux) K(a - dy, ux - dx),   z_p(a, ux) = w(p + (a, ux) - c) K(a, ux)

For fixed ``(p, a, dy)`` the sum over ``ux`` is a full 1-D correlation of ``z_p(a, .)`` with the
kernel row ``K(a - dy, .)``: all ``2 kx - 1`` values of ``dx`` at once. With ``L = 2 kx - 1``
points (no wrap-around), a real DFT turns it into a product per frequency ``f``, and the sum over
``a`` into one matrix product per frequency::

    Z(a, p, f) = DFT_L[z_p(a, .)](f)                      (one product, kx -> 2F values)
    Y(dy, p, f) = sum_{a >= dy} Z(a, p, f) B(a - dy, f)   (F real products, 2 ky x 2 ky)
    W(p, dy, dx) = IDFT_L[Y(dy, p, .)](dx + kx - 1)       (one product, 2F -> L values)

with ``B(b, f)`` the DFT of the reversed kernel row ``K(b, kx - 1 - .)`` and ``F = kx`` frequencies.
Rows are ordered ``(a, p)`` and the spectra ``(f, re/im, a, p)``, so that each frequency's complex
products are a single real product of a ``2 ky x 2 ky`` block matrix with a contiguous
``2 ky x rows`` block. Per row that is about ``ky kx (2 kx + 4 ky + 4 kx)`` multiply-adds instead
of the ``(ky kx)**2`` of the band products (half of them on zeros): 5x fewer at 49x49. The
transforms are explicit matrices (cosines and sines), not FFTs: for these short lengths a BLAS
product is faster than many small FFTs and rounds the same way (~1e-15 of max |W|).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.operators.inputs import OperatorInputs

__all__ = ["DftFactors", "dft_factors", "rows_dft"]

#: Rows transformed at once: bounds the transforms' temporaries (about 56 ky kx bytes per row,
#: 17 MB at 49x49) whatever the batch size.
SUB_ROWS = 128


@dataclass(frozen=True)
class DftFactors:
    """The fixed matrices of one ``(ky, kx)`` kernel, ``F = kx`` frequencies, ``L = 2 kx - 1``:

    * ``forward`` ``(2F, kx)``: the DFT, rows ``(f, re/im)`` (cosines, minus sines);
    * ``blocks`` ``(F, 2 ky, 2 ky)``: per frequency, multiplication by ``B(a - dy, f)`` (zero for
      ``a < dy``) as a real matrix, rows ``(re/im, dy)`` and columns ``(re/im, a)``;
    * ``inverse`` ``(2F, L)``: the real inverse DFT, weights included, rows ``(f, re/im)``.
    """

    forward: np.ndarray
    blocks: np.ndarray
    inverse: np.ndarray


def dft_factors(kernel: np.ndarray) -> DftFactors:
    """The :class:`DftFactors` of a ``(ky, kx)`` float64 kernel (cached by its bytes)."""
    kernel = np.ascontiguousarray(kernel, dtype=np.float64)
    return _cached(kernel.tobytes(), kernel.shape)


@lru_cache(maxsize=8)
def _cached(kernel_bytes: bytes, shape: tuple[int, int]) -> DftFactors:
    kernel = np.frombuffer(kernel_bytes, dtype=np.float64).reshape(shape)
    ky, kx = shape
    length = 2 * kx - 1
    frequencies = np.arange(kx)  # an odd length L has (L + 1) / 2 = kx real-DFT frequencies
    angles = 2 * np.pi * np.outer(frequencies, np.arange(kx)) / length
    forward = np.stack([np.cos(angles), -np.sin(angles)], axis=1).reshape(2 * kx, kx)
    rows = np.fft.rfft(kernel[:, ::-1], length, axis=1)  # (ky, F): B(b, f)
    real = np.zeros((kx, ky, ky))  # [f, dy, a]: B(a - dy, f) for a >= dy
    imag = np.zeros((kx, ky, ky))
    for dy in range(ky):
        real[:, dy, dy:] = rows[: ky - dy].real.T
        imag[:, dy, dy:] = rows[: ky - dy].imag.T
    # (zr + i zi)(br + i bi) = (zr br - zi bi) + i (zr bi + zi br)
    blocks = np.block([[real, -imag], [imag, real]])
    weights = np.full(kx, 2.0 / length)
    weights[0] = 1.0 / length
    angles = 2 * np.pi * np.outer(frequencies, np.arange(length)) / length
    inverse = np.stack(
        [weights[:, None] * np.cos(angles), -weights[:, None] * np.sin(angles)], axis=1
    ).reshape(2 * kx, length)
    for array in (forward, blocks, inverse):
        array.flags.writeable = False
    return DftFactors(forward, blocks, inverse)


def rows_dft(inputs: OperatorInputs, start: int, stop: int, out: np.ndarray) -> np.ndarray:
    """Rows ``[start, stop)`` of the band ``values`` written into ``out`` (C-contiguous float64,
    ``(stop - start, n_offsets)``), by :data:`SUB_ROWS` rows at a time; returns ``out``.
    Invalid offsets (a neighbour outside the unmasked pixels) are left to the caller.

    Every temporary lives in one workspace per thread and kernel shape, kept between calls:
    allocating and freeing them per block costs more than the products (fresh pages each time,
    as glibc maps and unmaps blocks this size; about 56 ky kx SUB_ROWS bytes, 17 MB at 49x49)."""
    factors = dft_factors(inputs.kernel)
    ky, kx = inputs.kernel.shape
    windows = sliding_window_view(inputs.padded_inverse_variance, (ky, kx))
    native = inputs.layout.native_for_slim
    kernel = inputs.kernel.reshape(ky, 1, kx)
    work = _workspace(ky, kx)
    for first in range(start, stop, SUB_ROWS):
        last = min(first + SUB_ROWS, stop)
        rows = native[first:last]
        weighted = work.take("weighted", (ky, last - first, kx))  # z at [a, p, ux]
        np.multiply(windows[rows[:, 0], rows[:, 1]].transpose(1, 0, 2), kernel, out=weighted)
        _rows_into(out[first - start : last - start], weighted, factors, work)
    return out


_local = threading.local()


def _workspace(ky: int, kx: int) -> _Workspace:
    """This thread's workspace for ``(ky, kx)`` kernels (the last shape used is kept)."""
    work = getattr(_local, "work", None)
    if work is None or work.shape != (ky, kx):
        work = _local.work = _Workspace(SUB_ROWS, ky, kx)
    return work


class _Workspace:
    """Flat buffers sized for ``rows`` rows, handed out as C-contiguous views of any smaller
    shape (the last block of rows is shorter)."""

    def __init__(self, rows: int, ky: int, kx: int):
        self.shape = (ky, kx)
        sizes = {
            "weighted": ky * rows * kx,
            "spectra": 2 * kx * ky * rows,
            "products": 2 * kx * ky * rows,
            "correlations": ky * rows * (2 * kx - 1),
        }
        self._buffers = {name: np.empty(size) for name, size in sizes.items()}

    def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        return self._buffers[name][: int(np.prod(shape))].reshape(shape)


def _rows_into(
    out: np.ndarray, weighted: np.ndarray, factors: DftFactors, work: _Workspace
) -> None:
    """``out`` ``(n, n_offsets)`` from the kernel-weighted windows ``z`` ``(ky, n, kx)``."""
    ky, n, kx = weighted.shape
    length = 2 * kx - 1
    # (2F, ky n): Z at [(f, re/im), (a, p)], i.e. per frequency a contiguous (2 ky, n) block
    spectra = work.take("spectra", (2 * kx, ky * n))
    np.matmul(factors.forward, weighted.reshape(ky * n, kx).T, out=spectra)
    products = work.take("products", (kx, 2 * ky, n))  # Y at [f, (re/im, dy), p]
    np.matmul(factors.blocks, spectra.reshape(kx, 2 * ky, n), out=products)
    # (ky, n, L): the full correlations, W(p, dy, dx) at [dy, p, dx + kx - 1]
    correlations = work.take("correlations", (ky, n, length))
    np.matmul(
        products.reshape(2 * kx, ky * n).T,
        factors.inverse,
        out=correlations.reshape(ky * n, length),
    )
    out[:, :kx] = correlations[0, :, kx - 1 :]  # dy = 0 keeps dx >= 0 (the band's half)
    out[:, kx:].reshape(n, ky - 1, length)[...] = correlations[1:].transpose(1, 0, 2)
