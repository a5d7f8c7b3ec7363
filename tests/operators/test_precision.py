"""The range of the operator's values: ``1/sigma**2`` (refused unless a finite normal float64) and
W as stored (refused unless finite and within the documented error bound), checked against exact
rational arithmetic and the brute-force reference at noise scales from 1e-30 to 1e30.

The bound (docs/operator.md, "Range and float32 storage"): every stored entry satisfies
``|stored - computed| <= eps * max(|computed|, tiny)`` with ``eps = 2**-24``, ``tiny = 2**-126`` for
float32 (``eps = 2**-24 + 2**-(k + 1) (1 + 2**-24)`` with ``keep_bits = k``), and, every non-zero
diagonal being at least ``tiny``, ``|stored_ij - W_ij| <= eps * sqrt(W_ii W_jj)``.
"""

from __future__ import annotations

import re
from fractions import Fraction

import numpy as np
import pytest

from pipeline import Array2D, Convolver, Imaging, Mask2D
from pipeline.exc import InvalidValueError, OperatorError
from pipeline.operators import (
    BACKENDS,
    OperatorInputs,
    compute_rows,
    inverse_variance_from,
    storage_error_bound,
    storage_values_from,
)
from pipeline.operators.reference import sparse_operator_dense

F32_TINY = 2.0**-126  # smallest normal float32
F32_MAX = float(np.finfo(np.float32).max)  # (2 - 2**-23) * 2**127
F32_OVERFLOW = 2.0**128 - 2.0**103  # round to nearest: from here on a value rounds to inf
F64_MAX = float(np.finfo(np.float64).max)
F64_TINY = 2.0**-1022


def _kernel() -> np.ndarray:
    """7x7 normalised PSF: a Gaussian core (centre 0.15) whose wings fall to ~1e-25 at the
    corners, with some negative wing pixels (W is still a Gram matrix: its weights are >= 0)."""
    yy, xx = np.mgrid[-3:4, -3:4]
    r = np.hypot(yy, xx)
    kernel = np.exp(-(r**2) / (2 * 1.5**2)) * 10.0 ** (-10.0 * np.maximum(r - 2.0, 0.0))
    flip = (r > 2.0) & (np.random.default_rng(0).random(kernel.shape) < 0.3)
    kernel[flip] *= -1.0
    return kernel / kernel.sum()


KERNEL = _kernel()
MASK = np.hypot(*(np.mgrid[-7:7, -7:7] + 0.5)) > 6.0  # 112 unmasked pixels of 14x14
BASE_NOISE = np.random.default_rng(1).uniform(0.5, 2.0, size=MASK.shape)  # a factor 4 spread

# noise scale -> refused for float32 storage? (sigma in [0.5, 2] * scale)
SCALES = {
    1e-30: True,  # W ~ 1e60: beyond float32's 3.4e38
    1e-21: True,  # physical flux units (issue 11): W ~ 1e42
    1e-15: False,
    1.0: False,
    1e15: False,
    1e18: False,  # diagonal ~1e-37: normal; many entries float32-subnormal or flushed to 0
    1e30: True,  # W_ii ~ 1e-60: below float32's normal range
}


def _exact_bound_holds(stored: np.ndarray, computed: np.ndarray, eps: float, tiny: float):
    """Entry by entry, in exact rational arithmetic: |stored - computed| <= eps max(|c|, tiny).
    Returns the indexes of entries that violate it."""
    eps_q, tiny_q = Fraction(eps), Fraction(tiny)
    bad = []
    for index, (s, c) in enumerate(
        zip(stored.ravel().tolist(), computed.ravel().tolist(), strict=True)
    ):
        if abs(Fraction(s) - Fraction(c)) > eps_q * max(abs(Fraction(c)), tiny_q):
            bad.append(index)
    return bad


@pytest.fixture(scope="module")
def reference_w():
    """The brute-force W (dense, float64) for sigma = BASE_NOISE: W at scale s is W / s**2."""
    return sparse_operator_dense(MASK, KERNEL, np.where(MASK, 1.0, BASE_NOISE))


# ------------------------------------------------------------------------------ inverse variance
def test_inverse_variance_is_one_over_sigma_squared_at_unmasked_pixels():
    noise = BASE_NOISE.copy()
    noise[MASK] = np.nan  # masked pixels are ignored (NaN borders are fine)
    w = inverse_variance_from(noise, MASK)
    assert w.dtype == np.float64 and w.shape == MASK.shape
    np.testing.assert_array_equal(w[~MASK], 1.0 / BASE_NOISE[~MASK] ** 2)  # same bits
    assert np.all(w[MASK] == 0.0)
    # OperatorInputs computes it here, and nowhere else
    inputs = OperatorInputs.from_noise_map(noise, MASK, KERNEL)
    np.testing.assert_array_equal(inputs.inverse_variance, w)


@pytest.mark.parametrize("sigma, factor", [(1e-200, "1e+200"), (1e300, "1e-300")])
def test_noise_outside_float64_range_is_refused_with_the_remedy(sigma, factor):
    noise = BASE_NOISE * sigma
    with pytest.raises(InvalidValueError) as info:
        inverse_variance_from(noise, MASK, label="dataset 'lens': the noise map")
    message = str(info.value)
    row, col = np.argwhere(~MASK)[0]
    assert "dataset 'lens': the noise map: 1/sigma**2 is not a finite normal float64" in message
    assert f"at {int((~MASK).sum())} unmasked pixel(s)" in message
    assert f"first: row {row}, col {col}, sigma = {float(noise[row, col])!r}" in message
    assert f"multiply both by {factor}" in message and "mask those pixels" in message
    # what the issue saw: inf/NaN (1e-200) or all-zero (1e300) weights, now refused
    with np.errstate(all="ignore"):
        naive = 1.0 / noise[~MASK] ** 2
    assert not np.all(np.isfinite(naive) & (naive >= F64_TINY))
    with pytest.raises(OperatorError, match="not a finite normal float64"):
        OperatorInputs.from_noise_map(noise, MASK, KERNEL)


def test_one_bad_pixel_is_named_and_masking_it_is_enough():
    noise = BASE_NOISE.copy()
    row, col = np.argwhere(~MASK)[40]
    noise[row, col] = 1e-170
    with pytest.raises(
        InvalidValueError, match=rf"at 1 unmasked pixel\(s\) \(first: row {row}, col {col}"
    ):
        inverse_variance_from(noise, MASK)
    masked = MASK.copy()
    masked[row, col] = True
    assert inverse_variance_from(noise, masked)[row, col] == 0.0
    # sigma spanning more than float64 allows: no single factor, masking is the remedy
    noise[row, col] = 1e-200
    noise[tuple(np.argwhere(~MASK)[41])] = 1e200
    with pytest.raises(
        InvalidValueError, match="more than one unit can hold: mask the pixels out of range"
    ):
        inverse_variance_from(noise, MASK)


@pytest.mark.parametrize("value", [0.0, -1.0, np.nan, np.inf, -np.inf])
def test_non_positive_or_non_finite_noise_is_refused(value):
    noise = BASE_NOISE.copy()
    row, col = np.argwhere(~MASK)[7]
    noise[row, col] = value
    with pytest.raises(
        InvalidValueError, match=rf"1 pixel\(s\) are not \(first: row {row}, col {col}"
    ):
        inverse_variance_from(noise, MASK)


def _accepts(sigma: float) -> tuple[bool, float]:
    mask = np.array([[False]])
    try:
        return True, float(inverse_variance_from(np.array([[sigma]]), mask)[0, 0])
    except InvalidValueError:
        return False, float("nan")


def test_float64_edges_of_the_noise():
    # exact powers of two: 1/sigma**2 exact
    assert _accepts(2.0**-511) == (True, 2.0**1022)
    assert _accepts(2.0**511) == (True, F64_TINY)  # the smallest normal float64: accepted
    assert not _accepts(np.nextafter(2.0**511, np.inf))[0]  # just below normal: refused
    assert not _accepts(2.0**-512)[0]  # 2**1024 overflows
    for sigma in (F64_TINY, 5e-324, 1e-160, F64_MAX, 1e160):
        assert not _accepts(sigma)[0], sigma
    # around sigma = 1/sqrt(max) ~ 2**-511.5, where sigma**2 is subnormal: accepted exactly when
    # the exact 1/sigma**2 fits float64, and then within 3 roundings of it
    lowest = float(np.sqrt(1.0 / F64_MAX))
    candidates = [lowest]
    for _ in range(6):
        candidates.append(float(np.nextafter(candidates[-1], np.inf)))
        candidates.insert(0, float(np.nextafter(candidates[0], 0.0)))
    candidates += [2.0**-511.5 * 1.001, 2.0**-511.25, 2.0**-511.1]
    inf_threshold = Fraction(2) ** 1024 - Fraction(2) ** 970  # exact values from here round to inf
    outcomes = set()
    for sigma in candidates:
        ok, w = _accepts(sigma)
        exact = 1 / Fraction(sigma) ** 2
        outcomes.add(ok)
        if ok:
            assert np.isfinite(w)
            assert abs(Fraction(w) - exact) <= 3 * Fraction(2) ** -53 * exact, sigma
        else:
            # refused only at the very edge: within 3 roundings of the overflow threshold
            assert exact >= inf_threshold * (1 - 3 * Fraction(2) ** -53), sigma
    assert outcomes == {True, False}


# ------------------------------------------------------------------------------ stored values
def test_error_bound_constants():
    assert storage_error_bound("float32") == (2.0**-24, 2.0**-126)
    assert storage_error_bound(np.float64) == (0.0, 2.0**-1022)
    assert storage_error_bound("float64", 20) == (2.0**-21, 2.0**-1022)
    eps, tiny = storage_error_bound("float32", 12)
    assert eps == 2.0**-24 + 2.0**-13 * (1 + 2.0**-24) and tiny == 2.0**-126
    assert storage_error_bound("float32", 23) == (2.0**-24, 2.0**-126)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", sorted(SCALES))
def test_float32_storage_is_refused_or_within_the_bound(scale, backend, reference_w):
    """Every backend, every scale: refused (OperatorError naming cause and remedy) exactly where
    float32 cannot hold W, else every stored entry within the bound, exactly (rationals), and
    within eps sqrt(W_ii W_jj) of the brute-force W."""
    inputs = OperatorInputs.from_noise_map(BASE_NOISE * scale, MASK, KERNEL)  # float64: fine
    n = inputs.layout.n_pixels
    computed = compute_rows(inputs, 0, n, backend)
    assert np.all(np.isfinite(computed))
    if SCALES[scale]:
        with pytest.raises(OperatorError) as info:
            storage_values_from(computed, np.float32)
        message = str(info.value)
        cause = "overflows" if scale < 1 else "below float32's normal range"
        assert cause in message, message
        assert "diagonal W_ii in this batch from" in message
        assert "sparse_operator.dtype: float64" in message
        # the remedy works: the factor the message suggests makes float32 storage succeed
        factor = float(re.search(r"multiply both by one factor, e\.g\. (1e[+-]\d+)", message)[1])
        assert abs(np.log10(factor * scale)) <= 2
        rescaled = OperatorInputs.from_noise_map(BASE_NOISE * scale * factor, MASK, KERNEL)
        storage_values_from(compute_rows(rescaled, 0, n, backend), np.float32)
        # the same check on the kernel's own float32 path
        with pytest.raises(OperatorError, match=cause):
            compute_rows(inputs, 0, n, backend, dtype=np.float32)
        return
    stored = storage_values_from(computed, np.float32)
    assert stored.dtype == np.float32 and np.all(np.isfinite(stored))
    np.testing.assert_array_equal(stored, compute_rows(inputs, 0, n, backend, dtype=np.float32))
    assert _exact_bound_holds(stored, computed, 2.0**-24, 2.0**-126) == []
    # against the brute force: eps sqrt(W_ii W_jj), plus float64 rounding of the kernels
    exact = reference_w / scale**2
    got = inputs.layout.to_dense(stored.astype(np.float64))
    diag = np.sqrt(np.diag(exact))
    assert np.all(np.diag(exact) >= 2.0**-126)
    normalised = np.abs(got - exact) / np.outer(diag, diag)
    assert normalised.max() <= 2.0**-24 + 1e-13, normalised.max()
    assert normalised.max() > 2.0**-30  # really rounded


def test_subnormal_and_flushed_entries_occur_and_stay_within_the_bound():
    """At sigma ~ 1e18 the diagonal is ~1e-37 (normal) while the PSF's wings put entries in
    float32's subnormal range and below it (stored as 0): absolute error <= 2**-150 there."""
    inputs = OperatorInputs.from_noise_map(BASE_NOISE * 1e18, MASK, KERNEL)
    computed = compute_rows(inputs, 0, inputs.layout.n_pixels, "numpy")
    stored = storage_values_from(computed, np.float32)
    subnormal = (stored != 0) & (np.abs(stored) < F32_TINY)
    flushed = (stored == 0) & (computed != 0)
    assert subnormal.sum() > 100 and flushed.sum() > 100
    assert np.abs(computed[flushed]).max() <= 2.0**-150
    errors = np.abs(stored[subnormal].astype(np.float64) - computed[subnormal])
    assert errors.max() <= 2.0**-150 and errors.max() > 2.0**-160
    assert _exact_bound_holds(stored[subnormal], computed[subnormal], 2.0**-24, F32_TINY) == []


def _band(*diagonal_and_entries: float) -> np.ndarray:
    return np.array([diagonal_and_entries], dtype=np.float64)


def test_float32_range_limits():
    # the overflow threshold of round to nearest: just below it rounds to float32 max
    below = float(np.nextafter(F32_OVERFLOW, 0.0))
    stored = storage_values_from(_band(F32_MAX, below, -below), np.float32)
    assert np.all(stored == np.array([F32_MAX, F32_MAX, -F32_MAX], dtype=np.float32))
    assert _exact_bound_holds(stored, _band(F32_MAX, below, -below), 2.0**-24, F32_TINY) == []
    for value in (F32_OVERFLOW, -F32_OVERFLOW, 1e39):
        with pytest.raises(OperatorError, match="float32 storage overflows: 1 value"):
            storage_values_from(_band(F32_MAX, value), np.float32)
    # the diagonal: 2**-126 is accepted, the float64 just below it refused, a zero row accepted
    storage_values_from(_band(F32_TINY, 1e-40, -3e-45, 1e-46), np.float32)
    with pytest.raises(OperatorError, match=r"1 row\(s\) of W have a diagonal W_ii below float32"):
        storage_values_from(_band(float(np.nextafter(F32_TINY, 0.0)), 0.0), np.float32)
    assert np.all(storage_values_from(np.zeros((3, 5)), np.float32) == 0)
    # non-finite float64 values: refused whatever the dtype
    for bad in (np.inf, -np.inf, np.nan, -np.nan):
        for dtype, keep_bits in (("float32", None), ("float64", None), ("float32", 10)):
            with pytest.raises(OperatorError, match="1 non-finite value"):
                storage_values_from(_band(1.0, bad), dtype, keep_bits)
    # a NaN whose payload would carry into the sign bit under BitRound is caught before it
    nan = np.array([0x7FFFFFFF], dtype=np.uint32).view(np.float32).astype(np.float64)[0]
    with pytest.raises(OperatorError, match="non-finite value"):
        storage_values_from(_band(1.0, nan), "float32", 10)


def test_float64_storage_is_the_computed_values_with_a_normal_diagonal():
    values = np.array([[4.0, -1.0, 2.0**-1074], [F64_MAX, 1e300, 0.0]])
    assert storage_values_from(values, np.float64) is values  # no copy
    with pytest.raises(OperatorError, match="below float64's normal range"):
        storage_values_from(_band(2.0**-1030, 0.0), np.float64)
    with pytest.raises(OperatorError, match="float64 storage with keep_bits=10 overflows"):
        storage_values_from(_band(F64_MAX, 1.0), np.float64, keep_bits=10)


@pytest.mark.parametrize(
    "dtype, keep_bits", [("float32", 7), ("float32", 12), ("float32", 23), ("float64", 20)]
)
def test_keep_bits_bound(dtype, keep_bits, reference_w):
    """BitRound after the cast: |stored - computed| <= eps max(|computed|, tiny) with
    eps = 2**-24 + 2**-(k+1) (1 + 2**-24) (float32, k < 23) or 2**-(k+1) (float64), including
    subnormal entries; a rounding that carries past the largest finite value is refused."""
    if dtype == "float32":
        eps = 2.0**-24 + (2.0 ** -(keep_bits + 1) * (1 + 2.0**-24) if keep_bits < 23 else 0.0)
        tiny, scale = F32_TINY, 1e18  # subnormal float32 entries occur
    else:
        eps, tiny, scale = 2.0 ** -(keep_bits + 1), F64_TINY, 1.0
    assert storage_error_bound(dtype, keep_bits) == (eps, tiny)
    inputs = OperatorInputs.from_noise_map(BASE_NOISE * scale, MASK, KERNEL)
    computed = compute_rows(inputs, 0, inputs.layout.n_pixels, "numpy")
    stored = storage_values_from(computed, dtype, keep_bits)
    assert stored.dtype == np.dtype(dtype)
    assert _exact_bound_holds(stored, computed, eps, tiny) == []
    relative = (
        np.abs(stored - computed)[np.abs(computed) > tiny]
        / np.abs(computed)[np.abs(computed) > tiny]
    )
    assert relative.max() > eps / 4  # the bound is tight
    if dtype == "float32" and keep_bits < 23:
        with pytest.raises(OperatorError, match=f"keep_bits={keep_bits} overflows"):
            storage_values_from(_band(F32_MAX, 1.0), dtype, keep_bits)


def test_curvature_matrix_error_bound(reference_w):
    """F = A^T W A from float32-stored W: |F^_ab - F_ab| <= 2**-24 n_band sqrt(G_aa G_bb) with
    G = A^T diag(W) A and n_band = (2ky - 1)(2kx - 1) (docs/operator.md)."""
    from pipeline.operators import ImagingSparseOperator

    inputs = OperatorInputs.from_noise_map(BASE_NOISE, MASK, KERNEL)
    n = inputs.layout.n_pixels
    computed = compute_rows(inputs, 0, n, "numpy")
    stored = storage_values_from(computed, np.float32)
    mapping = np.random.default_rng(3).uniform(-1.0, 1.0, size=(n, 15))
    f = ImagingSparseOperator(computed, inputs.layout).curvature_matrix_from(mapping)
    f_hat = ImagingSparseOperator(stored, inputs.layout).curvature_matrix_from(mapping)
    g = mapping.T @ (np.diag(inputs.layout.to_dense(computed))[:, None] * mapping)
    n_band = (2 * 7 - 1) * (2 * 7 - 1)
    bound = 2.0**-24 * n_band * np.sqrt(np.outer(np.diag(g), np.diag(g)))
    assert np.all(np.abs(f_hat - f) <= bound * (1 + 1e-9))
    assert np.abs(f_hat - f).max() > 0


def test_imaging_float32_operator_in_physical_units_is_refused():
    """The issue's case in memory: sigma ~ 1e-21 with dtype float32 raises instead of storing
    inf; the same dataset rescaled by 1e21 (the remedy) works in float32."""
    scales = 0.1
    data = np.random.default_rng(4).normal(size=MASK.shape)
    psf = Convolver(KERNEL, pixel_scales=scales)
    mask = Mask2D(MASK, scales)

    def dataset(factor: float) -> Imaging:
        return Imaging(
            Array2D.no_mask(data * factor, scales),
            Array2D.no_mask(BASE_NOISE * factor, scales),
            psf,
        ).apply_mask(mask)

    physical = dataset(1e-21)
    with pytest.raises(OperatorError, match="float32 storage overflows"):
        physical.apply_sparse_operator(backend="numpy", dtype=np.float32)
    f64 = physical.apply_sparse_operator(backend="numpy").sparse_operator.values
    assert np.all(np.isfinite(f64))
    f32 = dataset(1.0).apply_sparse_operator(backend="numpy", dtype=np.float32).sparse_operator
    assert f32.dtype == np.float32
    scale = np.abs(f64).max()
    np.testing.assert_allclose(f32.values.astype(np.float64) * 1e42, f64, rtol=0, atol=1e-7 * scale)
