"""lenspipe datasets in PyAutoArray / PyAutoLens and back (pipeline/interop/autoarray.py).

Tests marked ``autoarray`` run where the reference library is importable (``lenspipe[autoarray]``,
Python >= 3.12): round trips to the bit, W handed over in autoarray's layout equal to autoarray's
own, and autoarray inversions with real ``RectangularUniform`` and ``Delaunay`` mappers whose
curvature matrix F, data vector D and log evidence with our operator equal autoarray's own. The
unmarked tests run everywhere: the error without autoarray, the lazy import, the layout conversion.

"autoarray's own" is the dataset autoarray builds from the same arrays with its own calls, fitted
through its dense mapping-matrix route (``InversionImagingMapping``): exact for any PSF. Its CPU
sparse operator drops the negative entries of W, so it is compared only for a PSF without
negative pixels.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pipeline as lp
from pipeline.exc import DatasetError, OperatorError, PipelineError
from pipeline.operators import ImagingSparseOperator
from tests.helpers import import_autoarray, quietly

SHAPE, SCALES = (40, 40), 0.1
TIGHT = 1e-10  # relative: F, D, reconstructions and log evidence
W_TIGHT = 1e-12  # relative: W itself
DOC = Path(__file__).resolve().parents[2] / "docs" / "porting-from-pyautolens.md"


def relative(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def psf_kernel(shape=(7, 5), negative=True) -> np.ndarray:
    """An off-centre, non-square PSF; with ``negative`` a ring of negative pixels (as empirical
    HST PSFs have after background subtraction)."""
    ky, kx = shape
    y, x = np.indices(shape, dtype=np.float64)
    y, x = y - ky // 2 - 0.3, x - kx // 2 + 0.2
    kernel = np.exp(-(y**2 + 1.4 * x**2) / 1.5)
    if negative:
        kernel -= 0.06 * np.exp(-(y**2 + x**2) / 6.0)
    return kernel


def raw_arrays(seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(SHAPE)
    blob = 3.0 * np.exp(-((rows - 18.0) ** 2 + (cols - 22.0) ** 2) / 30.0)
    noise = rng.uniform(0.5, 1.5, size=SHAPE)
    return blob + noise * rng.normal(size=SHAPE), noise


def lenspipe_dataset(kernel: np.ndarray, radius: float = 1.2, over: int = 2) -> lp.Imaging:
    data, noise = raw_arrays()
    return (
        lp.Imaging(
            lp.Array2D.no_mask(data, SCALES),
            lp.Array2D.no_mask(noise, SCALES),
            lp.Convolver(kernel, pixel_scales=SCALES),
            name="lens_0001",
        )
        .apply_mask(lp.Mask2D.circular(SHAPE, radius, SCALES))
        .apply_over_sampling(over, over)
        .apply_sparse_operator(backend="numpy")
    )


def autoarray_own(aa, kernel: np.ndarray, radius: float = 1.2, over: int = 2):
    """The same dataset built by autoarray's own calls (no operator)."""
    data, noise = raw_arrays()

    def build():
        dataset = aa.Imaging(
            data=aa.Array2D.no_mask(values=data, pixel_scales=SCALES),
            noise_map=aa.Array2D.no_mask(values=noise, pixel_scales=SCALES),
            psf=aa.Convolver(kernel=aa.Array2D.no_mask(values=kernel.copy(), pixel_scales=SCALES)),
        )
        mask = aa.Mask2D.circular(shape_native=SHAPE, radius=radius, pixel_scales=SCALES)
        dataset = dataset.apply_mask(mask=mask)
        return dataset.apply_over_sampling(
            over_sample_size_lp=over, over_sample_size_pixelization=over
        )

    return quietly(build)


def rectangular_mapper(aa, dataset):
    mesh = aa.mesh.RectangularUniform(shape=(9, 9))
    interpolator = mesh.interpolator_from(
        source_plane_data_grid=dataset.grids.pixelization, source_plane_mesh_grid=None
    )
    return aa.Mapper(interpolator=interpolator, regularization=aa.reg.Constant(coefficient=1.0))


def delaunay_mapper(aa, dataset):
    grid = aa.image_mesh.Overlay(shape=(8, 8)).image_plane_mesh_grid_from(mask=dataset.mask)
    mesh = aa.mesh.Delaunay(pixels=len(grid))
    interpolator = mesh.interpolator_from(
        source_plane_data_grid=dataset.grids.pixelization, source_plane_mesh_grid=grid
    )
    return aa.Mapper(
        interpolator=interpolator,
        regularization=aa.reg.Constant(coefficient=1.0),
        image_plane_mesh_grid=grid,
    )


MAPPERS = {"rectangular_uniform": rectangular_mapper, "delaunay": delaunay_mapper}


def fit_numbers(aa, dataset, mapper) -> dict:
    """F, D, the reconstruction and the log evidence of autoarray's pixelized fit of
    ``dataset`` (what ``al.FitImaging`` computes for a source-only pixelization)."""

    class SourceFit(aa.FitImaging):
        def __init__(self, dataset, inversion):
            super().__init__(dataset=dataset)
            self._inversion = inversion

        @property
        def inversion(self):
            return self._inversion

        @property
        def model_data(self):
            return self._inversion.mapped_reconstructed_operated_data

    def compute():
        inversion = aa.Inversion(dataset=dataset, linear_obj_list=[mapper])
        return {
            "route": type(inversion).__name__,
            "F": np.array(inversion.curvature_matrix),
            "D": np.array(inversion.data_vector),
            "reconstruction": np.array(inversion.reconstruction),
            "log_evidence": float(SourceFit(dataset, inversion).log_evidence),
        }

    return quietly(compute)


def dense_from_autoarray_layout(values, indexes, lengths, n: int) -> np.ndarray:
    """W = U + U^T from autoarray's layout (the diagonal is stored halved)."""
    upper = np.zeros((n, n))
    rows = np.repeat(np.arange(n), np.asarray(lengths).astype(np.int64))
    np.add.at(upper, (rows, np.asarray(indexes).astype(np.int64)), values)
    return upper + upper.T


@pytest.fixture(scope="module")
def aa():
    return import_autoarray()


# ---------------------------------------------------------------------------------- everywhere
def test_importing_interop_loads_neither_autoarray_nor_jax():
    code = (
        "import sys, pipeline, pipeline.interop\n"
        "assert pipeline.to_autoarray is pipeline.interop.to_autoarray\n"
        "assert pipeline.from_autoarray is pipeline.interop.from_autoarray\n"
        "assert pipeline.to_autoarray_from_store is pipeline.interop.to_autoarray_from_store\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'autoarray', 'jax', 'zarr'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]", done.stdout


@pytest.fixture
def small_dataset() -> lp.Imaging:
    return lenspipe_dataset(psf_kernel(), radius=0.6, over=1)


INSTALL = re.escape('pip install "lenspipe[autoarray]"')


def test_without_autoarray_every_call_says_how_to_install_it(monkeypatch, small_dataset, tmp_path):
    monkeypatch.setitem(sys.modules, "autoarray", None)  # import autoarray now fails
    with pytest.raises(PipelineError, match=INSTALL) as raised:
        lp.to_autoarray(small_dataset)
    assert "Python >= 3.12" in str(raised.value)
    assert isinstance(raised.value.__cause__, ImportError)
    with pytest.raises(PipelineError, match=INSTALL):
        lp.from_autoarray(object())
    # checked before the store is read: no StoreNotFoundError for a store that is not there
    with pytest.raises(PipelineError, match=INSTALL):
        lp.to_autoarray_from_store(tmp_path / "absent.zarr", "lens_0001")


def test_where_autoarray_is_not_installed_the_error_is_the_same(small_dataset):
    try:
        import_autoarray()
    except pytest.skip.Exception:
        pass
    else:
        pytest.skip("autoarray is installed here: the autoarray-marked tests run instead")
    with pytest.raises(PipelineError, match=INSTALL):
        lp.to_autoarray(small_dataset)


@pytest.mark.parametrize("kernel_shape", [(5, 5), (7, 5), (3, 9)])
def test_the_layout_conversion_inverts_to_autoarray_layout_exactly(kernel_shape):
    kernel = psf_kernel(kernel_shape)
    dataset = lenspipe_dataset(kernel, radius=0.9, over=1)
    operator = dataset.sparse_operator
    values, indexes, lengths = operator.to_autoarray_layout()
    assert np.any(values < 0)  # negative entries of W are handed over
    band = operator.layout.from_autoarray_layout(values, indexes, lengths)
    np.testing.assert_array_equal(band, operator.values)
    # autoarray's raw function returns float indexes and lengths
    band = operator.layout.from_autoarray_layout(
        values, indexes.astype(float), lengths.astype(float)
    )
    np.testing.assert_array_equal(band, operator.values)


def test_a_layout_that_is_not_a_band_of_w_is_refused():
    dataset = lenspipe_dataset(psf_kernel((5, 5)), radius=0.6, over=1)
    layout = dataset.sparse_operator.layout
    values, indexes, lengths = dataset.sparse_operator.to_autoarray_layout()
    with pytest.raises(OperatorError, match="lengths"):
        layout.from_autoarray_layout(values, indexes, lengths[:-1])
    with pytest.raises(OperatorError, match="not one of the"):
        layout.from_autoarray_layout(values, indexes + layout.n_pixels, lengths)
    lower = indexes.copy()
    lower[lengths[0]] = 0  # row 1 lists pixel 0: below the diagonal
    with pytest.raises(OperatorError, match=r"pair \(1, 0\) is not in the upper band"):
        layout.from_autoarray_layout(values, lower, lengths)
    twice = indexes.copy()
    twice[1] = twice[0]
    with pytest.raises(OperatorError, match="twice"):
        layout.from_autoarray_layout(values, twice, lengths)
    smaller = ImagingSparseOperator.from_noise_map_and_psf(
        dataset.noise_map.native, np.ones((3, 3)), np.asarray(dataset.mask)
    ).layout
    with pytest.raises(OperatorError, match="upper band of a"):
        smaller.from_autoarray_layout(values, indexes, lengths)


# ---------------------------------------------------------------------------------- with autoarray
@pytest.mark.autoarray
def test_a_round_trip_is_exact_to_the_bit(aa):
    scales, origin = (0.1, 0.12), (0.3, -0.2)
    data, noise = raw_arrays(seed=9)
    frame = lp.Mask2D.all_false(SHAPE, scales, origin=origin)
    mask = lp.Mask2D.elliptical(SHAPE, 1.5, 0.7, 30.0, scales, origin)
    dataset = lp.Imaging(
        lp.Array2D(data, frame),
        lp.Array2D(noise, frame),
        lp.Convolver(psf_kernel(), use_fft=True, pixel_scales=scales),
    ).apply_mask(mask)
    sizes = np.random.default_rng(2).integers(1, 5, size=dataset.shape_slim)
    covariance = np.diag(dataset.noise_map.slim**2) + 1e-3
    dataset = lp.Imaging(
        dataset.data,
        dataset.noise_map,
        dataset.psf,
        noise_covariance_matrix=covariance,
        over_sample_size_lp=sizes,
        over_sample_size_pixelization=3,
    ).apply_sparse_operator(backend="numpy")

    converted = quietly(lp.to_autoarray, dataset)
    back = quietly(lp.from_autoarray, converted, name="lens_0001")

    assert back.name == "lens_0001"
    assert back.pixel_scales == dataset.pixel_scales and back.mask.origin == origin
    np.testing.assert_array_equal(np.asarray(back.mask), np.asarray(dataset.mask))
    for what in ("data", "noise_map", "over_sample_size_lp", "over_sample_size_pixelization"):
        ours, theirs = getattr(dataset, what).native, getattr(back, what).native
        assert ours.dtype == theirs.dtype and ours.tobytes() == theirs.tobytes(), what
    assert back.psf.kernel.native.tobytes() == dataset.psf.kernel.native.tobytes()
    assert back.psf.is_normalized and back.use_normalized_psf
    assert converted.psf.use_fft is True and back.psf.use_fft is True  # the method choice too
    np.testing.assert_array_equal(back.noise_covariance_matrix, covariance)
    np.testing.assert_array_equal(back.sparse_operator.offsets, dataset.sparse_operator.offsets)
    assert back.sparse_operator.values.tobytes() == dataset.sparse_operator.values.tobytes()
    np.testing.assert_array_equal(
        back.sparse_operator.psf_weighted_data, dataset.sparse_operator.psf_weighted_data
    )

    again = quietly(lp.to_autoarray, back)  # and autoarray -> lenspipe -> autoarray
    for what in ("data", "noise_map", "over_sample_size_lp", "over_sample_size_pixelization"):
        np.testing.assert_array_equal(
            getattr(again, what).native.array, getattr(converted, what).native.array
        )
    np.testing.assert_array_equal(again.psf.kernel.native.array, converted.psf.kernel.native.array)
    for what in ("psf_precision_operator_sparse", "indexes", "lengths"):
        np.testing.assert_array_equal(
            getattr(again.sparse_operator, what), getattr(converted.sparse_operator, what)
        )


@pytest.mark.autoarray
def test_the_converted_dataset_is_the_one_autoarray_builds_with_our_operator(aa):
    from autoarray.inversion.inversion.imaging_numba.inversion_imaging_numba_util import (
        SparseLinAlgImagingNumba,
    )

    kernel = psf_kernel()
    dataset = lenspipe_dataset(kernel)
    converted = quietly(lp.to_autoarray, dataset)
    own = autoarray_own(aa, kernel)

    assert isinstance(converted, aa.Imaging)
    assert isinstance(converted.sparse_operator, SparseLinAlgImagingNumba)
    np.testing.assert_array_equal(converted.mask.array, own.mask.array)
    for what in ("data", "noise_map", "over_sample_size_lp", "over_sample_size_pixelization"):
        np.testing.assert_array_equal(getattr(converted, what).array, getattr(own, what).array)
    # the same normalised kernel (autoarray divides by the sum exactly as lenspipe does)
    np.testing.assert_array_equal(converted.psf.kernel.native.array, own.psf.kernel.native.array)
    for grid in ("lp", "pixelization", "blurring"):
        ours, theirs = getattr(converted.grids, grid), getattr(own.grids, grid)
        np.testing.assert_array_equal(
            getattr(ours, "over_sampled", ours).array, getattr(theirs, "over_sampled", theirs).array
        )
    # psf_setup_state=True: the convolution state is built once, for this mask
    assert converted.psf.state_from(converted.mask) is converted.psf.state_from(converted.mask)

    # autoarray keeps the operator through apply_over_sampling and drops it on apply_mask
    resampled = quietly(converted.apply_over_sampling, over_sample_size_lp=4)
    assert resampled.sparse_operator is converted.sparse_operator
    smaller = aa.Mask2D.circular(shape_native=SHAPE, radius=1.0, pixel_scales=SCALES)
    assert quietly(converted.apply_mask, mask=smaller).sparse_operator is None
    # autoarray re-normalises its kernel in place there: ours is another array, untouched
    np.testing.assert_array_equal(
        dataset.psf.kernel.native, lenspipe_dataset(kernel).psf.kernel.native
    )


@pytest.mark.autoarray
@pytest.mark.parametrize("negative", [False, True], ids=["positive_psf", "negative_psf"])
def test_w_in_autoarrays_layout_equals_autoarrays_own_w(aa, negative):
    from autoarray.inversion.inversion.imaging_numba import inversion_imaging_numba_util as util

    kernel = psf_kernel((5, 5), negative=negative)
    dataset = lenspipe_dataset(kernel, radius=0.8)
    converted = quietly(lp.to_autoarray, dataset)
    handed = converted.sparse_operator
    n = dataset.shape_slim
    ours = dense_from_autoarray_layout(
        handed.psf_precision_operator_sparse, handed.indexes, handed.lengths, n
    )
    np.testing.assert_array_equal(ours, dataset.sparse_operator.to_dense())
    # autoarray's brute-force dense W (every entry, negatives kept) from the handed-over arrays
    assert relative(ours, quietly(lambda: handed.psf_precision_operator)) < W_TIGHT
    # autoarray's own sparse layout, from the same arrays as its apply_sparse_operator_cpu
    values, indexes, lengths = quietly(
        util.psf_precision_operator_sparse_from,
        noise_map_native=np.array(converted.noise_map.native.array),
        kernel_native=np.array(converted.psf.kernel.native.array),
        native_index_for_slim_index=np.array(converted.mask.derive_indexes.native_for_slim).astype(
            int
        ),
    )
    theirs = dense_from_autoarray_layout(values, indexes, lengths, n)
    if negative:  # autoarray keeps only entries > 0: its W lacks the negative ones
        assert np.any(ours < 0) and not np.any(theirs < 0)
        assert relative(theirs, ours) > 1e-3
    else:
        assert relative(ours, theirs) < W_TIGHT
        np.testing.assert_array_equal(handed.lengths, lengths)
        np.testing.assert_array_equal(handed.indexes, indexes)


@pytest.mark.autoarray
def test_from_autoarray_converts_its_cpu_operator_exactly_or_recomputes_w(aa, caplog):
    positive, negative = psf_kernel(negative=False), psf_kernel(negative=True)

    own = quietly(autoarray_own(aa, positive).apply_sparse_operator_cpu)
    back = quietly(lp.from_autoarray, own)
    ours = lenspipe_dataset(positive).sparse_operator
    assert relative(back.sparse_operator.values, ours.values) < W_TIGHT
    for got, expected in zip(
        back.sparse_operator.to_autoarray_layout(),
        (
            own.sparse_operator.psf_precision_operator_sparse,
            own.sparse_operator.indexes,
            own.sparse_operator.lengths,
        ),
        strict=True,
    ):
        np.testing.assert_array_equal(got, expected)  # converted, not recomputed

    ours = lenspipe_dataset(negative).sparse_operator
    with caplog.at_level(logging.INFO, logger="pipeline.interop.autoarray"):
        own = quietly(autoarray_own(aa, negative).apply_sparse_operator_cpu)
        back = quietly(lp.from_autoarray, own, name="lens_0001")
        assert "lens_0001" in caplog.text and "W recomputed" in caplog.text
    assert relative(back.sparse_operator.values, ours.values) < W_TIGHT  # the exact W, not theirs
    assert np.any(back.sparse_operator.values < 0)

    own = quietly(
        autoarray_own(aa, negative, radius=0.6, over=1).apply_sparse_operator, batch_size=64
    )
    back = quietly(lp.from_autoarray, own)  # the JAX operator holds FFTs, not W
    expected = lenspipe_dataset(negative, radius=0.6, over=1).sparse_operator
    assert relative(back.sparse_operator.values, expected.values) < W_TIGHT


@pytest.mark.autoarray
@pytest.mark.parametrize("mesh", sorted(MAPPERS))
def test_f_and_d_of_real_mappers_with_our_operator_equal_autoarrays_own(aa, mesh):
    kernel = psf_kernel()
    dataset = lenspipe_dataset(kernel)
    own = autoarray_own(aa, kernel)
    mapper = quietly(MAPPERS[mesh], aa, own)

    with_ours = fit_numbers(aa, quietly(lp.to_autoarray, dataset), mapper)
    reference = fit_numbers(aa, own, mapper)

    assert with_ours["route"] == "InversionImagingSparseNumba"  # autoarray uses our W
    assert reference["route"] == "InversionImagingMapping"
    assert with_ours["F"].shape[0] == mapper.params > 30
    assert relative(with_ours["F"], reference["F"]) < TIGHT
    assert relative(with_ours["D"], reference["D"]) < TIGHT
    # and lenspipe's own consumers, given the autoarray mapper
    assert relative(dataset.sparse_operator.curvature_matrix_from(mapper), reference["F"]) < TIGHT
    assert relative(dataset.sparse_operator.data_vector_from(mapper), reference["D"]) < TIGHT


@pytest.mark.autoarray
@pytest.mark.parametrize("mesh", sorted(MAPPERS))
@pytest.mark.parametrize("negative", [False, True], ids=["positive_psf", "negative_psf"])
def test_a_full_inversion_with_our_operator_gives_autoarrays_log_evidence(aa, mesh, negative):
    kernel = psf_kernel(negative=negative)
    own = autoarray_own(aa, kernel)
    mapper = quietly(MAPPERS[mesh], aa, own)

    with_ours = fit_numbers(aa, quietly(lp.to_autoarray, lenspipe_dataset(kernel)), mapper)
    reference = fit_numbers(aa, own, mapper)
    assert np.isfinite(reference["log_evidence"])
    assert relative(with_ours["log_evidence"], reference["log_evidence"]) < TIGHT
    assert relative(with_ours["reconstruction"], reference["reconstruction"]) < TIGHT

    own_cpu = fit_numbers(aa, quietly(own.apply_sparse_operator_cpu), mapper)
    assert own_cpu["route"] == "InversionImagingSparseNumba"
    if negative:  # autoarray's own operator drops W's negative entries: its F is wrong
        assert relative(own_cpu["F"], reference["F"]) > 1e-3
    else:
        assert relative(own_cpu["log_evidence"], with_ours["log_evidence"]) < TIGHT


@pytest.mark.autoarray
def test_a_dataset_of_a_store_by_name(aa, tmp_path):
    kernel = psf_kernel()
    dataset = lenspipe_dataset(kernel)
    lp.write_imaging(tmp_path / "survey.zarr", "lens_0001", dataset, batch_size=100)

    from_store = quietly(lp.to_autoarray_from_store, tmp_path / "survey.zarr", "lens_0001")
    in_memory = quietly(lp.to_autoarray, dataset)
    for what in ("data", "noise_map", "over_sample_size_lp", "over_sample_size_pixelization"):
        np.testing.assert_array_equal(
            getattr(from_store, what).array, getattr(in_memory, what).array
        )
    np.testing.assert_array_equal(
        from_store.psf.kernel.native.array, in_memory.psf.kernel.native.array
    )
    for what in ("psf_precision_operator_sparse", "indexes", "lengths"):
        np.testing.assert_array_equal(
            getattr(from_store.sparse_operator, what), getattr(in_memory.sparse_operator, what)
        )
    mapper = quietly(rectangular_mapper, aa, in_memory)
    assert (
        fit_numbers(aa, from_store, mapper)["log_evidence"]
        == fit_numbers(aa, in_memory, mapper)["log_evidence"]
    )


@pytest.mark.autoarray
def test_mismatched_inputs_are_refused(aa):
    dataset = lenspipe_dataset(psf_kernel(), radius=0.8, over=1)
    with pytest.raises(DatasetError, match="needs a lenspipe Imaging"):
        lp.to_autoarray(quietly(lp.to_autoarray, dataset))
    with pytest.raises(DatasetError, match="needs an autoarray.Imaging"):
        lp.from_autoarray(dataset)
    other = lenspipe_dataset(psf_kernel(), radius=0.6, over=1).sparse_operator
    wrong = lp.Imaging(dataset.data, dataset.noise_map, dataset.psf, sparse_operator=other)
    with pytest.raises(OperatorError, match="another mask"):
        lp.to_autoarray(wrong)
    fine = quietly(
        aa.Imaging,
        data=aa.Array2D.no_mask(values=np.ones((9, 9)), pixel_scales=0.1),
        noise_map=aa.Array2D.no_mask(values=np.ones((9, 9)), pixel_scales=0.1),
        psf=aa.Convolver(kernel=aa.Array2D.no_mask(values=np.ones((5, 5)), pixel_scales=0.05)),
        over_sample_size_lp=2,
        convolve_over_sample_size_lp=2,
    )
    with pytest.raises(DatasetError, match="convolve_over_sample_size_lp=2"):
        lp.from_autoarray(fine)


# ---------------------------------------------------------------------------------- the docs
def _recipe_blocks() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Handing lenspipe datasets to PyAutoLens", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_porting_recipe_is_on_the_page():
    blocks = _recipe_blocks()
    assert len(blocks) == 3
    assert "apply_sparse_operator_cpu()" in blocks[0] and "lp.write_imaging(" in blocks[1]
    assert blocks[2].lstrip().startswith('dataset = lp.to_autoarray_from_store("survey.zarr"')


@pytest.mark.autoarray
def test_the_porting_recipe_runs_and_gives_the_same_log_evidence(aa, tmp_path, monkeypatch):
    from pipeline.io.fits import write_fits_array
    from pipeline.mock import simulate_lens

    lens = simulate_lens(SHAPE, SCALES, psf_shape=(7, 7), psf_sigma=0.1, seed=3, over_sample_size=2)
    folder = tmp_path / "lens_0001"
    folder.mkdir()
    write_fits_array(folder / "data.fits", lens.data.native)
    write_fits_array(folder / "noise_map.fits", lens.noise_map.native)
    write_fits_array(folder / "psf.fits", lens.psf.kernel.native)
    monkeypatch.chdir(tmp_path)

    namespace: dict = {}
    evidences, routes = [], []
    for number, block in enumerate(_recipe_blocks()):
        code = compile(block, f"{DOC.name}, recipe block {number}", "exec")
        quietly(exec, code, namespace)
        if "fit" in namespace:
            evidences.append(quietly(lambda: namespace.pop("fit").log_evidence))
            routes.append(type(namespace["dataset"].sparse_operator).__name__)
    assert routes == ["SparseLinAlgImagingNumba"] * 2
    assert relative(evidences[1], evidences[0]) < TIGHT
