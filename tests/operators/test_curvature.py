"""F = A^T W A, D = A^T H^T N^-1 d and W x straight from the band, against dense brute force, for
every mapping form."""

from __future__ import annotations

import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from pipeline.exc import OperatorError
from pipeline.operators import ImagingSparseOperator, OperatorInputs, OperatorLayout, compute_rows
from pipeline.operators.mappings import MapperLayout, sparse_mapping_from
from pipeline.operators.reference import psf_weighted_data_dense, sparse_operator_dense


def _holes_and_edges() -> np.ndarray:
    mask = np.zeros((14, 13), dtype=bool)
    mask[4:7, 3:6] = True  # a hole
    mask[9, 8:12] = True  # a slit
    mask[0, :3] = True  # the top-left corner masked; the rest of the frame edge unmasked
    mask[13, 12] = True
    return mask


def _ring() -> np.ndarray:
    yy, xx = np.mgrid[:15, :16] - np.array([7.0, 7.5])[:, None, None]
    r2 = yy**2 + xx**2
    mask = (r2 < 2.5**2) | (r2 > 7**2)
    mask[7, :2] = False  # unmasked pixels on the left edge
    return mask


CASES = {
    "holes_edges_5x3_negative": (_holes_and_edges(), np.random.default_rng(1).normal(size=(5, 3))),
    "ring_3x7_negative_lobes": (_ring(), np.random.default_rng(2).uniform(-0.3, 1.0, (3, 7))),
    "holes_edges_1x1": (_holes_and_edges(), np.array([[1.7]])),
}


@pytest.fixture(params=sorted(CASES), scope="module")
def case(request):
    mask, kernel = CASES[request.param]
    rng = np.random.default_rng(4)
    noise = rng.uniform(0.3, 3.0, size=mask.shape)
    noise[mask] = 0.0
    data = rng.normal(size=mask.shape)
    inputs = OperatorInputs.from_noise_map(noise, mask, kernel)
    values = compute_rows(inputs, 0, inputs.layout.n_pixels, "numpy")
    pwd = psf_weighted_data_dense(mask, kernel, np.where(mask, 1.0, noise), data)
    w = sparse_operator_dense(mask, kernel, np.where(mask, 1.0, noise))
    return inputs.layout, values, w, pwd


def _mapping(n: int, s: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(N, k)`` distinct source pixels per image pixel (all in [0, s)) and signed weights."""
    rng = np.random.default_rng(seed)
    index = np.argsort(rng.random((n, s)), axis=1)[:, :k]
    weights = rng.uniform(-0.5, 1.0, size=(n, k))
    dense = np.zeros((n, s))
    np.put_along_axis(dense, index, weights, axis=1)
    return index, weights, dense


def _assert_close(got: np.ndarray, expected: np.ndarray) -> None:
    scale = max(np.abs(expected).max(), 1e-300)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * scale)


def _forms(index: np.ndarray, weights: np.ndarray, dense: np.ndarray, s: int) -> dict:
    n, k = index.shape
    rows = np.repeat(np.arange(n), k)
    cols, vals = index.ravel(), weights.ravel()
    # autoarray's layout: float arrays, -1 padding and junk weights beyond the lengths
    lengths = np.random.default_rng(0).integers(0, k + 1, size=n)
    lengths[0] = k
    padded_index = np.full((n, k + 2), -1.0)
    padded_weights = np.full((n, k + 2), 9.0)
    padded_index[:, :k], padded_weights[:, :k] = index, weights
    used = np.arange(k + 2)[None, :] < lengths[:, None]
    padded_index[~used] = -1.0
    layout_dense = np.zeros_like(dense)
    for i in range(n):
        layout_dense[i, index[i, : lengths[i]]] = weights[i, : lengths[i]]
    layout = MapperLayout(padded_index, padded_weights, lengths.astype(float), s)
    mapper = SimpleNamespace(
        unique_mappings=SimpleNamespace(
            data_to_pix_unique=padded_index, data_weights=padded_weights, pix_lengths=lengths
        ),
        pixels=s,
    )
    return {
        "csr": (sp.csr_matrix(dense), dense),
        "csc": (sp.csc_matrix(dense), dense),
        "coo_array": (sp.coo_array((vals, (rows, cols)), shape=(n, s)), dense),
        "dense": (dense, dense),
        "triplets_with_s": ((rows, cols, vals, s), dense),
        "triplets": ((list(rows), cols, vals), dense[:, : cols.max() + 1]),
        "mapper_layout": (layout, layout_dense),
        "mapper_layout_full_rows": (MapperLayout(index, weights, np.full(n, k), s), dense),
        "mapper_object": (mapper, layout_dense),
    }


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("k", "s_factor"), [(1, 0.3), (3, 0.5), (3, 2.0), (16, 1.5)])
def test_curvature_and_data_vector_equal_dense(case, dtype, k, s_factor):
    layout, values, w, pwd = case
    n = layout.n_pixels
    s = max(int(s_factor * n), k)  # S smaller and larger than N
    stored = values.astype(dtype)
    if dtype == np.float32:  # the float32 values, exactly, upcast
        w = layout.to_dense(stored.astype(np.float64))
    op = ImagingSparseOperator(stored, layout, pwd)
    index, weights, dense = _mapping(n, s, k, seed=k)
    for name, (mapping, a) in _forms(index, weights, dense, s).items():
        f = op.curvature_matrix_from(mapping)
        assert f.shape == (a.shape[1], a.shape[1]) and f.dtype == np.float64, name
        assert np.array_equal(f, f.T), name
        _assert_close(f, a.T @ w @ a)
        _assert_close(op.data_vector_from(mapping), a.T @ pwd)


def test_empty_columns_and_repeated_entries(case):
    layout, values, w, _ = case
    n = layout.n_pixels
    op = ImagingSparseOperator(values, layout)
    rng = np.random.default_rng(3)
    s = 3 * n  # most source pixels receive no image pixel
    rows = np.concatenate([np.arange(n), np.arange(n)])
    cols = np.concatenate([rng.integers(0, s, n), rng.integers(0, s, n)])
    cols[n : n + 5] = cols[:5]  # a pair given twice adds up
    vals = rng.normal(size=2 * n)
    a = sp.coo_matrix((vals, (rows, cols)), shape=(n, s)).toarray()
    f = op.curvature_matrix_from((rows, cols, vals, s))
    _assert_close(f, a.T @ w @ a)
    empty = ~np.isin(np.arange(s), cols)
    assert empty.any() and not f[empty].any() and not f[:, empty].any()


def test_apply_equals_dense(case):
    layout, values, w, _ = case
    x = np.random.default_rng(5).normal(size=(layout.n_pixels, 3))
    op = ImagingSparseOperator(values, layout)
    _assert_close(op.apply(x), w @ x)
    _assert_close(op.apply(x[:, 1]), w @ x[:, 1])
    assert op.apply(x[:, 1]).shape == (layout.n_pixels,)
    op32 = ImagingSparseOperator(values.astype(np.float32), layout)
    w32 = layout.to_dense(values.astype(np.float32).astype(np.float64))
    _assert_close(op32.apply(x), w32 @ x)


def test_no_full_matrix_is_built(case, monkeypatch):
    layout, values, w, pwd = case

    def refuse(*_args, **_kwargs):
        raise AssertionError("a consumer built the full scipy W")

    monkeypatch.setattr(OperatorLayout, "to_scipy_sparse", refuse)
    op = ImagingSparseOperator(values, layout, pwd)
    n = layout.n_pixels
    _, _, a = _mapping(n, 7, 2, seed=1)
    _assert_close(op.curvature_matrix_from(a), a.T @ w @ a)
    _assert_close(op.apply(a[:, 0]), w @ a[:, 0])
    _assert_close(op.data_vector_from(a), a.T @ pwd)


def test_peak_memory_is_the_result_and_the_mapping():
    mask = np.zeros((60, 60), dtype=bool)
    kernel = np.random.default_rng(0).uniform(size=(7, 7))
    inputs = OperatorInputs.from_noise_map(np.ones(mask.shape), mask, kernel)
    n = inputs.layout.n_pixels
    op = ImagingSparseOperator(compute_rows(inputs, 0, n, "numpy"), inputs.layout)
    s, k = 400, 3
    index, weights, _ = _mapping(n, s, k, seed=2)
    mapping = MapperLayout(index, weights, np.full(n, k), s)
    op.curvature_matrix_from(mapping)  # compilation and the band geometry outside the measurement
    tracemalloc.start()
    op.curvature_matrix_from(mapping)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # the (S, S) result, A in CSR + CSC (two int32 index and two float64 weight copies), small
    # per-row arrays; nothing of the size of W (n * n_offsets * 8 = 3.4 MB here)
    assert peak < s * s * 8 + 3 * n * k * 24 + 8 * n * 8, peak


def test_a_mapper_hands_over_pixels_or_params(case):
    layout, values, w, _ = case
    n = layout.n_pixels
    index, weights, dense = _mapping(n, 6, 2, seed=9)
    unique = SimpleNamespace(
        data_to_pix_unique=index, data_weights=weights, pix_lengths=np.full(n, 2)
    )
    op = ImagingSparseOperator(values, layout)
    for mapper in (SimpleNamespace(unique_mappings=unique, params=6),):
        _assert_close(op.curvature_matrix_from(mapper), dense.T @ w @ dense)


def _errors(n: int) -> dict:
    index = np.zeros((n, 2), dtype=np.int64)
    weights = np.ones((n, 2))
    return {
        "dense_rows": (np.ones((n + 1, 3)), "rows"),
        "dense_1d": (np.ones(n), "rows"),
        "sparse_rows": (sp.csr_matrix((n - 1, 3)), "rows"),
        "triplet_length": ((np.arange(3), np.arange(3)), "COO mapping"),
        "triplet_shapes": ((np.arange(3), np.arange(2), np.ones(3)), "one length"),
        "triplet_row_range": ((np.array([0, n]), np.array([0, 1]), np.ones(2)), "slim indexes"),
        "triplet_col_range": ((np.array([0, 1]), np.array([0, 5]), np.ones(2), 5), "source pixel"),
        "triplet_fraction": ((np.array([0.5]), np.array([0]), np.ones(1)), "whole numbers"),
        "layout_rows": (MapperLayout(index[1:], weights[1:], np.full(n - 1, 2), 3), "image pixels"),
        "layout_index_range": (MapperLayout(index + 3, weights, np.full(n, 2), 3), r"\[0, 3\)"),
        "layout_padding_used": (MapperLayout(index - 1, weights, np.full(n, 1), 3), r"\[0, 3\)"),
        "complex": (np.ones((n, 2), dtype=complex), "real"),
    }


@pytest.mark.parametrize("name", sorted(_errors(5)))
def test_wrong_mappings_are_refused(case, name):
    layout, values, _, pwd = case
    op = ImagingSparseOperator(values, layout, pwd)
    mapping, message = _errors(layout.n_pixels)[name]
    with pytest.raises(OperatorError, match=message):
        op.curvature_matrix_from(mapping)
    with pytest.raises(OperatorError, match=message):
        op.data_vector_from(mapping)


def test_wrong_layouts_and_vectors_are_refused(case):
    layout, values, _, _ = case
    n = layout.n_pixels
    with pytest.raises(OperatorError, match="one shape"):
        MapperLayout(np.zeros((n, 2)), np.zeros((n, 3)), np.zeros(n), 4)
    with pytest.raises(OperatorError, match=r"lie in \[0, 2\]"):
        MapperLayout(np.zeros((n, 2)), np.zeros((n, 2)), np.full(n, 3), 4)
    with pytest.raises(OperatorError, match="n_source"):
        MapperLayout(np.zeros((n, 2)), np.zeros((n, 2)), np.full(n, 1), -1)
    op = ImagingSparseOperator(values, layout)
    for x in (np.ones(n + 1), np.ones((n, 2, 2)), np.ones((2, n))):
        with pytest.raises(OperatorError, match="apply"):
            op.apply(x)
    with pytest.raises(OperatorError, match="rows"):
        op.curvature_matrix_from(sparse_mapping_from(np.ones((n + 1, 2)), n + 1))


def _blocks_mapping(mask: np.ndarray, block: int, seed: int) -> tuple[np.ndarray, int]:
    """Each unmasked pixel mapped to its ``block x block`` source cell and the three cells right,
    below and diagonal of it (bilinear-like, weights from ``seed``): a spatially coherent A, so
    that G = A^T U A is sparse, as for a real mesh."""
    ny, nx = mask.shape
    rows, cols = np.nonzero(~mask)
    cells_x = -(-nx // block) + 1
    n_source = (-(-ny // block) + 1) * cells_x
    cell = (rows // block) * cells_x + cols // block
    index = np.stack([cell, cell + 1, cell + cells_x, cell + cells_x + 1], axis=1)
    weights = np.random.default_rng(seed).uniform(-0.2, 1.0, size=index.shape)
    dense = np.zeros((rows.size, n_source))
    np.put_along_axis(dense, index, weights, axis=1)
    return dense, n_source


@pytest.mark.parametrize("structure", ["coherent", "random"])
def test_coherent_and_random_mappings_give_the_dense_curvature_matrix(structure):
    """F of a spatially coherent mapping (few nonzeros, source pixels with neighbours, as a real
    mesh: what the Morton-ranked row accumulation is for) and of a random one, both exact."""
    yy, xx = np.mgrid[:48, :45] - np.array([23.5, 22.0])[:, None, None]
    mask = (yy**2 + xx**2 > 21**2) | ((np.abs(yy) < 2) & (xx > 8))  # a disc with a slit
    kernel = np.random.default_rng(6).uniform(-0.2, 1.0, size=(3, 5))
    noise = np.where(mask, 1.0, np.random.default_rng(7).uniform(0.5, 2.0, mask.shape))
    inputs = OperatorInputs.from_noise_map(noise, mask, kernel)
    n = inputs.layout.n_pixels
    op = ImagingSparseOperator(compute_rows(inputs, 0, n, "numpy"), inputs.layout)
    w = sparse_operator_dense(mask, kernel, noise)
    if structure == "coherent":
        dense, s = _blocks_mapping(mask, 2, seed=8)
    else:
        s = 60
        dense = _mapping(n, s, 4, seed=9)[2]
    f = op.curvature_matrix_from(sp.csr_matrix(dense))
    density = np.count_nonzero(f) / f.size
    assert density < 0.1 if structure == "coherent" else density > 0.5, density  # two regimes
    assert np.array_equal(f, f.T)
    _assert_close(f, dense.T @ w @ dense)
