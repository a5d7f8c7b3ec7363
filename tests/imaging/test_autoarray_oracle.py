"""The live oracle: lenspipe against PyAutoArray itself, on random datasets.

Every test is marked ``autoarray`` and runs wherever the reference library is importable
(``/work/venv312``, ``lenspipe[autoarray]``); elsewhere it skips. Each of the ``N_CASES`` seeds draws
one dataset:

* a frame of 12 to 45 pixels a side (odd or even, rarely square), pixel scales 0.05 to 0.2 arcsec
  (different in y and x), an origin;
* a mask: circular, annular, edge-touching (a circle centred near or beyond the frame edge, so
  unmasked pixels lie within ``k // 2`` of the border and the blurring mask needs padding) or
  irregular (a disc with random holes, plus stray unmasked pixels anywhere);
* an odd, non-square PSF kernel (1x5 to 9x5) with negative lobes and a sum that is not 1 (the
  datasets normalise it, as the reference does by default);
* data with negative values and a positive noise map log-normally spread (a factor ~4 either way);
* over-sampling of the light-profile and pixelization grids: 1, 2 or 4, or per-pixel sizes.

Both libraries get the same calls (``Imaging(data, noise_map, psf).apply_mask(mask)
.apply_over_sampling(...)``, then ``apply_sparse_operator()`` or ``apply_sparse_operator_cpu()``),
and the tests assert:

1. the dataset quantities are the reference's (masked data and noise, kernel as stored, grids and
   their over-sampled sub-pixels, blurring mask and grid, signal-to-noise, a PSF convolution);
2. W (dense) equals an independent brute-force ``H^T N^-1 H`` written here and the reference's dense
   numba W; the reference's sparse numba W is exactly the positive part of ours (it drops W <= 0, a
   reference bug kept out of lenspipe, DESIGN §7), and our layout restricted to positive entries is
   its layout entry for entry; ``H^T N^-1 d`` equals both reference forms;
3. ``W X`` equals the reference's JAX ``ImagingSparseOperator.apply_operator`` (matrix-free FFT W,
   float64) for random ``X`` of 1 to 5 columns;
4. ``F = A^T W A`` and ``D = A^T H^T N^-1 d`` for random sparse mappings (1-3 and ~10 source pixels
   per image pixel, S from 5 to 300) given as CSR, COO triplets, dense or :class:`MapperLayout`
   equal the reference's numba curvature (both its two-stage and direct loops, fed our W through
   ``to_autoarray_layout()``), its data-vector functions, the brute force and, on some seeds, its
   JAX curvature.

Our operator is built with the reference's call (``apply_sparse_operator()``, JAX) on a quarter of
the seeds and with the numba or numpy backend on the others. ``use_normalized_psf=False`` is compared
on the unmasked dataset only: the reference's ``apply_mask`` rebuilds the dataset with the default
``use_normalized_psf=True`` and so normalises the kernel anyway (in place, in the caller's PSF).
A separate test applies a mask whose origin differs from the data's.

Agreement is asserted to 1e-12 relative to the largest magnitude of the compared quantity (exact
for masks and integer sizes); :data:`MEASURED` keeps the largest relative difference seen per
quantity.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cache
from types import ModuleType

import numpy as np
import pytest
import scipy.sparse as sp

import pipeline as lp
from pipeline.operators.mappings import MapperLayout
from tests.helpers import import_autoarray, quietly

pytestmark = pytest.mark.autoarray

N_CASES = 50
RTOL = 1e-12
KERNEL_SHAPES = [(3, 5), (5, 3), (5, 7), (7, 5), (3, 7), (7, 3), (1, 5), (9, 5)]
MASK_KINDS = ["circular", "annular", "edge", "irregular"]

MEASURED: dict[str, float] = {}
"""Largest relative difference measured per quantity (for reports; filled as tests run)."""


# ---------------------------------------------------------------------------------- comparisons
def _assert_close(name: str, ours, theirs, rtol: float = RTOL) -> None:
    """``|ours - theirs| <= rtol * max|theirs|`` elementwise, recording the relative difference."""
    ours = np.asarray(ours, dtype=np.float64)
    theirs = np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape, f"{name}: shape {ours.shape} != reference {theirs.shape}"
    scale = float(np.max(np.abs(theirs))) if theirs.size else 0.0
    diff = float(np.max(np.abs(ours - theirs))) if theirs.size else 0.0
    relative = diff / scale if scale > 0 else diff
    MEASURED[name] = max(MEASURED.get(name, 0.0), relative)
    assert relative <= rtol, f"{name}: max |ours - reference| / max |reference| = {relative:.3e}"


def _assert_equal(name: str, ours, theirs) -> None:
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{name}: shape {ours.shape} != reference {theirs.shape}"
    np.testing.assert_array_equal(ours, theirs, err_msg=name)
    MEASURED.setdefault(name, 0.0)


def _plain(value) -> np.ndarray:
    """A reference structure (or ours) as a plain ndarray."""
    return np.asarray(getattr(value, "array", value))


# ---------------------------------------------------------------------------------- random cases
@dataclass(frozen=True)
class Case:
    """One random dataset, in plain numpy (nothing here depends on either library)."""

    seed: int
    shape: tuple[int, int]
    pixel_scales: tuple[float, float]
    origin: tuple[float, float]
    mask_kind: str
    mask_call: tuple  # (factory name, positional args) or ("array", bool array)
    kernel: np.ndarray
    data: np.ndarray
    noise: np.ndarray
    over_sample_lp: object  # int, or ("slim" | "native", int array)
    over_sample_pixelization: object
    backend: str


def _kernel(rng: np.random.Generator) -> np.ndarray:
    shape = KERNEL_SHAPES[int(rng.integers(len(KERNEL_SHAPES)))]
    kernel = rng.normal(0.0, 0.15, size=shape)
    centre = (shape[0] // 2, shape[1] // 2)
    kernel[centre] = 0.0
    kernel[0, 0] = -abs(kernel[0, 0]) - 0.05  # a negative lobe, whatever the draw
    # a positive core that keeps the sum well away from 0, and a sum that is not 1
    kernel[centre] = 1.0 + 2.0 * abs(kernel.sum())
    return kernel * float(rng.uniform(0.3, 30.0))


def _touches_edge(mask: np.ndarray, kernel_shape: tuple[int, int]) -> bool:
    rows, cols = np.nonzero(~mask)
    ky, kx = kernel_shape
    ny, nx = mask.shape
    return bool(
        rows.min() < ky // 2
        or rows.max() > ny - 1 - ky // 2
        or cols.min() < kx // 2
        or cols.max() > nx - 1 - kx // 2
    )


def _draw_mask(rng, kind, shape, scales, origin, kernel_shape):
    """A mask recipe of ``kind`` with at least 12 unmasked pixels (redrawn until it has)."""
    half_y, half_x = shape[0] * scales[0] / 2, shape[1] * scales[1] / 2
    extent = min(half_y, half_x)
    for _ in range(100):
        if kind == "circular":
            centre = tuple(float(c) for c in rng.uniform(-0.2, 0.2, size=2) * extent)
            call = (
                "circular",
                (shape, float(rng.uniform(0.4, 0.95)) * extent, scales, origin, centre),
            )
        elif kind == "annular":
            centre = tuple(float(c) for c in rng.uniform(-0.15, 0.15, size=2) * extent)
            inner = float(rng.uniform(0.1, 0.35)) * extent
            outer = float(rng.uniform(0.55, 1.0)) * extent
            call = ("circular_annular", (shape, inner, outer, scales, origin, centre))
        elif kind == "edge":
            # centre near or beyond a frame edge: the unmasked region runs into the border
            sign = rng.choice([-1.0, 1.0], size=2)
            centre = (
                float(sign[0] * rng.uniform(0.6, 1.3) * half_y),
                float(sign[1] * rng.uniform(0.0, 1.3) * half_x),
            )
            call = (
                "circular",
                (shape, float(rng.uniform(0.5, 1.1)) * extent, scales, origin, centre),
            )
        else:
            y = ((shape[0] - 1) / 2 - np.arange(shape[0]))[:, None] * scales[0]
            x = (np.arange(shape[1]) - (shape[1] - 1) / 2)[None, :] * scales[1]
            radius = float(rng.uniform(0.5, 1.5)) * extent
            unmasked = y**2 + x**2 < radius**2
            unmasked &= rng.uniform(size=shape) > rng.uniform(0.05, 0.35)  # holes
            unmasked |= rng.uniform(size=shape) < 0.03  # stray pixels, anywhere
            call = ("array", ~unmasked)
        mask = call[1] if call[0] == "array" else np.asarray(getattr(lp.Mask2D, call[0])(*call[1]))
        if (~mask).sum() >= 12 and (kind != "edge" or _touches_edge(mask, kernel_shape)):
            return call
    raise AssertionError(f"could not draw a {kind} mask for {shape}")


def _over_sample(rng):
    choice = int(rng.integers(5))
    if choice < 3:
        return (1, 2, 4)[choice]
    return ("slim", "native")[choice - 3]


@cache
def _case(seed: int) -> Case:
    rng = np.random.default_rng(20261201 + seed)
    shape = (int(rng.integers(12, 46)), int(rng.integers(12, 46)))
    scales = (float(rng.uniform(0.05, 0.2)), float(rng.uniform(0.05, 0.2)))
    origin = (0.0, 0.0) if seed % 3 == 0 else tuple(float(o) for o in rng.uniform(-1, 1, size=2))
    kernel = _kernel(rng)
    kind = MASK_KINDS[seed % len(MASK_KINDS)]
    mask_call = _draw_mask(rng, kind, shape, scales, origin, kernel.shape)
    noise = float(10 ** rng.uniform(-2, 1)) * np.exp(rng.normal(0.0, 0.7, size=shape))
    data = rng.normal(0.3, 1.0, size=shape) * noise * float(rng.uniform(1, 20))
    sizes = []
    for _ in range(2):
        kind_of_size = _over_sample(rng)
        if isinstance(kind_of_size, str):
            kind_of_size = (kind_of_size, rng.integers(1, 5, size=shape))
        sizes.append(kind_of_size)
    backend = ("jax", "numba", "numpy", "numba")[seed % 4]
    return Case(seed, shape, scales, origin, kind, mask_call, kernel, data, noise, *sizes, backend)


# ---------------------------------------------------------------------------------- both libraries
def _aa() -> ModuleType:
    aa = import_autoarray()
    import jax

    # the reference computes in float64 only if x64 is on when its arrays are made; importing
    # jax before autoarray leaves it off (PITFALLS), so say it explicitly, as a user would
    jax.config.update("jax_enable_x64", True)
    return aa


def _module_mask(module, case: Case):
    name, args = case.mask_call
    if name == "array":
        return module.Mask2D(args.copy(), case.pixel_scales, case.origin)
    return getattr(module.Mask2D, name)(*args)


def _size_for(module, size, mask):
    if isinstance(size, int):
        return size
    form, values = size
    if form == "slim":
        return module.Array2D(values[~np.asarray(mask)].copy(), mask)
    return module.Array2D(np.where(np.asarray(mask), 0, values), mask)


def _unmasked(module, case: Case, use_normalized_psf: bool = True):
    scales, origin = case.pixel_scales, case.origin
    return module.Imaging(
        module.Array2D.no_mask(case.data.copy(), scales, origin=origin),
        module.Array2D.no_mask(case.noise.copy(), scales, origin=origin),
        module.Convolver(kernel=module.Array2D.no_mask(case.kernel.copy(), scales)),
        use_normalized_psf=use_normalized_psf,
    )


def _datasets(module, case: Case):
    """(unmasked, masked and over-sampled) datasets built by ``module`` with the same calls."""
    unmasked = _unmasked(module, case)
    mask = _module_mask(module, case)
    masked = unmasked.apply_mask(mask)
    sampled = masked.apply_over_sampling(
        _size_for(module, case.over_sample_lp, mask),
        _size_for(module, case.over_sample_pixelization, mask),
    )
    return unmasked, sampled


@cache
def _ours(seed: int):
    return _datasets(lp, _case(seed))


@cache
def _theirs(seed: int):
    return quietly(_datasets, _aa(), _case(seed))


@cache
def _our_operator(seed: int):
    case = _case(seed)
    dataset = _ours(seed)[1]
    if case.backend == "jax":
        return dataset.apply_sparse_operator().sparse_operator  # the reference's call
    return dataset.apply_sparse_operator(64, backend=case.backend).sparse_operator


@cache
def _their_operators(seed: int):
    """The reference's (JAX operator, numba SparseLinAlgImagingNumba)."""
    dataset = _theirs(seed)[1]
    jax_operator = quietly(dataset.apply_sparse_operator).sparse_operator
    numba_operator = quietly(dataset.apply_sparse_operator_cpu).sparse_operator
    return jax_operator, numba_operator


def _numba_util():
    from autoarray.inversion.inversion.imaging_numba import inversion_imaging_numba_util

    return inversion_imaging_numba_util


def _jax_util():
    from autoarray.inversion.inversion.imaging import inversion_imaging_util

    return inversion_imaging_util


# ---------------------------------------------------------------------------------- brute force
def _convolution_matrix(mask: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Dense H: ``H[k, i] = K[k - i + c]`` for unmasked k, i (slim order), off-array dropped."""
    ky, kx = kernel.shape
    rows, cols = np.nonzero(~mask)
    slim = -np.ones(mask.shape, dtype=np.int64)
    slim[rows, cols] = np.arange(rows.size)
    blur = np.zeros((rows.size, rows.size))
    for a in range(ky):
        for b in range(kx):
            ty, tx = rows + a - ky // 2, cols + b - kx // 2
            inside = (ty >= 0) & (ty < mask.shape[0]) & (tx >= 0) & (tx < mask.shape[1])
            target = np.full(rows.size, -1)
            target[inside] = slim[ty[inside], tx[inside]]
            used = target >= 0
            blur[target[used], np.nonzero(used)[0]] += kernel[a, b]
    return blur


@cache
def _brute_force(seed: int):
    """(W, H^T N^-1 d) from the dense convolution matrix, with the reference's masked dataset."""
    dataset = _theirs(seed)[1]
    blur = _convolution_matrix(_plain(dataset.mask), _plain(dataset.psf.kernel.native))
    inverse_variance = 1.0 / _plain(dataset.noise_map.slim) ** 2
    weighted = blur.T * inverse_variance
    return weighted @ blur, weighted @ _plain(dataset.data.slim)


# ---------------------------------------------------------------------------------- random mappings
def _random_mapping(rng, n_pixels: int, per_pixel: tuple[int, int], n_source: int):
    """MapperLayout-style arrays: each image pixel maps to distinct source pixels."""
    low, high = per_pixel
    lengths = np.minimum(rng.integers(low, high + 1, size=n_pixels), n_source)
    width = int(lengths.max())
    order = np.argsort(rng.uniform(size=(n_pixels, n_source)), axis=1)[:, :width]
    used = np.arange(width)[None, :] < lengths[:, None]
    pix_indexes = np.where(used, order, -1).astype(np.int64)
    weights = np.where(used, rng.uniform(0.05, 1.0, size=(n_pixels, width)), 0.0)
    return pix_indexes, weights, lengths.astype(np.int64)


def _mapping_forms(pix_indexes, weights, lengths, n_source):
    used = np.arange(pix_indexes.shape[1])[None, :] < lengths[:, None]
    rows = np.nonzero(used)[0]
    cols, vals = pix_indexes[used], weights[used]
    csr = sp.csr_matrix((vals, (rows, cols)), shape=(len(lengths), n_source))
    return {
        "csr": csr,
        "coo triplets": (rows, cols, vals, n_source),
        "dense": csr.toarray(),
        "MapperLayout": MapperLayout(pix_indexes, weights, lengths, n_source),
    }, (rows, cols, vals)


# ================================================================================== 1. dataset
@pytest.mark.parametrize("seed", range(N_CASES))
def test_dataset_quantities_equal_the_references(seed):
    aa = _aa()
    case = _case(seed)
    ours_unmasked, ours = _ours(seed)
    theirs_unmasked, theirs = _theirs(seed)

    for label, mine, ref in (
        ("unmasked", ours_unmasked, theirs_unmasked),
        ("masked", ours, theirs),
    ):
        _assert_equal(f"{label} mask", np.asarray(mine.mask), _plain(ref.mask))
        assert mine.shape_native == tuple(ref.shape_native)
        assert mine.shape_slim == ref.shape_slim
        assert mine.pixel_scales == tuple(ref.pixel_scales)
        assert mine.mask.origin == tuple(ref.mask.origin)
        _assert_close(f"{label} data slim", mine.data.slim, _plain(ref.data.slim))
        _assert_close(f"{label} data native", mine.data.native, _plain(ref.data.native))
        _assert_close(f"{label} noise slim", mine.noise_map.slim, _plain(ref.noise_map.slim))
        _assert_close(f"{label} noise native", mine.noise_map.native, _plain(ref.noise_map.native))
        _assert_close(f"{label} psf kernel", mine.psf.kernel.native, _plain(ref.psf.kernel.native))
        _assert_close(
            f"{label} signal-to-noise map",
            mine.signal_to_noise_map.slim,
            _plain(quietly(lambda d=ref: d.signal_to_noise_map.slim)),
        )
        assert mine.signal_to_noise_max == pytest.approx(
            float(quietly(lambda d=ref: d.signal_to_noise_max)), rel=RTOL
        )

    for name in ("lp", "pixelization"):
        mine, ref = getattr(ours.grids, name), getattr(theirs.grids, name)
        _assert_equal(
            f"over_sample_size_{name}",
            np.asarray(getattr(ours, f"over_sample_size_{name}").slim),
            _plain(getattr(theirs, f"over_sample_size_{name}").slim),
        )
        _assert_equal(
            f"grid {name} sizes", mine.over_sample_size.slim, _plain(ref.over_sample_size)
        )
        _assert_close(f"grid {name} slim", mine.slim, _plain(ref.slim))
        _assert_close(f"grid {name} native", mine.native, _plain(ref.native))
        _assert_close(f"grid {name} over-sampled", mine.over_sampled, _plain(ref.over_sampled))
    _assert_close("dataset.grid", ours.grid.slim, _plain(theirs.grid.slim))

    # the blurring grid: both pad the frame (and warn) when the mask comes within k // 2 of the edge
    with warnings.catch_warnings(record=True) as our_warnings:
        warnings.simplefilter("always")
        our_blurring = ours.grids.blurring
    with warnings.catch_warnings(record=True) as their_warnings:
        warnings.simplefilter("always")
        their_blurring = theirs.grids.blurring
    padded = [str(w.message) for w in their_warnings if "padded" in str(w.message)]
    assert bool(padded) == any("padded" in str(w.message) for w in our_warnings), padded
    if case.mask_kind == "edge":
        assert padded, "an edge-touching mask needs the padded blurring frame"
    _assert_equal("blurring mask", np.asarray(our_blurring.mask), _plain(their_blurring.mask))
    _assert_close("blurring grid", our_blurring.slim, _plain(their_blurring.slim))

    # a PSF convolution of an image with the light of its blurring region
    rng = np.random.default_rng(seed)
    image = rng.normal(size=ours.shape_slim)
    outside = rng.normal(size=our_blurring.shape_slim)
    our_blurred = ours.psf.convolved_image_from(
        lp.Array2D(image, ours.mask), lp.Array2D(outside, our_blurring.mask)
    )
    their_blurred = quietly(
        theirs.psf.convolved_image_from,
        aa.Array2D(image.copy(), theirs.mask),
        aa.Array2D(outside.copy(), their_blurring.mask),
    )
    _assert_close("convolved image", our_blurred.slim, _plain(their_blurred.slim))


@pytest.mark.parametrize("seed", range(0, N_CASES, 5))
def test_an_unnormalised_psf_is_stored_as_the_references(seed):
    case = _case(seed)
    ours = _unmasked(lp, case, use_normalized_psf=False)
    theirs = quietly(_unmasked, _aa(), case, False)
    _assert_close(
        "unnormalised psf kernel", ours.psf.kernel.native, _plain(theirs.psf.kernel.native)
    )
    np.testing.assert_array_equal(ours.psf.kernel.native, case.kernel)


# ================================================================================== 2. W
@pytest.mark.parametrize("seed", range(N_CASES))
def test_operator_equals_brute_force_and_the_references_numba_operator(seed):
    _aa()
    nu = _numba_util()
    ours = _ours(seed)[1]
    theirs = _theirs(seed)[1]
    operator = _our_operator(seed)
    dense = operator.to_dense()
    brute_w, brute_pwd = _brute_force(seed)
    _assert_close("W vs brute force", dense, brute_w)

    noise_native = np.asarray(_plain(theirs.noise_map.native), dtype=np.float64)
    kernel = np.asarray(_plain(theirs.psf.kernel.native), dtype=np.float64)
    native_for_slim = np.asarray(theirs.mask.derive_indexes.native_for_slim).astype(np.int64)
    np.testing.assert_array_equal(native_for_slim, ours.mask.native_for_slim)
    their_dense = nu.psf_precision_operator_from(noise_native, kernel, native_for_slim)
    _assert_close("W vs reference dense numba W", dense, their_dense)

    # the reference's sparse W keeps only entries > 0 (a reference bug: DESIGN §7, semantics 4.1)
    numba_operator = _their_operators(seed)[1]
    values, indexes, lengths = (
        numba_operator.psf_precision_operator_sparse,
        numba_operator.indexes,
        numba_operator.lengths,
    )
    upper = np.zeros_like(dense)
    upper[np.repeat(np.arange(len(lengths)), lengths), indexes] = values
    _assert_close(
        "W+ vs reference sparse numba W", np.where(dense > 0, dense, 0.0), upper + upper.T
    )

    # our autoarray layout, restricted to the entries the reference keeps, is its layout exactly
    our_values, our_indexes, our_lengths = operator.to_autoarray_layout()
    our_rows = np.repeat(np.arange(len(our_lengths)), our_lengths)
    positive = our_values > 0
    np.testing.assert_array_equal(np.bincount(our_rows[positive], minlength=len(lengths)), lengths)
    np.testing.assert_array_equal(our_indexes[positive], indexes)
    _assert_close("autoarray layout values", our_values[positive], values)
    rebuilt = np.zeros_like(dense)
    rebuilt[our_rows, our_indexes] = our_values
    _assert_close("W vs our autoarray layout rebuilt", dense, rebuilt + rebuilt.T)

    # H^T N^-1 d: the reference's numba and JAX-module forms (both from its masked dataset)
    pwd = operator.psf_weighted_data
    _assert_close("H^T N^-1 d vs brute force", pwd, brute_pwd)
    data_native = np.asarray(_plain(theirs.data.native), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 at masked pixels, skipped by it
        their_pwd = nu.psf_weighted_data_from(data_native, noise_native, kernel, native_for_slim)
    _assert_close("H^T N^-1 d vs reference numba", pwd, their_pwd)
    jax_operator = _their_operators(seed)[0]
    their_pwd_jax = _jax_util().psf_weighted_data_from(
        np.asarray(jax_operator.weight_map), kernel, native_for_slim
    )
    _assert_close("H^T N^-1 d vs reference JAX-module form", pwd, their_pwd_jax)


# ================================================================================== 3. W X
def test_the_references_jax_operator_computes_in_float64():
    _aa()
    jax_operator = _their_operators(0)[0]
    assert jax_operator.Khat_r.dtype == np.complex128
    n = int(np.prod(_ours(0)[1].shape_native))
    out = jax_operator.apply_operator(np.ones((n, 1)))
    assert out.dtype == np.float64


@pytest.mark.parametrize("seed", range(N_CASES))
def test_operator_times_matrix_equals_the_references_jax_operator(seed):
    _aa()
    import jax
    import jax.numpy as jnp

    dataset = _theirs(seed)[1]
    operator = _our_operator(seed)
    jax_operator = _their_operators(seed)[0]
    rng = np.random.default_rng(1000 + seed)
    k = int(rng.integers(1, 6))
    x = rng.normal(size=(operator.n_pixels, k)) * rng.uniform(0.1, 10.0, size=k)
    # the reference applies W on the rectangular frame: scatter X there (zero at masked pixels)
    rect_index = np.asarray(dataset.mask.fft_index_for_masked_pixel)
    np.testing.assert_array_equal(rect_index, np.flatnonzero(~np.asarray(dataset.mask)))
    frame = np.zeros((dataset.shape_native[0] * dataset.shape_native[1], 5))
    frame[rect_index, :k] = x  # always 5 columns: one compilation per frame shape
    # jit: the reference traces apply_operator inside its jitted curvature loop the same way
    apply = jax.jit(jax_operator.apply_operator)
    theirs = np.asarray(apply(jnp.asarray(frame)))[rect_index, :k]
    assert theirs.dtype == np.float64
    ours = operator.apply(x[:, 0]) if k == 1 else operator.apply(x)
    _assert_close("W X vs reference JAX operator", ours, theirs[:, 0] if k == 1 else theirs)


# ================================================================================== 4. F and D
@pytest.mark.parametrize("seed", range(N_CASES))
def test_curvature_matrix_and_data_vector_equal_the_references_for_random_mappings(seed):
    _aa()
    nu = _numba_util()
    theirs = _theirs(seed)[1]
    operator = _our_operator(seed)
    w_values, w_indexes, w_lengths = operator.to_autoarray_layout()
    brute_w, brute_pwd = _brute_force(seed)
    noise_native = np.asarray(_plain(theirs.noise_map.native), dtype=np.float64)
    kernel = np.asarray(_plain(theirs.psf.kernel.native), dtype=np.float64)
    native_for_slim = np.asarray(theirs.mask.derive_indexes.native_for_slim).astype(np.int64)
    data_native = np.asarray(_plain(theirs.data.native), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        their_pwd = nu.psf_weighted_data_from(data_native, noise_native, kernel, native_for_slim)

    rng = np.random.default_rng(2000 + seed)
    n = operator.n_pixels
    for label, per_pixel in (("1-3 per pixel", (1, 3)), ("~10 per pixel", (8, 12))):
        n_source = int(rng.integers(5, 301))
        pix_indexes, weights, lengths = _random_mapping(rng, n, per_pixel, n_source)
        forms, (rows, cols, vals) = _mapping_forms(pix_indexes, weights, lengths, n_source)
        dense_a = forms["dense"]
        args = (pix_indexes, weights, lengths, n_source)
        their_f = nu.curvature_matrix_via_sparse_operator_from(
            w_values, w_indexes, w_lengths, *args
        )
        their_f_direct = nu.curvature_matrix_via_sparse_operator_from(
            w_values, w_indexes, w_lengths, *args, two_stage_max_pix_pixels=0
        )
        their_d = nu.data_vector_via_psf_weighted_data_from(their_pwd, *args)
        their_d_triplets = _jax_util().data_vector_via_psf_weighted_data_from(
            their_pwd, rows, cols, vals, n_source
        )
        brute_f = dense_a.T @ brute_w @ dense_a
        brute_d = dense_a.T @ brute_pwd
        for form, mapping in forms.items():
            f = operator.curvature_matrix_from(mapping)
            d = operator.data_vector_from(mapping)
            where = f"({label}, {form})"
            np.testing.assert_array_equal(f, f.T, err_msg=f"F not symmetric {where}")
            _assert_close(f"F vs reference numba two-stage {label}", f, their_f)
            _assert_close(f"F vs reference numba direct {label}", f, their_f_direct)
            _assert_close(f"F vs brute force {label}", f, brute_f)
            _assert_close(f"D vs reference numba {label}", d, their_d)
            _assert_close(f"D vs reference triplets {label}", d, their_d_triplets)
            _assert_close(f"D vs brute force {label}", d, brute_d)

        if seed % 25 == 0:  # the JAX curvature compiles per frame and S: a few seeds suffice
            rect_index = np.asarray(theirs.mask.fft_index_for_masked_pixel)
            jax_operator = _their_operators(seed)[0]
            their_f_jax = jax_operator.curvature_matrix_diag_from(
                rect_index[rows], cols, vals, S=n_source
            )
            _assert_close(
                f"F vs reference JAX {label}",
                operator.curvature_matrix_from(forms["csr"]),
                their_f_jax,
            )


# ================================================================================== mask origin
def test_a_masks_origin_gives_the_grids_as_in_the_reference():
    """``apply_mask`` with a mask whose origin differs from the data's: the reference adopts the
    mask's origin (``Array2D(values=data.native, mask=mask)``), so the grids move with it."""
    aa = _aa()
    case = _case(1)
    mask_origin = (0.35, -0.25)
    results = []
    for module in (lp, aa):
        data = module.Array2D.no_mask(case.data.copy(), case.pixel_scales)
        noise = module.Array2D.no_mask(case.noise.copy(), case.pixel_scales)
        psf = module.Convolver(kernel=module.Array2D.no_mask(case.kernel.copy(), case.pixel_scales))
        mask = module.Mask2D.circular(case.shape, 0.6, case.pixel_scales, mask_origin)
        masked = quietly(module.Imaging(data, noise, psf).apply_mask, mask)
        results.append((tuple(masked.mask.origin), _plain(masked.grid.slim)))
    (our_origin, our_grid), (their_origin, their_grid) = results
    assert their_origin == mask_origin
    _assert_close("grid with a mask origin", our_grid, their_grid)
    assert our_origin == their_origin
