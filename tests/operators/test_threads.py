"""``n_threads``: the batches of one dataset shared by threads, BLAS single-threaded inside and
restored afterwards, the same bits whatever the count, bad counts refused by name."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from pipeline import Array2D, Convolver, Imaging, Mask2D
from pipeline.exc import OperatorError
from pipeline.operators import OperatorInputs, compute_values
from pipeline.operators import rows as rows_module
from pipeline.operators.reference import sparse_operator_dense
from pipeline.operators.rows import threads_from


def _inputs(kernel_shape: tuple[int, int], radius: float = 9.0, seed: int = 0) -> OperatorInputs:
    rng = np.random.default_rng(seed)
    mask = np.asarray(Mask2D.circular(shape_native=(30, 30), pixel_scales=1.0, radius=radius))
    noise = rng.uniform(0.5, 2.0, size=mask.shape)
    kernel = rng.uniform(-0.1, 1.0, size=kernel_shape)
    return OperatorInputs.from_noise_map(noise, mask, kernel)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("kernel_shape", [(5, 5), (19, 19)])  # the band products and the DFT
def test_rows_are_the_same_bits_on_any_number_of_threads(backend, kernel_shape):
    inputs = _inputs(kernel_shape)
    n = inputs.layout.n_pixels
    assert n > 200
    one = compute_values(inputs, backend, batch_size=16, n_threads=1)
    for threads in (2, 3, 8):
        many = compute_values(inputs, backend, batch_size=16, n_threads=threads)
        np.testing.assert_array_equal(many, one)
    dense = sparse_operator_dense(np.asarray(inputs.layout.mask), inputs.kernel, _noise_of(inputs))
    values = compute_values(inputs, backend, batch_size=16, n_threads=2)
    np.testing.assert_allclose(
        inputs.layout.to_dense(values), dense, rtol=0, atol=1e-12 * np.abs(dense).max()
    )


def _noise_of(inputs: OperatorInputs) -> np.ndarray:
    """The noise map back from the padded inverse variances (1 where masked)."""
    ky, kx = inputs.kernel.shape
    w = inputs.padded_inverse_variance[ky // 2 : -(ky // 2) or None, kx // 2 : -(kx // 2) or None]
    noise = np.ones_like(w)
    noise[w > 0] = 1.0 / np.sqrt(w[w > 0])
    return noise


def test_the_batches_run_on_the_threads_asked_for(monkeypatch):
    """Each batch records the thread that computed it: two threads for n_threads=2, the
    caller's own for n_threads=1; BLAS runs single-threaded inside and is restored after."""
    inputs = _inputs((7, 7))
    seen: list[tuple[str, list[int]]] = []
    original = rows_module.compute_rows

    def recording(*args, **kwargs):
        blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
        seen.append((threading.current_thread().name, blas))
        return original(*args, **kwargs)

    monkeypatch.setattr(rows_module, "compute_rows", recording)
    before = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    compute_values(inputs, "numpy", batch_size=8, n_threads=2)
    names = {name for name, _ in seen}
    assert len(names) == 2 and all(name.startswith("lenspipe-rows") for name in names)
    assert all(blas and set(blas) == {1} for _, blas in seen)
    seen.clear()
    compute_values(inputs, "numpy", batch_size=8, n_threads=1)
    assert {name for name, _ in seen} == {threading.current_thread().name}
    after = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    assert after == before


def test_an_error_in_one_thread_is_raised_to_the_caller(monkeypatch):
    inputs = _inputs((5, 5))
    original = rows_module.compute_rows

    def failing(inputs, start, stop, *args, **kwargs):
        if start >= 64:
            raise OperatorError(f"rows {start}-{stop} failed")
        return original(inputs, start, stop, *args, **kwargs)

    monkeypatch.setattr(rows_module, "compute_rows", failing)
    with pytest.raises(OperatorError, match="rows 64-80 failed"):
        compute_values(inputs, "numpy", batch_size=16, n_threads=3)


def test_default_is_every_core_this_process_may_use():
    assert threads_from(None) == len(os.sched_getaffinity(0))
    assert threads_from(3) == 3 and threads_from(np.int64(2)) == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(OperatorError, match="n_threads must be a positive integer or None"):
        compute_values(_inputs((3, 3)), "numpy", n_threads=bad)


def test_the_dataset_methods_take_n_threads():
    rng = np.random.default_rng(4)
    shape, scales = (24, 24), 0.1
    ds = Imaging(
        Array2D.no_mask(rng.normal(size=shape), scales),
        Array2D.no_mask(rng.uniform(1, 2, size=shape), scales),
        Convolver(rng.uniform(size=(17, 17)), pixel_scales=scales),
    ).apply_mask(Mask2D.circular(shape_native=shape, pixel_scales=scales, radius=1.0))
    one = ds.apply_sparse_operator_cpu(n_threads=1).sparse_operator
    every = ds.apply_sparse_operator_cpu().sparse_operator
    np.testing.assert_array_equal(every.values, one.values)
    numba = ds.apply_sparse_operator(64, backend="numba", n_threads=2).sparse_operator
    np.testing.assert_allclose(numba.values, one.values, rtol=0, atol=1e-13 * abs(one.values).max())
    with pytest.raises(OperatorError, match="n_threads"):
        ds.apply_sparse_operator_cpu(n_threads=0)


@pytest.mark.parametrize("kernel_shape", [(1, 1), (3, 5), (7, 3), (9, 9)])
def test_zero_invalid_zeroes_exactly_the_invalid_offsets(kernel_shape):
    """Rows whose band window is all unmasked are skipped: the result equals zeroing
    ``~valid`` everywhere, on a mask with holes, a slit and unmasked pixels at every edge."""
    from pipeline.operators import OperatorLayout

    rng = np.random.default_rng(11)
    mask = rng.random((41, 53)) < 0.004
    mask[10, 3:20] = True
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = False
    layout = OperatorLayout(mask, kernel_shape)
    n = layout.n_pixels
    values = rng.normal(size=(n, layout.n_offsets))
    expected = values.copy()
    expected[~layout.valid(0, n)] = 0.0
    complete = layout._complete_rows[~mask]
    assert complete.any() and (kernel_shape == (1, 1) or not complete.all())  # both kinds
    for start, stop in ((0, n), (5, 97), (n - 1, n)):
        got = values[start:stop].copy()
        layout.zero_invalid(got, start, stop)
        np.testing.assert_array_equal(got, expected[start:stop])
