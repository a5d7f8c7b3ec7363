"""The sparse operator W = H^T N^-1 H against dense brute force, across backends and batchings."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from pipeline import Array2D, Convolver, Imaging, Mask2D
from pipeline.exc import OperatorError
from pipeline.operators import (
    BACKENDS,
    BatchGeometry,
    ImagingSparseOperator,
    OperatorInputs,
    compute_rows,
    n_offsets_for_kernel,
    offsets_for_kernel,
)
from pipeline.operators.reference import psf_weighted_data_dense, sparse_operator_dense


def _brute_force_w(mask: np.ndarray, kernel: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """W_ij = sum_k K[k-i+c] K[k-j+c] / sigma_k^2 by a direct sum over pixels k (no matrices)."""
    pixels = [tuple(p) for p in np.argwhere(~mask)]
    ky, kx = kernel.shape
    cy, cx = ky // 2, kx // 2
    n = len(pixels)
    w = np.zeros((n, n))
    for i, (iy, ix) in enumerate(pixels):
        for j, (jy, jx) in enumerate(pixels):
            if abs(iy - jy) >= ky or abs(ix - jx) >= kx:
                continue
            total = 0.0
            for k_y, k_x in pixels:
                ui, vi = k_y - iy + cy, k_x - ix + cx
                uj, vj = k_y - jy + cy, k_x - jx + cx
                if 0 <= ui < ky and 0 <= vi < kx and 0 <= uj < ky and 0 <= vj < kx:
                    total += kernel[ui, vi] * kernel[uj, vj] / noise[k_y, k_x] ** 2
            w[i, j] = total
    return w


def _annulus_touching_edge():
    mask = np.asarray(
        Mask2D.circular_annular(
            shape_native=(13, 11), pixel_scales=(0.1, 0.12), inner_radius=0.15, outer_radius=0.55
        )
    )
    mask = mask.copy()
    mask[6, 0] = mask[6, 1] = False  # reaches the left edge
    mask[0, 5] = False  # and the top edge
    return mask


CASES = {
    "annulus_edge_asym_negative": (
        _annulus_touching_edge(),
        np.random.default_rng(1).normal(size=(5, 3)),  # non-square, asymmetric, negative pixels
    ),
    "circle_wide_kernel": (
        np.asarray(Mask2D.circular(shape_native=(12, 14), pixel_scales=0.1, radius=0.45)),
        np.random.default_rng(2).uniform(-0.2, 1.0, size=(3, 7)),
    ),
    "all_unmasked_square": (
        np.zeros((7, 6), dtype=bool),
        np.random.default_rng(3).normal(size=(3, 3)),
    ),
}


@pytest.fixture(params=sorted(CASES), scope="module")
def case(request):
    mask, kernel = CASES[request.param]
    noise = np.random.default_rng(4).uniform(0.3, 3.0, size=mask.shape)  # non-uniform
    noise[mask] = 0.0  # as in a masked dataset's native noise map
    inputs = OperatorInputs.from_noise_map(noise, mask, kernel)
    return mask, kernel, noise, inputs, _brute_force_w(mask, kernel, noise)


def test_offsets_table():
    offsets = offsets_for_kernel((5, 3))
    assert len(offsets) == n_offsets_for_kernel((5, 3)) == (9 * 5 + 1) // 2
    assert tuple(offsets[0]) == (0, 0)
    assert all((dy > 0) or (dy == 0 and dx >= 0) for dy, dx in offsets)
    assert np.abs(offsets[:, 0]).max() == 4 and np.abs(offsets[:, 1]).max() == 2
    assert [tuple(o) for o in offsets] == sorted(tuple(o) for o in offsets)


def test_dense_matrix_reference_agrees_with_direct_sum(case):
    mask, kernel, noise, _, brute = case
    dense = sparse_operator_dense(mask, kernel, np.where(mask, 1.0, noise))
    np.testing.assert_allclose(dense, brute, rtol=0, atol=1e-13 * np.abs(brute).max())


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_equals_brute_force(case, backend):
    mask, kernel, noise, inputs, brute = case
    values = compute_rows(inputs, 0, inputs.layout.n_pixels, backend)
    w = inputs.layout.to_dense(values)
    scale = np.abs(brute).max()
    np.testing.assert_allclose(w, brute, rtol=0, atol=1e-12 * scale)
    # exact zeros stay exact (pairs with no unmasked pixel in their overlap, annulus holes)
    assert np.all(w[brute == 0.0] == 0.0)
    if (kernel < 0).any():
        assert (brute < -1e-3 * scale).any() and np.array_equal(
            np.sign(w[np.abs(brute) > 1e-9 * scale]), np.sign(brute[np.abs(brute) > 1e-9 * scale])
        )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_size", [1, 7, 13, 10_000])
def test_batching_invariance(case, backend, batch_size):
    _, _, _, inputs, _ = case
    n = inputs.layout.n_pixels
    full = compute_rows(inputs, 0, n, "numpy")
    # batches start and stop mid image row; each is computed on its own
    parts = [
        compute_rows(inputs, s, e, backend, batch_size=batch_size)
        for s, e in BatchGeometry(n, batch_size)
    ]
    np.testing.assert_allclose(np.concatenate(parts), full, rtol=0, atol=1e-12 * np.abs(full).max())
    if backend == "numba":  # per-element sums: identical bits whatever the batch
        np.testing.assert_array_equal(np.concatenate(parts), compute_rows(inputs, 0, n, "numba"))


def test_autoarray_layout_rebuilds_w(case):
    _, _, _, inputs, brute = case
    values = compute_rows(inputs, 0, inputs.layout.n_pixels)
    v, idx, lengths = inputs.layout.to_autoarray_layout(values)
    n = inputs.layout.n_pixels
    rows = np.repeat(np.arange(n), lengths)
    assert np.all(idx >= rows) and np.all(np.diff(idx)[np.diff(rows) == 0] > 0)
    u = sp.coo_matrix((v, (rows, idx)), shape=(n, n)).toarray()
    np.testing.assert_allclose(u + u.T, brute, rtol=0, atol=1e-12 * np.abs(brute).max())


def test_curvature_matrix_equals_blurred_mapping_route(case):
    mask, kernel, noise, inputs, _ = case
    rng = np.random.default_rng(5)
    n, s = inputs.layout.n_pixels, 9
    rows = np.repeat(np.arange(n), 2)
    cols = rng.integers(0, s, size=2 * n)
    weights = rng.uniform(0.1, 1.0, size=2 * n)
    a = sp.coo_matrix((weights, (rows, cols)), shape=(n, s)).tocsr()
    op = ImagingSparseOperator(compute_rows(inputs, 0, n), inputs.layout)
    m2d = Mask2D(mask, 0.1)
    blurred = Convolver(kernel).convolved_mapping_matrix_from(a, m2d)  # H A, no blurring region
    sigma = noise[~mask]
    expected = blurred.T @ (blurred / sigma[:, None] ** 2)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(op.curvature_matrix_from(a), expected, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(
        op.curvature_matrix_from((rows, cols, weights, s)), expected, rtol=0, atol=1e-12 * scale
    )
    x = rng.normal(size=(n, 2))
    np.testing.assert_allclose(
        op.apply(x), inputs.layout.to_dense(op.values) @ x, atol=1e-12 * scale
    )


def test_psf_weighted_data_and_data_vector(case):
    mask, kernel, noise, inputs, _ = case
    from pipeline.operators import psf_weighted_data_from

    data = np.random.default_rng(6).normal(size=mask.shape)
    pwd = psf_weighted_data_from(data, inputs)
    expected = psf_weighted_data_dense(mask, kernel, np.where(mask, 1.0, noise), data)
    np.testing.assert_allclose(pwd, expected, rtol=0, atol=1e-13 * np.abs(expected).max())
    n = inputs.layout.n_pixels
    a = np.random.default_rng(7).uniform(size=(n, 4))
    op = ImagingSparseOperator(compute_rows(inputs, 0, n), inputs.layout, pwd)
    np.testing.assert_allclose(op.data_vector_from(a), a.T @ expected, rtol=1e-12)


def test_float32_storage_rounds_float64_values(case):
    _, _, _, inputs, _ = case
    n = inputs.layout.n_pixels
    f64 = compute_rows(inputs, 0, n, "numba")
    f32 = compute_rows(inputs, 0, n, "numba", dtype=np.float32)
    assert f32.dtype == np.float32
    np.testing.assert_array_equal(f32, f64.astype(np.float32))


def test_reference_case_operator(reference_case):
    exp = reference_case.expected
    ds = Imaging.from_fits(
        reference_case.pixel_scales,
        reference_case.file("data.fits"),
        reference_case.file("noise_map.fits"),
        data_hdu=reference_case.data_hdu,
        psf_path=reference_case.file("psf.fits"),
    ).apply_mask(Mask2D.from_fits(reference_case.file("mask.fits"), reference_case.pixel_scales))
    for made in (ds.apply_sparse_operator(batch_size=16), ds.apply_sparse_operator_cpu()):
        op = made.sparse_operator
        scale = np.abs(exp["w_dense"]).max()
        np.testing.assert_allclose(op.to_dense(), exp["w_dense"], rtol=0, atol=1e-14 * scale)
        values, indexes, lengths = op.to_autoarray_layout()
        # positive PSFs: the reference's layout exactly (same entries, rows and order)
        np.testing.assert_array_equal(indexes, exp["w_indexes"])
        np.testing.assert_array_equal(lengths, exp["w_lengths"])
        np.testing.assert_allclose(values, exp["w_values"], rtol=0, atol=1e-14 * scale)
        np.testing.assert_allclose(
            op.psf_weighted_data,
            exp["psf_weighted_data"],
            rtol=1e-13,
            atol=1e-13 * np.abs(exp["psf_weighted_data"]).max(),
        )
        coo = (exp["A_rows"], exp["A_cols"], exp["A_vals"], int(exp["A_shape"][1]))
        f_scale = np.abs(exp["F_mapping"]).max()
        np.testing.assert_allclose(
            op.curvature_matrix_from(coo), exp["F_sparse_numba"], rtol=0, atol=1e-13 * f_scale
        )
        np.testing.assert_allclose(
            op.curvature_matrix_from(coo), exp["F_mapping"], rtol=0, atol=1e-13 * f_scale
        )
        np.testing.assert_allclose(
            op.data_vector_from(coo),
            exp["D_mapping"],
            rtol=1e-12,
            atol=1e-13 * np.abs(exp["D_mapping"]).max(),
        )
        np.testing.assert_allclose(
            op.apply(exp["jax_probe_X"]),
            exp["jax_probe_WX"],
            rtol=0,
            atol=1e-13 * np.abs(exp["jax_probe_WX"]).max(),
        )
        mapper = exp["mapper_mapping_matrix"]
        np.testing.assert_allclose(
            op.curvature_matrix_from(mapper),
            exp["mapper_F_mapping"],
            rtol=0,
            atol=1e-13 * np.abs(exp["mapper_F_mapping"]).max(),
        )
        np.testing.assert_allclose(
            op.data_vector_from(mapper),
            exp["mapper_D_mapping"],
            rtol=1e-12,
            atol=1e-13 * np.abs(exp["mapper_D_mapping"]).max(),
        )


def test_dataset_methods_carry_and_drop_the_operator():
    rng = np.random.default_rng(8)
    shape, scales = (16, 16), 0.1
    mask = Mask2D.circular(shape_native=shape, pixel_scales=scales, radius=0.5)
    ds = Imaging(
        Array2D.no_mask(rng.normal(size=shape), scales),
        Array2D.no_mask(rng.uniform(1, 2, size=shape), scales),
        Convolver(rng.uniform(size=(3, 3)), pixel_scales=scales),
    ).apply_mask(mask)
    with_op = ds.apply_sparse_operator_cpu()
    assert ds.sparse_operator is None and with_op.sparse_operator.n_pixels == ds.shape_slim
    assert (
        with_op.apply_over_sampling(over_sample_size_lp=2).sparse_operator
        is with_op.sparse_operator
    )
    assert (
        with_op.apply_mask(
            Mask2D.circular(shape_native=shape, pixel_scales=scales, radius=0.3)
        ).sparse_operator
        is None
    )
    assert (
        with_op.apply_noise_scaling(
            Mask2D.circular(shape_native=shape, pixel_scales=scales, radius=0.1)
        ).sparse_operator
        is None
    )
    f32 = ds.apply_sparse_operator(batch_size=32, backend="numpy", dtype=np.float32).sparse_operator
    assert f32.dtype == np.float32
    expected = sparse_operator_dense(
        np.asarray(mask), ds.psf.kernel.native, ds.noise_map.native + np.asarray(mask)
    )
    np.testing.assert_allclose(
        with_op.sparse_operator.to_dense(), expected, atol=1e-12 * np.abs(expected).max()
    )


def test_bad_inputs():
    mask = np.zeros((5, 5), dtype=bool)
    noise = np.ones((5, 5))
    noise[2, 3] = 0.0
    with pytest.raises(OperatorError, match="row 2, col 3"):
        OperatorInputs.from_noise_map(noise, mask, np.ones((3, 3)))
    with pytest.raises(OperatorError, match="odd"):
        OperatorInputs.from_noise_map(np.ones((5, 5)), mask, np.ones((2, 3)))
    inputs = OperatorInputs.from_noise_map(np.ones((5, 5)), mask, np.ones((3, 3)))
    with pytest.raises(OperatorError, match="unknown operator backend"):
        compute_rows(inputs, 0, 5, "cuda")
    with pytest.raises(OperatorError, match="outside"):
        compute_rows(inputs, 3, 40)


def test_rows_temporary_memory_is_bounded_by_output():
    mask = np.asarray(Mask2D.circular(shape_native=(90, 90), pixel_scales=0.1, radius=3.5))
    noise = np.random.default_rng(9).uniform(1, 2, size=mask.shape)
    inputs = OperatorInputs.from_noise_map(
        noise, mask, np.random.default_rng(10).uniform(size=(21, 21))
    )
    compute_rows(inputs, 0, 8)  # caches (band matrices, padded map) outside the measurement
    start, stop = 1000, 1512
    out_bytes = (stop - start) * inputs.layout.n_offsets * 8
    tracemalloc.start()
    compute_rows(inputs, start, stop, "numpy")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 3 * out_bytes, (peak, out_bytes)


def test_jax_is_float64_even_if_imported_first():
    code = (
        "import jax, numpy as np\n"
        "from pipeline.operators import OperatorInputs, compute_rows\n"
        "m = np.zeros((6, 6), bool); n = np.full((6, 6), 3.0); k = np.full((3, 3), 1 / 3)\n"
        "v = compute_rows(OperatorInputs.from_noise_map(n, m, k), 0, 36, 'jax')\n"
        "w = compute_rows(OperatorInputs.from_noise_map(n, m, k), 0, 36, 'numpy')\n"
        "assert v.dtype == np.float64 and np.abs(v - w).max() < 1e-15, np.abs(v - w).max()\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


def test_from_stored_values_computes_d_from_the_dataset(case):
    mask, kernel, noise, inputs, brute = case
    data = np.random.default_rng(9).normal(size=mask.shape)
    values = compute_rows(inputs, 0, inputs.layout.n_pixels, "numpy")
    operator = ImagingSparseOperator.from_stored_values(
        values, inputs.layout, kernel=kernel, noise_map_native=noise, data_native=data
    )
    expected = psf_weighted_data_dense(mask, kernel, noise, data)
    np.testing.assert_allclose(
        operator.psf_weighted_data, expected, rtol=0, atol=1e-12 * np.abs(expected).max()
    )
    assert operator.values is values
    np.testing.assert_allclose(operator.to_dense(), brute, rtol=0, atol=1e-12 * np.abs(brute).max())
