"""Numerical range of the operator: the inverse variance ``1 / sigma**2`` and W as stored.

Two checks keep a wrong value from ever being stored (docs/operator.md, "Range and float32
storage"):

* :func:`inverse_variance_from` is the one place where ``1 / sigma**2`` is computed. It refuses
  (:class:`~pipeline.exc.InvalidValueError`) a noise map for which ``1 / sigma**2`` is not a
  finite *normal* float64 at some unmasked pixel: ``sigma`` below ``2**-511.5`` (about 7.5e-155)
  overflows to ``inf``, above ``2**511`` (about 6.7e153) it is subnormal or underflows to 0.
* :func:`storage_values_from` turns the float64 band values computed by a kernel into the stored
  values (float32 cast, ``keep_bits`` mantissa rounding) and refuses
  (:class:`~pipeline.exc.OperatorError`) values that are not finite, a cast or rounding that
  overflows, and a row whose diagonal ``W_ii`` is non-zero but below the stored type's normal
  range. Every stored entry then satisfies

      |stored - computed| <= eps * max(|computed|, tiny)

  with ``(eps, tiny)`` = :func:`storage_error_bound` (``2**-24`` and ``2**-126`` for float32), and,
  since W is a Gram matrix, ``|stored_ij - computed_ij| <= eps * sqrt(W_ii W_jj)``.

Pure functions: arrays in, arrays out; the checks run after the kernel, so every backend
(numpy, numba, JAX) is checked the same way.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.exc import InvalidValueError, OperatorError

__all__ = [
    "FLOAT32_SAFE_NOISE",
    "inverse_variance_from",
    "unusable_noise",
    "storage_error_bound",
    "storage_values_from",
]

_TINY64 = float(np.finfo(np.float64).tiny)  # 2**-1022, the smallest normal float64

# sigma range (in the stored units) for which float32 storage always succeeds with a normalised,
# non-negative PSF whose central value is at least 1.1e-4: W_ii <= sum(K**2) / sigma_min**2
# <= 1e38 < float32 max, and W_ii >= K_c**2 / sigma**2 >= 2**-126 (docs/operator.md).
FLOAT32_SAFE_NOISE = (1e-19, 1e15)

_REMEDY_FLOAT64 = "sparse_operator.dtype: float64"


def _power_of_ten(log10_value: float) -> str:
    return f"1e{int(round(log10_value)):+d}"


def _noise_factor(sigma: np.ndarray) -> str | None:
    """A power of ten bringing the geometric middle of the positive finite ``sigma`` to 1, if
    one factor brings every such pixel into the normal range of ``1 / sigma**2``."""
    good = sigma[np.isfinite(sigma) & (sigma > 0.0)]
    if good.size == 0:
        return None
    lo, hi = math.log10(float(good.min())), math.log10(float(good.max()))
    if hi - lo > 300.0:  # the valid range spans ~307 decades: no single factor fits them all
        return None
    return _power_of_ten(-(lo + hi) / 2.0)


def unusable_noise(noise: np.ndarray) -> np.ndarray:
    """True where an RMS noise ``sigma`` cannot weight W: not finite, ``<= 0``, or ``1 / sigma**2``
    not a finite normal float64 (what :func:`inverse_variance_from` refuses at unmasked
    pixels); same shape as ``noise``."""
    sigma = np.asarray(noise, dtype=np.float64)
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        variance = sigma**2
        weights = np.where(variance < _TINY64, (1.0 / sigma) ** 2, 1.0 / variance)
        usable = np.isfinite(sigma) & (sigma > 0.0) & np.isfinite(weights) & (weights >= _TINY64)
    return ~usable


def inverse_variance_from(
    noise_map_native: np.ndarray, mask: np.ndarray, *, label: str = "the noise map"
) -> np.ndarray:
    """``1 / sigma**2`` at unmasked pixels, 0 at masked pixels (float64, native shape).

    Parameters
    ----------
    noise_map_native
        ``(ny, nx)`` RMS noise; values at masked pixels are ignored (NaN borders are fine).
    mask
        ``(ny, nx)`` booleans, True = masked.
    label
        How messages name the noise map (e.g. ``"dataset 'lens_1': the noise map"``).

    Returns
    -------
    np.ndarray
        ``1.0 / sigma**2`` (the same bits as that expression wherever ``sigma**2`` is a normal
        float64; ``(1 / sigma)**2`` where ``sigma**2`` would be subnormal, which keeps full
        precision down to ``sigma = 2**-511.5``).

    Raises
    ------
    InvalidValueError
        If at some unmasked pixel ``sigma`` is not finite or ``<= 0``, or ``1 / sigma**2`` is not
        a finite normal float64 (``sigma < ~7.5e-155`` or ``sigma > 2**511 ~ 6.7e153``). The
        message gives the number of such pixels, the first one (row, col) with its ``sigma``,
        and the remedy.
    """
    mask = np.asarray(mask, dtype=bool)
    noise = np.asarray(noise_map_native, dtype=np.float64)
    if noise.shape != mask.shape:
        raise InvalidValueError(
            f"{label} has shape {noise.shape} but the mask has shape {mask.shape}"
        )
    unmasked = ~mask
    sigma = noise[unmasked]
    usable = np.isfinite(sigma) & (sigma > 0.0)
    if not usable.all():
        bad = ~usable
        row, col = np.argwhere(unmasked)[np.flatnonzero(bad)[0]]
        raise InvalidValueError(
            f"{label} must be positive and finite at unmasked pixels: {int(bad.sum())} "
            f"pixel(s) are not (first: row {row}, col {col}, "
            f"sigma = {float(noise[row, col])!r}); mask those pixels or fix the input"
        )
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        variance = sigma**2
        weights = 1.0 / variance
        # sigma**2 subnormal (sigma < 2**-511): it has lost bits; 1/sigma is exact to 1/2 ulp
        edge = variance < _TINY64
        if edge.any():
            weights[edge] = (1.0 / sigma[edge]) ** 2
    bad = ~(np.isfinite(weights) & (weights >= _TINY64))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        row, col = np.argwhere(unmasked)[first]
        factor = _noise_factor(sigma)
        if factor is None:
            remedy = (
                f"sigma spans {float(sigma.min()):.3g} to {float(sigma.max()):.3g}, more than "
                "one unit can hold: mask the pixels out of range"
            )
        else:
            remedy = (
                "express the noise map (and the data) in other units, e.g. multiply both by "
                f"{factor}, or mask those pixels"
            )
        raise InvalidValueError(
            f"{label}: 1/sigma**2 is not a finite normal float64 at {int(bad.sum())} unmasked "
            f"pixel(s) (first: row {row}, col {col}, sigma = {float(sigma[first])!r}, "
            f"1/sigma**2 = {float(weights[first])!r}), so W = H^T N^-1 H cannot be computed "
            f"(float64 needs 7.5e-155 <= sigma <= 6.7e153, float32 storage about "
            f"{FLOAT32_SAFE_NOISE[0]:g} <= sigma <= {FLOAT32_SAFE_NOISE[1]:g}); {remedy}"
        )
    out = np.zeros_like(noise)
    out[unmasked] = weights
    return out


def storage_error_bound(dtype: np.dtype | type | str, keep_bits: int | None = None):
    """``(eps, tiny)`` such that every stored entry satisfies
    ``|stored - computed| <= eps * max(|computed|, tiny)`` (round to nearest even).

    * float64: ``eps = 0`` (stored as computed), or ``2**-(keep_bits + 1)`` with ``keep_bits``;
      ``tiny = 2**-1022``.
    * float32: ``eps = 2**-24`` (the cast; ``2**-24 * 2**-126 = 2**-150`` is half the subnormal
      spacing), or ``2**-24 + 2**-(keep_bits + 1) * (1 + 2**-24)`` with ``keep_bits < 23`` (the
      cast, then BitRound of the cast value); ``tiny = 2**-126``.
    """
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        return (0.0 if keep_bits is None or keep_bits >= 52 else 2.0 ** -(keep_bits + 1)), _TINY64
    if dtype == np.float32:
        eps = 2.0**-24
        if keep_bits is not None and keep_bits < 23:
            eps += 2.0 ** -(keep_bits + 1) * (1.0 + 2.0**-24)
        return eps, float(np.finfo(np.float32).tiny)
    raise OperatorError(f"operator dtype must be float64 or float32, got {dtype}")


def _diagonal_summary(diagonal: np.ndarray) -> tuple[float | None, float | None]:
    finite = np.abs(diagonal[np.isfinite(diagonal) & (diagonal != 0.0)])
    if finite.size == 0:
        return None, None
    return float(finite.min()), float(finite.max())


def _rescale_hint(smallest: float | None, largest: float | None, dtype: np.dtype) -> str:
    """The remedy: a factor for noise map and data (W scales as 1 / factor**2) bringing the
    geometric middle of the diagonal to 1, and float64 storage for float32."""
    float64 = "" if dtype == np.float64 else f", or store float64 ({_REMEDY_FLOAT64})"
    if smallest is None or largest is None:
        factor = "by one factor"
    else:
        log_mid = (math.log10(smallest) + math.log10(largest)) / 2.0
        factor = f"by one factor, e.g. {_power_of_ten(log_mid / 2.0)}"
    low, high = FLOAT32_SAFE_NOISE
    return (
        f"W scales as 1/sigma**2: express the noise map and the data in other units (multiply "
        f"both {factor}; with a normalised PSF float32 storage is safe for {low:g} <= sigma <= "
        f"{high:g}){float64}"
    )


def _all_finite(values: np.ndarray) -> bool:
    """No NaN or inf in ``values``: one summing pass without temporaries (a finite sum proves
    it), element by element only when the sum is not finite (a NaN or inf, or huge values)."""
    with np.errstate(over="ignore", invalid="ignore"):
        total = values.sum()
    return bool(np.isfinite(total)) or bool(np.isfinite(values).all())


def _describe(smallest: float | None, largest: float | None) -> str:
    if smallest is None:
        return "no finite non-zero diagonal W_ii in this batch"
    return f"diagonal W_ii in this batch from {smallest:.3g} to {largest:.3g}"


def storage_values_from(
    values: np.ndarray, dtype: np.dtype | type | str, keep_bits: int | None = None
) -> np.ndarray:
    """Band values as stored: the float64 ``values`` cast to ``dtype``, mantissa rounded to
    ``keep_bits`` bits (``numcodecs.BitRound``) if given, after checking that the result is
    within :func:`storage_error_bound`.

    ``values`` are ``(rows, n_offsets)`` in band layout (column 0 is the diagonal ``W_ii``).
    float64 values without ``keep_bits`` are returned uncopied.

    Raises
    ------
    OperatorError
        If a value is not finite (W overflowed float64), a non-zero diagonal ``W_ii`` is below
        ``dtype``'s normal range (float32: ``2**-126 ~ 1.18e-38``), or the cast or the rounding
        overflows (float32: ``|W| >= 2**128 - 2**103 ~ 3.4e38``). The message gives the cause,
        the batch's smallest and largest diagonal, and the remedy (a factor for noise map and
        data, or float64 storage).
    """
    dtype = np.dtype(dtype)
    _, tiny = storage_error_bound(dtype, keep_bits)  # validates dtype
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[1] == 0:
        raise OperatorError(f"band values must be (rows, n_offsets), got shape {values.shape}")
    if values.dtype != np.float64:
        values = values.astype(np.float64)
    diagonal = values[:, 0]
    smallest, largest = _diagonal_summary(diagonal)
    name = dtype.name
    small = (diagonal != 0.0) & (np.abs(diagonal) < tiny)  # False for NaN and inf
    if small.any():
        raise OperatorError(
            f"{int(small.sum())} row(s) of W have a diagonal W_ii below {name}'s normal range "
            f"(< {tiny:.4g}; first: row {int(np.flatnonzero(small)[0])} of this batch, "
            f"{_describe(smallest, largest)}): stored as {name} they would lose precision; "
            f"{_rescale_hint(smallest, largest, dtype)}"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        out = values.astype(dtype, copy=keep_bits is not None)
    if keep_bits is not None:
        from numcodecs import BitRound

        # BitRound adds to the bit pattern: a NaN payload could carry into the sign bit and
        # come out finite, so NaN/inf are caught before it
        if not _all_finite(out):
            _refuse(values, out, dtype, None, smallest, largest)
        # applied before writing rather than as a Zarr filter: BitRound is not in the Zarr v3
        # spec, and as a filter every reader would need numcodecs (and get a warning)
        out = BitRound(keepbits=keep_bits).encode(out).view(dtype).reshape(out.shape)
    if not _all_finite(out):  # a NaN or inf in values stays one in out
        _refuse(values, out, dtype, keep_bits, smallest, largest)
    return out


def _refuse(
    values: np.ndarray,
    out: np.ndarray,
    dtype: np.dtype,
    keep_bits: int | None,
    smallest: float | None,
    largest: float | None,
):
    """Raise the :class:`OperatorError` for non-finite ``out``: non-finite float64 ``values``
    (W overflowed float64) or a cast/rounding beyond ``dtype``'s largest finite value."""
    finite = np.isfinite(values)
    if not finite.all():
        row, column = np.argwhere(~finite)[0]
        raise OperatorError(
            f"the operator has {int(values.size - np.count_nonzero(finite))} non-finite "
            f"value(s) (first: row {row} of this batch, band column {column}: "
            f"{float(values[row, column])!r}): W = H^T N^-1 H overflowed float64 "
            f"({_describe(smallest, largest)}); check that the PSF is normalised; "
            f"{_rescale_hint(smallest, largest, np.dtype(np.float64))}"
        )
    name = dtype.name
    over = ~np.isfinite(out)
    row, column = np.argwhere(over)[0]
    largest_value = float(np.abs(values).max())
    rounding = "" if keep_bits is None else f" with keep_bits={keep_bits}"
    raise OperatorError(
        f"{name} storage{rounding} overflows: {int(over.sum())} value(s) round beyond "
        f"{name}'s largest finite value {float(np.finfo(dtype).max):.4g} (largest |W| "
        f"in this batch = {largest_value:.4g}, first at row {row}, band column {column}; "
        f"{_describe(smallest, largest)}); "
        f"{_rescale_hint(smallest, max(largest or 0.0, largest_value), dtype)}"
    )
