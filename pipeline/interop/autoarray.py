"""lenspipe datasets as PyAutoArray / PyAutoLens ``Imaging`` datasets (``to_autoarray``, also
from a store by name: ``to_autoarray_from_store``), and back (``from_autoarray``), with W handed
over in autoarray's CPU layout so that its pixelized inversions use ours instead of recomputing it.

autoarray 2026.10.26.1 is optional (``pip install "lenspipe[autoarray]"``, Python >= 3.12): it is
imported when a function is called, never when this module is. Arrays are copied both ways, so
autoarray's in-place PSF normalisation never reaches a lenspipe dataset.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.exc import DatasetError, OperatorError, OptionalDependencyError
from pipeline.imaging.arrays import Array2D
from pipeline.imaging.convolver import Convolver
from pipeline.imaging.dataset import Imaging
from pipeline.imaging.mask import Mask2D
from pipeline.operators import ImagingSparseOperator, OperatorLayout

if TYPE_CHECKING:  # never imported at run time: autoarray is optional
    import autoarray

    from pipeline.io.store import StoreLike

__all__ = [
    "from_autoarray",
    "to_autoarray",
    "to_autoarray_from_store",
]

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "lenspipe[autoarray]"'

# a kernel whose values sum to 1 within this is taken as normalised (never divided again)
NORMALISED_SUM_TOLERANCE = 1e-9


def _import_autoarray() -> Any:
    try:
        import autoarray
    except ImportError as err:
        raise OptionalDependencyError(
            "converting to or from PyAutoArray/PyAutoLens datasets needs autoarray 2026.10.26.1, "
            f"which is not installed; install it with {INSTALL_HINT} (Python >= 3.12)"
        ) from err
    return autoarray


def _label(name: str | None) -> str:
    return f"dataset '{name}'" if name else "dataset"


def _numpy(value: Any) -> np.ndarray:
    """A numpy copy of an autoarray structure (its ``.array``) or of a plain array."""
    return np.array(getattr(value, "array", value), copy=True)


# ---------------------------------------------------------------------------------- to autoarray
def to_autoarray(dataset: Imaging) -> autoarray.Imaging:
    """The dataset as an ``autoarray.Imaging``, with its sparse operator if it carries one.

    Parameters
    ----------
    dataset
        A lenspipe ``Imaging`` (masked or not; with or without a PSF and a sparse operator).

    Returns
    -------
    autoarray.Imaging
        The same ``data`` and ``noise_map`` (units, e.g. electrons per second, and dtype),
        ``mask`` (True = masked; pixel scales in arcsec, origin), per-pixel over-sampling sizes,
        covariance and ``check_noise_map``; the PSF kernel as lenspipe uses it, bit for bit
        (autoarray is told not to normalise it again), with its ``use_fft`` and a
        ``ConvolverState`` for this mask (``psf_setup_state=True``, as autoarray's ``apply_mask``
        builds; without it autoarray rebuilds the state on every convolution).

        A sparse operator becomes autoarray's CPU operator (``SparseLinAlgImagingNumba``) holding
        our W in its layout (slim rows, ``j >= i``, diagonal halved, exact zeros dropped, negative
        entries kept), so ``aa.Inversion`` takes its sparse path and never computes W. As in
        autoarray, ``apply_over_sampling`` keeps it; ``apply_mask`` and ``apply_noise_scaling``
        drop it (logged) and divide the kernel by its sum again, in place (ulps).
    """
    aa = _import_autoarray()
    if not isinstance(dataset, Imaging):
        raise DatasetError(
            f"to_autoarray needs a lenspipe Imaging, got {type(dataset).__name__}; "
            "open one with lp.open_imaging or build it with lp.Imaging.from_fits"
        )
    mask = aa.Mask2D(
        mask=np.array(dataset.mask, dtype=bool),
        pixel_scales=dataset.pixel_scales,
        origin=dataset.mask.origin,
    )

    def on_mask(array: Array2D) -> Any:
        return aa.Array2D(values=np.array(array.native, copy=True), mask=mask)

    psf = None
    if dataset.psf is not None:
        kernel = dataset.psf.kernel
        psf = aa.Convolver(
            kernel=aa.Array2D.no_mask(
                values=np.array(kernel.native, copy=True),
                pixel_scales=kernel.pixel_scales,
                origin=kernel.origin,
            ),
            use_fft=dataset.psf.use_fft,
        )
    covariance = dataset.noise_covariance_matrix
    imaging = aa.Imaging(
        data=on_mask(dataset.data),
        noise_map=on_mask(dataset.noise_map),
        psf=psf,
        psf_setup_state=psf is not None,
        noise_covariance_matrix=None if covariance is None else np.array(covariance, copy=True),
        over_sample_size_lp=on_mask(dataset.over_sample_size_lp),
        over_sample_size_pixelization=on_mask(dataset.over_sample_size_pixelization),
        use_normalized_psf=False,  # the kernel is already as lenspipe uses it
        check_noise_map=dataset.check_noise_map,
    )
    if dataset.sparse_operator is not None:
        # set after construction: the operator refers to the dataset's own PSF (with its state)
        imaging.sparse_operator = _numba_operator(dataset, imaging)
    return imaging


def _numba_operator(dataset: Imaging, imaging: Any) -> Any:
    """autoarray's CPU operator around our W, for ``imaging`` (the converted ``dataset``)."""
    # autoarray does not export this class at its top level
    from autoarray.inversion.inversion.imaging_numba.inversion_imaging_numba_util import (
        SparseLinAlgImagingNumba,
    )

    operator = dataset.sparse_operator
    layout = operator.layout
    shape = None if dataset.psf is None else dataset.psf.shape_native
    if layout.kernel_shape != shape or not np.array_equal(layout.mask, np.asarray(dataset.mask)):
        raise OperatorError(
            f"{_label(dataset.name)}: its sparse operator was built for another mask or PSF "
            f"shape ({layout.kernel_shape}, the PSF is {shape}); call apply_sparse_operator again"
        )
    values, indexes, lengths = operator.to_autoarray_layout()
    return SparseLinAlgImagingNumba(
        psf_precision_operator_sparse=values,
        indexes=indexes,
        lengths=lengths,
        noise_map=imaging.noise_map,
        psf=imaging.psf,
        mask=imaging.mask,
    )


def to_autoarray_from_store(
    location: StoreLike,
    name: str,
    *,
    allow_incomplete: bool = False,
    storage_options: dict | None = None,
) -> autoarray.Imaging:
    """The dataset ``name`` of a lenspipe store as an ``autoarray.Imaging``.

    ``to_autoarray(lp.open_imaging(location, name, ...))``: the masked, over-sampled dataset
    with the stored operator handed over (its values are read in full). ``location`` is a path or
    an fsspec URL (``s3://...``); errors are those of :func:`pipeline.open_imaging`
    (``DatasetNotFoundError``, ``DatasetNotCompleteError`` unless ``allow_incomplete``,
    ``DamagedDatasetError``). autoarray is checked first, before the store is read.
    """
    _import_autoarray()
    from pipeline.io.store import open_imaging

    return to_autoarray(
        open_imaging(
            location, name, allow_incomplete=allow_incomplete, storage_options=storage_options
        )
    )


# ---------------------------------------------------------------------------------- from autoarray
def from_autoarray(
    imaging: autoarray.Imaging,
    *,
    name: str | None = None,
    check_noise_map: bool = True,
    backend: str = "numba",
) -> Imaging:
    """A lenspipe ``Imaging`` equal to an ``autoarray.Imaging``, with its sparse operator.

    Parameters
    ----------
    imaging
        An ``autoarray.Imaging`` (from autoarray, PyAutoLens or :func:`to_autoarray`), with
        ``convolve_over_sample_size_lp`` and ``_pixelization`` equal to 1 (a PSF sampled at
        sub-pixel resolution has no lenspipe counterpart).
    name
        The lenspipe dataset name (used in error messages and by ``lp.write_imaging``).
    check_noise_map
        Refuse noise <= 0 at unmasked pixels (autoarray does not record its own setting).
    backend
        ``"numba"``, ``"numpy"`` or ``"jax"``: the kernel used if W has to be recomputed.

    Returns
    -------
    Imaging
        Data, noise map, mask (pixel scales, origin), over-sampling sizes and covariance copied
        exactly; the PSF kernel as autoarray uses it, bit for bit: marked normalised (never
        divided again) if its values sum to 1 within 1e-9, else ``use_normalized_psf=False``.
        autoarray's explicit ``use_fft`` choice is carried over (``None`` when it left the default).

        autoarray's CPU operator (``SparseLinAlgImagingNumba``) is converted into lenspipe's band
        exactly (:meth:`OperatorLayout.from_autoarray_layout`): a round trip to the bit for one made
        by :func:`to_autoarray`. W is recomputed instead where the layout cannot hold the exact
        W: a PSF with negative pixels and no negative entry in the layout (autoarray's own
        ``apply_sparse_operator_cpu`` drops them: its W is wrong for such PSFs), or autoarray's
        JAX operator (it holds FFTs of the PSF, not W). ``psf_weighted_data`` (H^T N^-1 d) is
        computed from the arrays.
    """
    aa = _import_autoarray()
    if not isinstance(imaging, aa.Imaging):
        raise DatasetError(
            f"from_autoarray needs an autoarray.Imaging, got {type(imaging).__name__}"
        )
    label = _label(name)
    for what in ("convolve_over_sample_size_lp", "convolve_over_sample_size_pixelization"):
        if getattr(imaging, what, 1) != 1:
            raise DatasetError(
                f"{label}: the autoarray dataset has {what}={getattr(imaging, what)}; lenspipe "
                "convolves at image resolution only (1): rebuild it with a PSF at image resolution"
            )
    aa_mask = imaging.mask
    mask = Mask2D(_numpy(aa_mask).astype(bool), tuple(aa_mask.pixel_scales), tuple(aa_mask.origin))
    data = Array2D(_numpy(imaging.data.native), mask)
    noise_map = Array2D(_numpy(imaging.noise_map.native), mask)

    psf, normalised = None, False
    if imaging.psf is not None:
        kernel = imaging.psf.kernel
        values = _numpy(kernel.native)
        normalised = bool(abs(values.sum() - 1.0) <= NORMALISED_SUM_TOLERANCE)
        scales = tuple(kernel.pixel_scales)
        use_fft = getattr(imaging.psf, "_use_fft", None)  # its choice, None for its default
        psf = (
            Convolver.from_normalized_kernel(values, scales, use_fft=use_fft)
            if normalised
            else Convolver(values, use_fft=use_fft, pixel_scales=scales)
        )

    def sizes(value: Any) -> Any:
        return Array2D(_numpy(value.native), mask) if hasattr(value, "native") else value

    covariance = imaging.noise_covariance_matrix
    operator = None
    if imaging.sparse_operator is not None:
        operator = _operator_from(imaging.sparse_operator, data, noise_map, psf, label, backend)
    return Imaging(
        data,
        noise_map,
        psf,
        noise_covariance_matrix=None if covariance is None else np.array(covariance, copy=True),
        over_sample_size_lp=sizes(imaging.over_sample_size_lp),
        over_sample_size_pixelization=sizes(imaging.over_sample_size_pixelization),
        use_normalized_psf=normalised,
        check_noise_map=check_noise_map,
        sparse_operator=operator,
        name=name,
    )


def _operator_from(
    aa_operator: Any,
    data: Array2D,
    noise_map: Array2D,
    psf: Convolver | None,
    label: str,
    backend: str,
) -> ImagingSparseOperator:
    """Our operator for autoarray's: converted from its layout, or recomputed (see
    :func:`from_autoarray`)."""
    if psf is None:
        raise DatasetError(f"{label}: the autoarray dataset has a sparse operator but no PSF")
    kernel = psf.kernel.native
    mask = np.asarray(data.mask)
    layout = OperatorLayout(mask, psf.shape_native)
    stored = getattr(aa_operator, "psf_precision_operator_sparse", None)
    if stored is not None:
        stored = np.asarray(stored, dtype=np.float64)
        # negative W entries exist only for a PSF with negative pixels; none stored means dropped
        if not (np.any(kernel < 0) and not np.any(stored < 0)):
            band = layout.from_autoarray_layout(stored, aa_operator.indexes, aa_operator.lengths)
            return ImagingSparseOperator.from_stored_values(
                band,
                layout,
                kernel=kernel,
                noise_map_native=noise_map.native,
                data_native=data.native,
            )
        reason = "its PSF has negative pixels and its layout no negative entry of W"
    else:
        reason = f"a {type(aa_operator).__name__} holds no W"
    logger.info("%s: W recomputed by lenspipe (%s backend): %s", label, backend, reason)
    return ImagingSparseOperator.from_noise_map_and_psf(
        noise_map.native, kernel, mask, data.native, backend=backend
    )
