"""``Imaging``: an imaging dataset (data, noise map, PSF) with its mask, grids and over-sampling.

Mirrors ``autolens.Imaging`` (PyAutoArray) call for call, with the deliberate differences of
DESIGN §7: inputs are never mutated (the PSF is normalised into a copy), NaN/inf data or noise at
unmasked pixels is an error naming the pixel, a noise map derived from a covariance is the square
root of its diagonal, masks of the wrong shape or pixel scale are refused, over-sample sizes accept
numpy integers and reject values < 1, and ``trimmed_after_convolution_from`` returns a fully
consistent dataset.

Every method returns a new ``Imaging``; an ``Imaging`` is never modified after construction.
"""

from __future__ import annotations

import logging
import os
from functools import cached_property
from typing import Any

import numpy as np

from pipeline.exc import DatasetError, KernelError, MaskError, OverSamplingError
from pipeline.imaging.arrays import Array2D
from pipeline.imaging.checks import check_finite, check_positive, checked_covariance
from pipeline.imaging.convolver import Convolver
from pipeline.imaging.grids import Grid2D, GridsDataset
from pipeline.imaging.mask import Mask2D
from pipeline.imaging.over_sampling import over_sample_size_from

__all__ = ["Imaging"]

logger = logging.getLogger(__name__)

_UNSET: Any = object()


class Imaging:
    """An imaging dataset.

    Parameters
    ----------
    data
        The image (electrons per second recommended) as an ``Array2D``; its mask is the dataset
        mask (True = masked).
    noise_map
        RMS noise per pixel, same frame as ``data``. If omitted, the square root of the diagonal
        of ``noise_covariance_matrix``.
    psf
        The PSF ``Convolver`` (odd kernel). Normalised to unit sum in a copy when
        ``use_normalized_psf``.
    psf_setup_state
        Accepted for API compatibility; lenspipe's convolver needs no precomputed state.
    noise_covariance_matrix
        ``(N, N)`` covariance over the unmasked pixels in slim order (for an unmasked dataset:
        over the full frame, row-major).
    over_sample_size_lp, over_sample_size_pixelization
        Integer >= 1 or per-pixel sizes (slim, native or ``Array2D``) of the two grids.
    convolve_over_sample_size_lp, convolve_over_sample_size_pixelization
        Must be 1: PSFs sampled at sub-pixel resolution are not supported (they are incompatible
        with the sparse operator this package exists to build).
    use_normalized_psf
        Normalise the PSF kernel to unit sum.
    check_noise_map
        Refuse noise <= 0 at unmasked pixels.
    sparse_operator
        A precomputed ``ImagingSparseOperator`` for this dataset (see ``apply_sparse_operator``).
    name
        Dataset name used in error messages (lenspipe addition, keyword only).
    """

    def __init__(
        self,
        data: Array2D,
        noise_map: Array2D | None = None,
        psf: Convolver | None = None,
        psf_setup_state: bool = False,
        noise_covariance_matrix: np.ndarray | None = None,
        over_sample_size_lp: int | np.ndarray | Array2D = 4,
        over_sample_size_pixelization: int | np.ndarray | Array2D = 4,
        convolve_over_sample_size_lp: int = 1,
        convolve_over_sample_size_pixelization: int = 1,
        use_normalized_psf: bool = True,
        check_noise_map: bool = True,
        sparse_operator: Any = None,
        *,
        name: str | None = None,
    ):
        self.name = name
        label = self._label()
        if not isinstance(data, Array2D):
            raise DatasetError(
                f"{label}: data must be an Array2D (values with a Mask2D), got {type(data).__name__}; "
                "wrap it with Array2D.no_mask(values, pixel_scales)"
            )
        for what, value in (
            ("convolve_over_sample_size_lp", convolve_over_sample_size_lp),
            ("convolve_over_sample_size_pixelization", convolve_over_sample_size_pixelization),
        ):
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise OverSamplingError(f"{label}: {what} must be an integer, got {value!r}")
            if value != 1:
                raise OverSamplingError(
                    f"{label}: {what}={value} is not supported: lenspipe convolves at image "
                    "resolution (PSFs sampled at sub-pixel resolution cannot be used with the "
                    "sparse operator); use 1"
                )
        mask = data.mask
        self.data = data
        self.noise_covariance_matrix = checked_covariance(noise_covariance_matrix, mask, label)
        if noise_map is None:
            if self.noise_covariance_matrix is None:
                raise DatasetError(
                    f"{label}: no noise_map and no noise_covariance_matrix was given; pass one"
                )
            noise_map = Array2D(np.sqrt(np.diag(self.noise_covariance_matrix)), mask)
        elif not isinstance(noise_map, Array2D):
            raise DatasetError(
                f"{label}: noise_map must be an Array2D, got {type(noise_map).__name__}"
            )
        if noise_map.shape_native != data.shape_native:
            raise DatasetError(
                f"{label}: noise_map must have the same shape as data; data is "
                f"{data.shape_native}, noise_map is {noise_map.shape_native}"
            )
        if not np.array_equal(np.asarray(noise_map.mask), np.asarray(mask)):
            noise_map = Array2D(noise_map.native, mask)
        self.noise_map = noise_map
        check_finite(data, "data", label)
        check_finite(noise_map, "noise_map", label)
        self.check_noise_map = check_noise_map
        if check_noise_map:
            check_positive(noise_map, label)

        self.over_sample_size_lp = over_sample_size_from(
            over_sample_size_lp, mask, f"{label}: over_sample_size_lp"
        )
        self.over_sample_size_pixelization = over_sample_size_from(
            over_sample_size_pixelization, mask, f"{label}: over_sample_size_pixelization"
        )
        self.convolve_over_sample_size_lp = 1
        self.convolve_over_sample_size_pixelization = 1
        self.psf_setup_state = psf_setup_state
        self.use_normalized_psf = use_normalized_psf
        if psf is not None:
            if not isinstance(psf, Convolver):
                raise DatasetError(f"{label}: psf must be a Convolver, got {type(psf).__name__}")
            ky, kx = psf.shape_native
            ny, nx = data.shape_native
            if ky > ny or kx > nx:
                raise KernelError(
                    f"{label}: the PSF kernel {psf.shape_native} is larger than the image "
                    f"{data.shape_native}"
                )
            if use_normalized_psf:
                psf = psf.normalized
        self.psf = psf
        self.grids = GridsDataset(
            mask, self.over_sample_size_lp, self.over_sample_size_pixelization, psf
        )
        self.sparse_operator = sparse_operator

    def _label(self) -> str:
        return f"dataset '{self.name}'" if self.name else "dataset"

    def __repr__(self) -> str:
        psf = self.psf.shape_native if self.psf is not None else None
        return (
            f"Imaging(name={self.name!r}, shape_native={self.shape_native}, "
            f"shape_slim={self.shape_slim}, pixel_scales={self.pixel_scales}, psf={psf}, "
            f"sparse_operator={'yes' if self.sparse_operator is not None else 'no'})"
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_fits(
        cls,
        pixel_scales: float | tuple[float, float] | str,
        data_path: str | os.PathLike,
        noise_map_path: str | os.PathLike | None = None,
        data_hdu: int | str = 0,
        noise_map_hdu: int | str = 0,
        psf_path: str | os.PathLike | None = None,
        psf_hdu: int | str = 0,
        noise_covariance_matrix: np.ndarray | None = None,
        check_noise_map: bool = True,
        over_sample_size_lp: int | np.ndarray | Array2D = 4,
        over_sample_size_pixelization: int | np.ndarray | Array2D = 4,
        convolve_over_sample_size_lp: int = 1,
        convolve_over_sample_size_pixelization: int = 1,
        psf_pixel_scales: float | tuple[float, float] | None = None,
        *,
        name: str | None = None,
    ) -> Imaging:
        """Load a dataset from FITS files; HDUs by index or EXTNAME.

        ``pixel_scales`` is arcsec per pixel, or ``"header"`` to read it from the data HDU
        (``PIXSCAY``/``PIXSCAX`` or the WCS). No mask is read: load one with
        ``Mask2D.from_fits`` and ``apply_mask`` it. FITS problems raise
        :class:`~pipeline.exc.FitsReadError` naming the file and HDU.
        """
        from pipeline.io.fits import pixel_scales_from_header, read_fits_array

        if isinstance(pixel_scales, str):
            if pixel_scales != "header":
                raise DatasetError(
                    f"pixel_scales must be a number, a (y, x) pair or 'header', got {pixel_scales!r}"
                )
            pixel_scales = pixel_scales_from_header(data_path, hdu=data_hdu, dataset=name)
        data_values = read_fits_array(data_path, hdu=data_hdu, dataset=name)
        data = Array2D.no_mask(data_values, pixel_scales)
        noise_map = None
        if noise_map_path is not None:
            noise_values = read_fits_array(noise_map_path, hdu=noise_map_hdu, dataset=name)
            noise_map = Array2D.no_mask(noise_values, pixel_scales)
        psf = None
        if psf_path is not None:
            kernel = read_fits_array(psf_path, hdu=psf_hdu, dataset=name)
            psf = Convolver(kernel, pixel_scales=psf_pixel_scales or pixel_scales)
        return cls(
            data=data,
            noise_map=noise_map,
            psf=psf,
            noise_covariance_matrix=noise_covariance_matrix,
            over_sample_size_lp=over_sample_size_lp,
            over_sample_size_pixelization=over_sample_size_pixelization,
            convolve_over_sample_size_lp=convolve_over_sample_size_lp,
            convolve_over_sample_size_pixelization=convolve_over_sample_size_pixelization,
            check_noise_map=check_noise_map,
            name=name,
        )

    def _replace(
        self,
        *,
        data: Array2D = _UNSET,
        noise_map: Array2D = _UNSET,
        noise_covariance_matrix: np.ndarray | None = _UNSET,
        over_sample_size_lp: Any = _UNSET,
        over_sample_size_pixelization: Any = _UNSET,
        check_noise_map: bool = _UNSET,
        sparse_operator: Any = None,
    ) -> Imaging:
        def pick(value, current):
            return current if value is _UNSET else value

        return Imaging(
            data=pick(data, self.data),
            noise_map=pick(noise_map, self.noise_map),
            psf=self.psf,
            psf_setup_state=self.psf_setup_state,
            noise_covariance_matrix=pick(noise_covariance_matrix, self.noise_covariance_matrix),
            over_sample_size_lp=pick(over_sample_size_lp, self.over_sample_size_lp),
            over_sample_size_pixelization=pick(
                over_sample_size_pixelization, self.over_sample_size_pixelization
            ),
            use_normalized_psf=self.use_normalized_psf,
            # kept unless changed: every apply_* used to drop it, so stores recorded false
            check_noise_map=pick(check_noise_map, self.check_noise_map),
            sparse_operator=sparse_operator,
            name=self.name,
        )

    def _drop_operator_warning(self, method: str) -> None:
        if self.sparse_operator is not None:
            logger.warning(
                "%s: %s discards the sparse operator; call apply_sparse_operator last",
                self._label(),
                method,
            )

    # ------------------------------------------------------------------ methods
    def apply_mask(self, mask: Mask2D) -> Imaging:
        """A new dataset restricted to ``mask``'s unmasked pixels (True = masked).

        The mask must have the dataset's shape and pixel scales and may only shrink the unmasked
        region. The covariance keeps the rows/columns of the pixels that stay unmasked; the
        sparse operator is discarded (logged).
        """
        label = self._label()
        if not isinstance(mask, Mask2D):
            raise MaskError(f"{label}: apply_mask needs a Mask2D, got {type(mask).__name__}")
        self.mask.check_compatible(mask, f"{label}: the mask")
        newly_unmasked = np.asarray(self.mask) & ~np.asarray(mask)
        if newly_unmasked.any():
            row, col = np.argwhere(newly_unmasked)[0]
            raise DatasetError(
                f"{label}: the new mask unmasks {int(newly_unmasked.sum())} pixels that are already "
                f"masked in the dataset (first at row {row}, col {col}); masks can only shrink the "
                "unmasked region: reload the dataset to use a larger mask"
            )
        self._drop_operator_warning("apply_mask")
        # the mask's origin, as the reference (its grids move with it)
        mask = Mask2D(mask, self.pixel_scales, mask.origin)
        covariance = self.noise_covariance_matrix
        if covariance is not None:
            keep = ~np.asarray(mask)[tuple(self.mask.native_for_slim.T)]
            covariance = covariance[np.ix_(keep, keep)]
        return Imaging(
            data=Array2D(self.data.native, mask),
            noise_map=Array2D(self.noise_map.native, mask),
            psf=self.psf,
            psf_setup_state=True,
            noise_covariance_matrix=covariance,
            over_sample_size_lp=Array2D(self.over_sample_size_lp.native, mask),
            over_sample_size_pixelization=Array2D(self.over_sample_size_pixelization.native, mask),
            use_normalized_psf=self.use_normalized_psf,
            check_noise_map=self.check_noise_map,
            name=self.name,
        )

    def apply_noise_scaling(
        self,
        mask: Mask2D,
        noise_value: float = 1e8,
        signal_to_noise_value: float | None = None,
        should_zero_data: bool = True,
    ) -> Imaging:
        """Down-weight the pixels where ``mask`` is **False** instead of masking them.

        Their noise becomes ``noise_value``, or, if ``signal_to_noise_value`` is given,
        ``median(data over the edge pixels of that region) / signal_to_noise_value``; their data are
        zeroed if ``should_zero_data``. The dataset mask is unchanged; the sparse operator is
        discarded (logged).
        """
        label = self._label()
        self.mask.check_compatible(mask, f"{label}: the noise-scaling mask")
        region = ~np.asarray(mask)
        if signal_to_noise_value is not None:
            edge_pixels = ~np.asarray(mask.edge)
            noise_value = float(np.median(self.data.native[edge_pixels])) / signal_to_noise_value
        noise = self.noise_map.native.astype(np.float64)
        noise[region] = noise_value
        data = self.data.native.astype(np.float64)
        if should_zero_data:
            data[region] = 0.0
        self._drop_operator_warning("apply_noise_scaling")
        return self._replace(data=Array2D(data, self.mask), noise_map=Array2D(noise, self.mask))

    def apply_over_sampling(
        self,
        over_sample_size_lp: int | np.ndarray | Array2D | None = None,
        over_sample_size_pixelization: int | np.ndarray | Array2D | None = None,
    ) -> Imaging:
        """New over-sampling sizes (``None`` keeps the current ones); the sparse operator is kept,
        since over-sampling does not change W."""
        return self._replace(
            over_sample_size_lp=(
                self.over_sample_size_lp if over_sample_size_lp is None else over_sample_size_lp
            ),
            over_sample_size_pixelization=(
                self.over_sample_size_pixelization
                if over_sample_size_pixelization is None
                else over_sample_size_pixelization
            ),
            sparse_operator=self.sparse_operator,
        )

    def apply_sparse_operator(
        self,
        batch_size: int = 128,
        *,
        backend: str = "jax",
        dtype: np.dtype | type = np.float64,
        n_threads: int | None = None,
    ) -> Imaging:
        """A new dataset carrying its sparse operator W = H^T N^-1 H (JAX by default).

        W is computed exactly (negative entries kept) in batches of ``batch_size`` unmasked pixels
        (rows of W); ``backend`` may be ``"jax"``, ``"numba"`` or ``"numpy"``, all equal to
        ~1e-15. ``dtype=np.float32`` stores float64-computed values in float32. ``n_threads``
        (default: every core this process may use) threads share the batches of the numpy and
        numba backends, with the same result whatever the count (JAX sizes its own thread pool).
        Call it last: ``apply_mask`` and ``apply_noise_scaling`` discard the operator.
        """
        from pipeline.operators import ImagingSparseOperator

        if self.psf is None:
            raise DatasetError(
                f"{self._label()}: the sparse operator needs a PSF; load one (psf_path=...)"
            )
        operator = ImagingSparseOperator.from_noise_map_and_psf(
            self.noise_map.native,
            self.psf.kernel.native,
            np.asarray(self.mask),
            self.data.native,
            backend=backend,
            batch_size=batch_size,
            dtype=dtype,
            n_threads=n_threads,
        )
        return self._replace(sparse_operator=operator)

    def apply_sparse_operator_cpu(
        self, *, dtype: np.dtype | type = np.float64, n_threads: int | None = None
    ) -> Imaging:
        """As :meth:`apply_sparse_operator` with the fastest CPU kernel: the numpy backend (BLAS
        products, or a DFT along x for kernels from 17x17), 1024 rows per batch, on ``n_threads``
        threads (default: every core this process may use)."""
        return self.apply_sparse_operator(
            batch_size=1024, backend="numpy", dtype=dtype, n_threads=n_threads
        )

    def trimmed_after_convolution_from(self, kernel_shape: tuple[int, int]) -> Imaging:
        """The dataset with ``ceil(k / 2) - 1`` pixels cut from every side (the border that PSF
        convolution of a model image cannot predict); mask centre-cropped, grids, covariance and
        PSF consistent with the trimmed frame, sparse operator discarded (logged)."""
        data = self.data.trimmed_after_convolution_from(kernel_shape)
        new_mask = data.mask
        covariance = self.noise_covariance_matrix
        if covariance is not None:
            ky, kx = kernel_shape
            cut_y, cut_x = int(np.ceil(ky / 2)) - 1, int(np.ceil(kx / 2)) - 1
            rows, cols = self.mask.native_for_slim.T
            inside = (
                (rows >= cut_y)
                & (rows < self.shape_native[0] - cut_y)
                & (cols >= cut_x)
                & (cols < self.shape_native[1] - cut_x)
            )
            inside[inside] = ~np.asarray(new_mask)[rows[inside] - cut_y, cols[inside] - cut_x]
            covariance = covariance[np.ix_(inside, inside)]
        self._drop_operator_warning("trimmed_after_convolution_from")
        return self._replace(
            data=data,
            noise_map=self.noise_map.trimmed_after_convolution_from(kernel_shape),
            noise_covariance_matrix=covariance,
            over_sample_size_lp=self.over_sample_size_lp.trimmed_after_convolution_from(
                kernel_shape
            ),
            over_sample_size_pixelization=(
                self.over_sample_size_pixelization.trimmed_after_convolution_from(kernel_shape)
            ),
            check_noise_map=self.check_noise_map,
        )

    # ------------------------------------------------------------------ attributes
    @property
    def mask(self) -> Mask2D:
        """The dataset mask (True = masked), that of ``data``."""
        return self.data.mask

    @property
    def shape_native(self) -> tuple[int, int]:
        return self.mask.shape_native

    @property
    def shape_slim(self) -> int:
        """Number of unmasked pixels N."""
        return self.data.shape_slim

    @property
    def pixel_scales(self) -> tuple[float, float]:
        """``(sy, sx)`` arcsec per pixel."""
        return self.mask.pixel_scales

    @property
    def grid(self) -> Grid2D:
        """Same as ``grids.lp``."""
        return self.grids.lp

    @property
    def signal_to_noise_map(self) -> Array2D:
        """``data / noise_map`` with negative values set to 0 (slim over unmasked pixels)."""
        snr = np.asarray(self.data.slim, dtype=np.float64) / np.asarray(self.noise_map.slim)
        return Array2D(np.where(snr < 0.0, 0.0, snr), self.mask)

    @property
    def signal_to_noise_max(self) -> float:
        return float(np.max(self.signal_to_noise_map.slim))

    @cached_property
    def noise_covariance_matrix_inv(self) -> np.ndarray:
        """Inverse of the noise covariance matrix."""
        if self.noise_covariance_matrix is None:
            raise DatasetError(f"{self._label()}: there is no noise_covariance_matrix to invert")
        return np.linalg.inv(self.noise_covariance_matrix)
