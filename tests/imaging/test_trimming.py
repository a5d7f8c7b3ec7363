"""PSF trimming: the central odd box, and the smallest box holding a fraction of sum |K|, checked
against a brute-force search over every odd box."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.exc import KernelError
from pipeline.imaging.trimming import operator_offsets, trim_shape_for_fraction, trimmed_kernel
from pipeline.operators import OperatorLayout


def _brute_force(kernel: np.ndarray, fraction: float) -> tuple[int, int]:
    weight = np.abs(kernel)
    cy, cx = kernel.shape[0] // 2, kernel.shape[1] // 2
    needed = fraction * weight.sum() * (1 - 1e-12)
    boxes = []
    for hy in range(cy + 1):
        for hx in range(cx + 1):
            if weight[cy - hy : cy + hy + 1, cx - hx : cx + hx + 1].sum() >= needed:
                ky, kx = 2 * hy + 1, 2 * hx + 1
                boxes.append((ky * kx, abs(ky - kx), ky, kx))
    area, _, ky, kx = min(boxes)
    return ky, kx


def _moffat(shape, centre_offset=(0.0, 0.0), beta=2.5, alpha=2.0, lobe=0.0, seed=0):
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    yy -= shape[0] // 2 + centre_offset[0]
    xx -= shape[1] // 2 + centre_offset[1]
    r2 = yy**2 + xx**2
    kernel = (1 + r2 / alpha**2) ** -beta
    kernel -= lobe * np.exp(-((np.sqrt(r2) - 4.0) ** 2))  # a negative ring
    return kernel + np.random.default_rng(seed).normal(0, 1e-6, shape)


@pytest.mark.parametrize("shape", [(49, 49), (31, 21), (9, 25), (1, 7)])
@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99, 0.999, 1.0])
def test_the_smallest_box_is_the_brute_force_one(shape, fraction):
    for seed, lobe in ((0, 0.0), (1, 0.05)):
        kernel = _moffat(shape, (0.3, -0.4), lobe=lobe, seed=seed)
        assert trim_shape_for_fraction(kernel, fraction) == _brute_force(kernel, fraction)


def test_a_fraction_of_one_keeps_every_nonzero_pixel():
    kernel = np.zeros((15, 11))
    kernel[7, 5] = 1.0
    kernel[9, 5] = -0.1  # two rows below the centre: the box must reach it
    assert trim_shape_for_fraction(kernel, 1.0) == (5, 1)
    assert trim_shape_for_fraction(np.ones((5, 3)), 1.0) == (5, 3)


def test_trimmed_kernel_is_the_central_window():
    kernel = np.arange(9 * 7, dtype=float).reshape(9, 7)
    np.testing.assert_array_equal(trimmed_kernel(kernel, (3, 5)), kernel[3:6, 1:6])
    np.testing.assert_array_equal(trimmed_kernel(kernel, (21, 1)), kernel[:, 3:4])
    same = trimmed_kernel(kernel, (9, 7))
    np.testing.assert_array_equal(same, kernel)
    same[0, 0] = -1.0
    assert kernel[0, 0] == 0.0  # a copy


@pytest.mark.parametrize(
    ("kernel", "shape"),
    [
        (np.ones((4, 5)), (3, 3)),  # even kernel
        (np.full((5, 5), np.nan), (3, 3)),
        (np.ones((5, 5)), (2, 3)),  # even box
        (np.ones((5, 5)), (0, 3)),
        (np.ones((5, 5, 1)), (3, 3)),
    ],
)
def test_bad_kernels_and_shapes_are_refused(kernel, shape):
    with pytest.raises(KernelError):
        trimmed_kernel(kernel, shape)


@pytest.mark.parametrize(
    ("kernel", "fraction"),
    [
        (np.ones((4, 5)), 0.9),
        (np.full((5, 5), np.inf), 0.9),
        (np.ones((5, 5)), 0.0),
        (np.ones((5, 5)), 1.5),
        (np.zeros((5, 5)), 0.9),
    ],
)
def test_bad_kernels_and_fractions_are_refused(kernel, fraction):
    with pytest.raises(KernelError):
        trim_shape_for_fraction(kernel, fraction)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (21, 21), (49, 49)])
def test_operator_offsets_are_the_layouts(shape):
    layout = OperatorLayout(np.zeros((60, 60), dtype=bool), shape)
    assert operator_offsets(shape) == layout.n_offsets
