"""Rows of W by a DFT along x (pipeline.operators.dft_rows): equal to the direct sums for every
kernel shape (wide, tall, 1x1, negative pixels), whatever the batching, and chosen automatically
for wide kernels by the numpy backend, on both sides of the boundary."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from pipeline import Mask2D
from pipeline.exc import OperatorError
from pipeline.operators import BatchGeometry, OperatorInputs, compute_rows
from pipeline.operators.dft_rows import SUB_ROWS, dft_factors
from pipeline.operators.numpy_rows import DFT_CROSSOVER, dft_advantage, rows_method, rows_numpy
from pipeline.operators.reference import sparse_operator_dense


def inputs_for(shape_native, radius, kernel_shape, seed=0, negative=False):
    mask = np.asarray(Mask2D.circular(shape_native=shape_native, pixel_scales=1.0, radius=radius))
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0.3, 3.0, size=mask.shape)
    noise[mask] = 0.0
    low = -0.3 if negative else 0.0
    kernel = rng.uniform(low, 1.0, size=kernel_shape)
    return mask, kernel, noise, OperatorInputs.from_noise_map(noise, mask, kernel)


@pytest.mark.parametrize(
    "kernel_shape",
    [(1, 1), (1, 9), (9, 1), (3, 3), (5, 31), (31, 5), (11, 11), (7, 29)],
)
@pytest.mark.parametrize("negative", [False, True])
def test_dft_rows_equal_the_dense_matrix(kernel_shape, negative):
    mask, kernel, noise, inputs = inputs_for((17, 19), 6.5, kernel_shape, 1, negative)
    values = rows_numpy(inputs, 0, inputs.layout.n_pixels, method="dft")
    dense = sparse_operator_dense(mask, kernel, np.where(mask, 1.0, noise))
    w = inputs.layout.to_dense(values)
    scale = np.abs(dense).max()
    np.testing.assert_allclose(w, dense, rtol=0, atol=1e-13 * scale)
    # the band's offsets that leave the unmasked pixels are exactly zero, as for every method
    assert np.all(values[~inputs.layout.valid(0, inputs.layout.n_pixels)] == 0.0)
    if negative and kernel.size > 1:  # a 1x1 kernel's W is K**2 / sigma**2 >= 0
        big = np.abs(dense) > 1e-9 * scale
        assert (dense < -1e-3 * scale).any()
        assert np.array_equal(np.sign(w[big]), np.sign(dense[big]))


@pytest.mark.parametrize("batch_size", [1, 7, SUB_ROWS - 1, SUB_ROWS, SUB_ROWS + 3, 10_000])
def test_dft_rows_do_not_depend_on_the_batches(batch_size):
    """Batches (and the transforms' sub-blocks of SUB_ROWS rows) start mid image row."""
    _, _, _, inputs = inputs_for((40, 44), 17.0, (9, 29), 2)
    n = inputs.layout.n_pixels
    assert n > 2 * SUB_ROWS + 10
    band = rows_numpy(inputs, 0, n, method="band")
    parts = [rows_numpy(inputs, s, e, method="dft") for s, e in BatchGeometry(n, batch_size)]
    np.testing.assert_allclose(np.concatenate(parts), band, rtol=0, atol=1e-13 * np.abs(band).max())


def test_the_numpy_backend_takes_the_dft_from_the_crossover_on():
    assert dft_advantage((15, 15)) < DFT_CROSSOVER <= dft_advantage((17, 17))
    assert [rows_method(shape) for shape in ((15, 15), (17, 17), (9, 41), (41, 9))] == [
        "band",
        "dft",
        "band",  # wide but short: the band products' cost grows with ky**2
        "dft",
    ]
    assert rows_method((49, 49), "band") == "band" and rows_method((3, 3), "dft") == "dft"
    with pytest.raises(OperatorError, match="'auto', 'band' or 'dft'"):
        rows_method((3, 3), "fft")  # type: ignore[arg-type]
    for shape in ((15, 15), (17, 17)):  # either side of the crossover
        mask, kernel, noise, inputs = inputs_for((40, 40), 8.0, shape, 3, True)
        values = compute_rows(inputs, 0, inputs.layout.n_pixels, "numpy")
        dense = sparse_operator_dense(mask, kernel, np.where(mask, 1.0, noise))
        np.testing.assert_allclose(
            inputs.layout.to_dense(values), dense, rtol=0, atol=1e-13 * np.abs(dense).max()
        )
        # the automatic choice is the one that ran: the same bits as that method forced
        chosen = rows_method(kernel.shape)
        assert np.array_equal(values, rows_numpy(inputs, 0, inputs.layout.n_pixels, method=chosen))


def test_dft_factors_are_cached_read_only_and_exact_transforms():
    kernel = np.random.default_rng(5).normal(size=(5, 7))
    factors = dft_factors(kernel)
    assert dft_factors(kernel.copy()) is factors
    assert not factors.forward.flags.writeable and not factors.inverse.flags.writeable
    # forward then inverse of a length-7 signal padded to 13 points returns it
    signal = np.random.default_rng(6).normal(size=7)
    spectrum = factors.forward @ signal
    back = spectrum @ factors.inverse
    np.testing.assert_allclose(back[:7], signal, atol=1e-14)
    np.testing.assert_allclose(back[7:], 0.0, atol=1e-14)


def test_dft_temporary_memory_is_bounded_by_output():
    _, _, _, inputs = inputs_for((90, 90), 35.0, (41, 41), 7)
    rows_numpy(inputs, 0, 8, method="dft")  # caches outside the measurement
    start, stop = 1000, 1512
    out_bytes = (stop - start) * inputs.layout.n_offsets * 8
    tracemalloc.start()
    rows_numpy(inputs, start, stop, method="dft")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 3 * out_bytes, (peak, out_bytes)


@pytest.mark.parametrize("kernel_shape", [(15, 15), (17, 17), (41, 9), (1, 1)])
def test_the_jax_backend_takes_the_same_algorithm_and_equals_the_dense_matrix(kernel_shape):
    """JAX compiles the method the numpy backend would choose; the last batch is padded (N is
    not a multiple of the batch size) and the padded rows never reach the result."""
    from pipeline.operators.jax_rows import _compiled

    mask, kernel, noise, inputs = inputs_for((44, 40), 9.5, kernel_shape, 4, True)
    n = inputs.layout.n_pixels
    assert n % 64 != 0
    values = compute_rows(inputs, 0, n, "jax", batch_size=64)
    dense = sparse_operator_dense(mask, kernel, np.where(mask, 1.0, noise))
    np.testing.assert_allclose(
        inputs.layout.to_dense(values), dense, rtol=0, atol=1e-13 * np.abs(dense).max()
    )
    np.testing.assert_allclose(
        values, rows_numpy(inputs, 0, n), rtol=0, atol=1e-14 * np.abs(values).max()
    )
    method = rows_method(kernel_shape)
    assert _compiled.cache_info().currsize >= 1
    assert _compiled(kernel_shape, 64, method) is _compiled(kernel_shape, 64, method)
