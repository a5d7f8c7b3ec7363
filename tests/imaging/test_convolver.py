"""Tests of ``pipeline.imaging.convolver`` against independent brute force and the reference cases.

Brute force is an explicit loop over pixels, ``out[k] = sum_i in[i] K[k - i + c]`` (true
convolution), cross-checked with ``scipy.signal.convolve2d(frame, K, mode="same")``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import scipy.sparse as sp

from pipeline.exc import KernelError
from pipeline.imaging.arrays import Array2D
from pipeline.imaging.convolution import convolution_matrix_from
from pipeline.imaging.convolver import Convolver
from pipeline.imaging.mask import Mask2D

DATA = Path(__file__).resolve().parents[1] / "data"
CASES = ["c01_square_gauss3_circular", "c02_nonsquare_aniso_ellip11_annular"]
SCALES = (0.1, 0.2)  # anisotropic on purpose: convolution is in pixels, not arcsec
METHODS = ["direct", "fft", "auto"]


# ---------------------------------------------------------------------- helpers
def brute_convolve(frame: np.ndarray, kernel: np.ndarray, targets) -> np.ndarray:
    """``out[k] = sum_i frame[i] K[k - i + c]`` with explicit loops, at the target pixels."""
    ky, kx = kernel.shape
    cy, cx = ky // 2, kx // 2
    out = []
    for r, c in targets:
        total = 0.0
        for i in range(frame.shape[0]):
            for j in range(frame.shape[1]):
                a, b = r - i + cy, c - j + cx
                if 0 <= a < ky and 0 <= b < kx:
                    total += frame[i, j] * kernel[a, b]
        out.append(total)
    return np.array(out)


def embed(mask: np.ndarray, values, shape, blurring_mask=None, blurring_values=None):
    """Native frame of ``shape`` holding ``values`` at the unmasked pixels of ``mask`` (placed as
    the reference pads: ``dy // 2`` rows on top) and the blurring values; returns the frame and the
    target (row, col) list of the unmasked pixels in that frame."""
    dy, dx = shape[0] - mask.shape[0], shape[1] - mask.shape[1]
    pad = ((dy // 2, dy - dy // 2), (dx // 2, dx - dx // 2))
    padded = np.pad(np.asarray(mask), pad, constant_values=True)
    frame = np.zeros(shape)
    frame[~padded] = values
    if blurring_mask is not None:
        frame[~np.asarray(blurring_mask)] = blurring_values
    return frame, list(zip(*np.nonzero(~padded), strict=True))


def assert_close(actual, expected, rtol=1e-12):
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-14 * scale)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def kernel_5x3(rng):
    k = rng.normal(size=(5, 3))  # asymmetric, non-square, with negative pixels
    k[0, 2] = -0.7
    return k


@pytest.fixture
def mask_inner():
    """9x13 irregular mask at least (2, 1) pixels from the edge (no padding for a 5x3 kernel)."""
    m = np.ones((9, 13), dtype=bool)
    m[3:6, 4:9] = False
    m[4, 6] = True  # a hole
    m[2, 2] = m[6, 11] = m[5, 1] = False  # isolated pixels
    return Mask2D(m, SCALES)


@pytest.fixture
def mask_edge():
    """9x13 mask reaching the top row and the right column: its blurring frame is padded."""
    m = np.ones((9, 13), dtype=bool)
    m[0:4, 7:13] = False
    m[2, 9] = True
    m[7, 3] = False
    return Mask2D(m, SCALES)


def load_case(name: str) -> dict:
    with np.load(DATA / name / "expected.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


# ---------------------------------------------------------------------- convolved_image_from
@pytest.mark.parametrize("method", METHODS)
def test_image_with_blurring_matches_brute_force(method, rng, kernel_5x3, mask_inner):
    bmask = mask_inner.blurring_mask_from(kernel_5x3.shape)
    assert bmask.shape == mask_inner.shape
    img = rng.normal(size=mask_inner.pixels_in_mask)
    blur = rng.normal(size=bmask.pixels_in_mask)
    frame, targets = embed(mask_inner, img, bmask.shape, bmask, blur)

    out = Convolver(kernel_5x3).convolved_image_from(
        Array2D(img, mask_inner), Array2D(blur, bmask), method=method
    )

    assert out.mask is mask_inner
    expected = brute_convolve(frame, kernel_5x3, targets)
    assert_close(out.slim, expected)
    assert_close(out.slim, scipy.signal.convolve2d(frame, kernel_5x3, mode="same")[~mask_inner])


@pytest.mark.parametrize("method", METHODS)
def test_image_without_blurring_has_no_outside_light(method, rng, kernel_5x3, mask_inner):
    img = rng.normal(size=mask_inner.pixels_in_mask)
    frame, targets = embed(mask_inner, img, mask_inner.shape)
    out = Convolver(kernel_5x3).convolved_image_from(Array2D(img, mask_inner), method=method)
    assert_close(out.slim, brute_convolve(frame, kernel_5x3, targets))


@pytest.mark.parametrize("method", METHODS)
def test_delta_image_returns_the_kernel_unflipped(method, kernel_5x3):
    m = np.ones((9, 13), dtype=bool)
    m[2:7, 4:9] = False
    mask = Mask2D(m, SCALES)
    native = np.zeros((9, 13))
    native[4, 6] = 1.0
    out = Convolver(kernel_5x3).convolved_image_from(Array2D(native, mask), method=method).native
    # a unit at p lands at p + (a - cy, b - cx) with weight K[a, b] (true convolution)
    np.testing.assert_allclose(out[2:7, 5:8], kernel_5x3, rtol=0, atol=1e-15)
    out[2:7, 5:8] = 0.0
    np.testing.assert_allclose(out, 0.0, rtol=0, atol=1e-15)


def test_blurring_region_holds_all_the_light_that_reaches_the_mask(rng, kernel_5x3, mask_inner):
    full = rng.normal(size=mask_inner.shape)  # light everywhere, also beyond the blurring region
    bmask = mask_inner.blurring_mask_from(kernel_5x3.shape)
    conv = Convolver(kernel_5x3)
    out = conv.convolved_image_from(Array2D(full, mask_inner), Array2D(full, bmask))
    everywhere = scipy.signal.convolve2d(full, kernel_5x3, mode="same")
    assert_close(out.slim, everywhere[~np.asarray(mask_inner)])


@pytest.mark.parametrize("method", METHODS)
def test_edge_mask_uses_the_padded_blurring_frame(method, rng, kernel_5x3, mask_edge):
    with pytest.warns(UserWarning, match="padded"):
        bmask = mask_edge.blurring_mask_from(kernel_5x3.shape)
    assert bmask.shape == (13, 15)  # 2 rows / 1 column each side, parity preserved
    img = rng.normal(size=mask_edge.pixels_in_mask)
    blur = rng.normal(size=bmask.pixels_in_mask)
    frame, targets = embed(mask_edge, img, bmask.shape, bmask, blur)
    conv = Convolver(kernel_5x3)

    out = conv.convolved_image_from(Array2D(img, mask_edge), Array2D(blur, bmask), method=method)

    assert out.mask is mask_edge
    assert_close(out.slim, brute_convolve(frame, kernel_5x3, targets))
    # blurring values as plain slim arrays: the padded blurring mask is derived, without warning
    plain = conv.convolved_image_from(img, blur, mask=mask_edge, method=method)
    assert_close(plain.slim, out.slim, rtol=1e-14)
    # without blurring, light from off the array is simply absent
    frame0, targets0 = embed(mask_edge, img, mask_edge.shape)
    no_blur = conv.convolved_image_from(Array2D(img, mask_edge), method=method)
    assert_close(no_blur.slim, brute_convolve(frame0, kernel_5x3, targets0))


def test_kernel_larger_than_the_mask(rng):
    kernel = rng.normal(size=(7, 9))
    m = np.ones((11, 11), dtype=bool)
    m[5, 5] = m[5, 6] = False
    mask = Mask2D(m, 0.1)
    bmask = mask.blurring_mask_from(kernel.shape)
    img, blur = rng.normal(size=2), rng.normal(size=bmask.pixels_in_mask)
    frame, targets = embed(mask, img, bmask.shape, bmask, blur)
    for method in METHODS:
        out = Convolver(kernel).convolved_image_from(
            Array2D(img, mask), Array2D(blur, bmask), method=method
        )
        assert_close(out.slim, brute_convolve(frame, kernel, targets))


# ---------------------------------------------------------------------- mapping matrix
@pytest.mark.parametrize("edge", [False, True])
def test_mapping_matrix_paths_agree_with_brute_force(edge, rng, kernel_5x3, mask_inner, mask_edge):
    mask = mask_edge if edge else mask_inner
    if edge:
        with pytest.warns(UserWarning):
            bmask = mask.blurring_mask_from(kernel_5x3.shape)
    else:
        bmask = mask.blurring_mask_from(kernel_5x3.shape)
    n_src = 7
    a = rng.normal(size=(mask.pixels_in_mask, n_src))
    a_blur = rng.normal(size=(bmask.pixels_in_mask, n_src))
    conv = Convolver(kernel_5x3)

    expected = np.empty_like(a)
    expected_no_blur = np.empty_like(a)
    for j in range(n_src):
        frame, targets = embed(mask, a[:, j], bmask.shape, bmask, a_blur[:, j])
        expected[:, j] = brute_convolve(frame, kernel_5x3, targets)
        frame0, targets0 = embed(mask, a[:, j], mask.shape)
        expected_no_blur[:, j] = brute_convolve(frame0, kernel_5x3, targets0)

    results = {}
    for method in METHODS:
        results[method] = conv.convolved_mapping_matrix_from(a, mask, a_blur, method=method)
        assert_close(results[method], expected)
        no_blur = conv.convolved_mapping_matrix_from(a, mask, method=method)
        assert_close(no_blur, expected_no_blur)
        sparse = conv.convolved_mapping_matrix_from(
            sp.csr_matrix(a), mask, sp.csr_array(a_blur), blurring_mask=bmask, method=method
        )
        assert isinstance(sparse, np.ndarray)
        assert_close(sparse, expected)
    assert_close(results["direct"], results["fft"], rtol=1e-13)


def test_mapping_matrix_columns_equal_convolved_images(rng, kernel_5x3, mask_inner):
    conv = Convolver(kernel_5x3)
    bmask = mask_inner.blurring_mask_from(kernel_5x3.shape)
    a = sp.random(mask_inner.pixels_in_mask, 5, density=0.3, random_state=3, format="csr")
    a_blur = sp.random(bmask.pixels_in_mask, 5, density=0.3, random_state=4, format="csr")
    blurred = conv.convolved_mapping_matrix_from(a, mask_inner, a_blur)
    for j in range(5):
        col = conv.convolved_image_from(
            Array2D(a[:, [j]].toarray()[:, 0], mask_inner),
            Array2D(a_blur[:, [j]].toarray()[:, 0], bmask),
        )
        assert_close(blurred[:, j], col.slim)


def test_operator_cache_follows_the_mask(rng, kernel_5x3, mask_inner, mask_edge):
    conv = Convolver(kernel_5x3)
    for mask in (mask_inner, mask_edge, mask_inner):
        a = rng.normal(size=(mask.pixels_in_mask, 2))
        columns = []
        for j in range(2):
            frame, targets = embed(mask, a[:, j], mask.shape)
            columns.append(brute_convolve(frame, kernel_5x3, targets))
        expected = np.column_stack(columns)
        assert_close(conv.convolved_mapping_matrix_from(a, mask, method="direct"), expected)
    clone = pickle.loads(pickle.dumps(conv))
    assert clone._matrix_cache is None
    np.testing.assert_array_equal(clone.kernel.native, conv.kernel.native)


@pytest.mark.parametrize("with_blurring", [False, True])
def test_convolution_matrix_matches_its_definition(with_blurring, kernel_5x3, mask_edge):
    with pytest.warns(UserWarning):
        bmask = mask_edge.blurring_mask_from(kernel_5x3.shape)
    frame_shape = bmask.shape if with_blurring else mask_edge.shape
    _, targets = embed(mask_edge, np.zeros(mask_edge.pixels_in_mask), frame_shape)
    sources = list(targets)
    if with_blurring:
        sources += list(zip(*np.nonzero(~np.asarray(bmask)), strict=True))
    b = convolution_matrix_from(kernel_5x3, mask_edge, bmask if with_blurring else None)

    assert isinstance(b, sp.csr_matrix)
    assert b.shape == (len(targets), len(sources))
    expected = np.zeros(b.shape)
    cy, cx = 2, 1
    for k, (r, c) in enumerate(targets):
        for i, (ri, ci) in enumerate(sources):
            a, bb = r - ri + cy, c - ci + cx
            if 0 <= a < 5 and 0 <= bb < 3:
                expected[k, i] = kernel_5x3[a, bb]
    np.testing.assert_array_equal(b.toarray(), expected)


# ---------------------------------------------------------------------- kernel construction
def test_normalized_is_a_new_object_and_inputs_are_never_mutated(kernel_5x3):
    original = kernel_5x3.copy()
    conv = Convolver(kernel_5x3, pixel_scales=SCALES)
    norm = conv.normalized
    assert norm is not conv
    np.testing.assert_array_equal(conv.kernel.native, original)
    assert norm.kernel.native.sum() == pytest.approx(1.0, abs=1e-14)
    np.testing.assert_allclose(norm.kernel.native, original / original.sum(), rtol=1e-15)
    assert norm.pixel_scales == conv.pixel_scales == SCALES

    array_kernel = Array2D.no_mask(kernel_5x3, SCALES)
    Convolver(array_kernel, normalize=True)
    Convolver(kernel_5x3, normalize=True)
    np.testing.assert_array_equal(kernel_5x3, original)
    np.testing.assert_array_equal(array_kernel.native, original)

    kernel_5x3[0, 0] = 99.0  # later edits of the caller's array do not reach the Convolver
    assert conv.kernel.native[0, 0] == original[0, 0]
    conv.kernel.native[0, 0] = 42.0  # .native is a fresh array
    assert conv.kernel.native[0, 0] == original[0, 0]


def test_kernel_attributes(kernel_5x3):
    conv = Convolver(Array2D.no_mask(kernel_5x3, 0.05))
    assert isinstance(conv.kernel, Array2D)
    assert conv.shape_native == conv.kernel_shape_image_resolution == (5, 3)
    assert conv.pixel_scales == (0.05, 0.05)
    assert conv.convolve_over_sample_size == 1
    assert Convolver(kernel_5x3).pixel_scales == (1.0, 1.0)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (np.ones((4, 5)), r"shape \(4, 5\) must be odd in both axes"),
        (np.ones((3, 4)), "odd"),
        (np.ones(3), "2-D"),
        (np.array([[1.0, np.nan, 0.0]]), "NaN/inf"),
        (np.array([[1.0, np.inf, 0.0]]), "NaN/inf"),
        (np.zeros((3, 3)), "all zeros"),
    ],
)
def test_invalid_kernels_raise(values, match):
    with pytest.raises(KernelError, match=match):
        Convolver(values)


def test_invalid_options_raise(kernel_5x3, mask_inner):
    with pytest.raises(KernelError, match="sum to zero"):
        Convolver(np.array([[1.0, -1.0, 0.0]]), normalize=True)
    with pytest.raises(KernelError, match="sum to zero"):
        _ = Convolver(np.array([[1.0, -1.0, 0.0]])).normalized
    with pytest.raises(KernelError, match="convolve_over_sample_size"):
        Convolver(kernel_5x3, convolve_over_sample_size=2)
    with pytest.raises(KernelError, match="disagree"):
        Convolver(Array2D.no_mask(kernel_5x3, 0.1), pixel_scales=0.2)
    with pytest.raises(KernelError, match="unmasked"):
        Convolver(Array2D(np.ones((3, 3)), Mask2D(np.eye(3), 0.1)))
    img = Array2D(np.ones(mask_inner.pixels_in_mask), mask_inner)
    with pytest.raises(KernelError, match="method"):
        Convolver(kernel_5x3).convolved_image_from(img, method="spectral")
    with pytest.raises(ValueError, match="rows"):
        Convolver(kernel_5x3).convolved_mapping_matrix_from(np.ones((3, 2)), mask_inner)


def test_no_blur_is_the_identity(rng, mask_edge):
    conv = Convolver.no_blur(pixel_scales=0.2)
    np.testing.assert_array_equal(conv.kernel.native, [[0, 0, 0], [0, 1, 0], [0, 0, 0]])
    assert conv.pixel_scales == (0.2, 0.2)
    img = rng.normal(size=mask_edge.pixels_in_mask)
    for method in METHODS:
        out = conv.convolved_image_from(Array2D(img, mask_edge), method=method)
        np.testing.assert_allclose(out.slim, img, rtol=0, atol=1e-15)
    a = rng.normal(size=(mask_edge.pixels_in_mask, 3))
    blurred = conv.convolved_mapping_matrix_from(a, mask_edge, method="direct")
    np.testing.assert_array_equal(blurred, a)


def _gaussian_reference_form(row, col, shape, scales, sigma, centre, q, angle):
    """The reference's evaluation: polar angle via arctan2, rotated, elliptical radius."""
    y = ((shape[0] - 1) / 2 - row) * scales[0] - centre[0]
    x = (col - (shape[1] - 1) / 2) * scales[1] - centre[1]
    r = np.hypot(y, x)
    theta = np.arctan2(y, x) - np.radians(angle)
    yp, xp = r * np.sin(theta), r * np.cos(theta)
    r_ell = np.sqrt(xp**2 + (yp / q) ** 2)
    return np.exp(-0.5 * (r_ell / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))


def test_from_gaussian_values():
    shape, scales = (5, 7), (0.1, 0.2)
    circ = Convolver.from_gaussian(shape, scales, sigma=0.3)
    ell = Convolver.from_gaussian(
        shape, scales, sigma=0.3, centre=(0.05, -0.1), axis_ratio=0.6, angle=30.0
    )
    for row, col in [(0, 0), (2, 3), (4, 6), (1, 5), (3, 1)]:
        want_circ = _gaussian_reference_form(row, col, shape, scales, 0.3, (0, 0), 1.0, 0.0)
        want_ell = _gaussian_reference_form(row, col, shape, scales, 0.3, (0.05, -0.1), 0.6, 30.0)
        assert circ.kernel.native[row, col] == pytest.approx(want_circ, rel=1e-13)
        assert ell.kernel.native[row, col] == pytest.approx(want_ell, rel=1e-13)
    assert circ.kernel.native[2, 3] == pytest.approx(1 / (0.3 * np.sqrt(2 * np.pi)), rel=1e-15)
    assert circ.pixel_scales == scales
    norm = Convolver.from_gaussian(shape, scales, sigma=0.3, axis_ratio=0.5, normalize=True)
    assert norm.kernel.native.sum() == pytest.approx(1.0, abs=1e-14)


def test_from_gaussian_angle_rotates_the_major_axis():
    k0 = Convolver.from_gaussian((9, 9), 0.1, sigma=0.2, axis_ratio=0.5, angle=0.0).kernel.native
    k90 = Convolver.from_gaussian((9, 9), 0.1, sigma=0.2, axis_ratio=0.5, angle=90.0).kernel.native
    assert k0[4, 6] > k0[2, 4]  # angle 0: elongated along x (columns)
    np.testing.assert_allclose(k90, k0.T, rtol=1e-13)
    k45 = Convolver.from_gaussian((9, 9), 0.1, sigma=0.2, axis_ratio=0.5, angle=45.0).kernel.native
    assert k45[2, 6] > k45[2, 2]  # counter-clockwise: up-right (row 2 is above the centre)


def test_from_fits_reads_the_case_psf():
    case = load_case(CASES[0])
    conv = Convolver.from_fits(DATA / CASES[0] / "psf.fits", hdu=0, pixel_scales=0.1)
    np.testing.assert_array_equal(conv.kernel.native, case["input_psf_kernel"])
    norm = Convolver.from_fits(DATA / CASES[0] / "psf.fits", pixel_scales=0.1, normalize=True)
    assert_close(norm.kernel.native, case["psf_kernel_normalised"], rtol=1e-15)


# ---------------------------------------------------------------------- reference cases
@pytest.fixture(params=CASES)
def case(request):
    c = load_case(request.param)
    scales = tuple(float(s) for s in c["pixel_scales"])
    c["mask"] = Mask2D(c["mask_native"], scales)
    c["conv"] = Convolver(Array2D.no_mask(c["input_psf_kernel"], scales), normalize=True)
    return c


def test_case_kernel_and_blurring_mask(case):
    assert_close(case["conv"].kernel.native, case["psf_kernel_normalised"], rtol=1e-15)
    bmask = case["mask"].blurring_mask_from(case["conv"].shape_native)
    np.testing.assert_array_equal(np.asarray(bmask), case["blurring_mask_native"])


@pytest.mark.parametrize("method", METHODS)
def test_case_convolved_images(case, method):
    mask = case["mask"]
    bmask = Mask2D(case["blurring_mask_native"], mask.pixel_scales)
    image = Array2D(case["lp_test_values_binned"], mask)
    out = case["conv"].convolved_image_from(
        image, Array2D(case["blurring_test_values"], bmask), method=method
    )
    assert_close(out.slim, case["convolved_test_image_slim"])
    out0 = case["conv"].convolved_image_from(image, method=method)
    assert_close(out0.slim, case["convolved_test_image_no_blurring_slim"])


@pytest.mark.parametrize("method", METHODS)
def test_case_blurred_mapping_matrix(case, method):
    shape = tuple(int(s) for s in case["A_shape"])
    a = sp.coo_matrix((case["A_vals"], (case["A_rows"], case["A_cols"])), shape=shape).tocsr()
    for mapping in (a, a.toarray()):
        blurred = case["conv"].convolved_mapping_matrix_from(mapping, case["mask"], method=method)
        assert_close(blurred, case["blurred_A"])
