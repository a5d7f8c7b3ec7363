"""``Convolver``: the PSF kernel and masked convolution of images and mapping matrices.

Conventions (same as PyAutoArray):

* Kernel shapes are odd in both axes (non-square allowed); the centre is ``(ky // 2, kx // 2)``.
* **True convolution**: ``out[k] = sum_i in[i] K[k - i + c]`` (``scipy.signal.convolve(frame, K,
  mode="same")``), never correlation: an asymmetric kernel is flipped relative to correlation.
* Masks are True = masked; slim order is row-major over unmasked pixels.
* Light enters the mask only from the unmasked pixels and, if given, the *blurring* pixels (masked
  pixels within the kernel footprint of an unmasked pixel). Without a blurring image the light
  outside the mask is zero (silently: the reference library warns, we do not). Pixels beyond the
  blurring region never contribute.
* When unmasked pixels lie within ``k // 2`` of the array edge the blurring mask lives on a frame
  padded symmetrically with ``((dy // 2, dy - dy // 2), (dx // 2, dx - dx // 2))`` masked pixels
  (see :meth:`Mask2D.blurring_mask_from`); the image is placed in that frame the same way.

Differences from the reference: the caller's kernel is never normalised in place, non-finite and
all-zero kernels are rejected, only ``convolve_over_sample_size=1`` is supported, and ``use_fft``
chooses between two numpy methods that give the same values (the reference uses it on its JAX path
only).

The convolution itself (frames, pixel lists, the sparse matrix, direct and FFT methods) is
:mod:`pipeline.imaging.convolution`; this module holds the kernel and its PyAutoArray API.
"""

from __future__ import annotations

import numbers
import os

import numpy as np
import scipy.sparse as sp

from pipeline.exc import ArrayError, KernelError
from pipeline.imaging.arrays import Array2D
from pipeline.imaging.compat import check_xp, refuse_unless
from pipeline.imaging.convolution import (
    convolve_columns,
    frame_for,
    frame_pixels,
    sparse_convolution_matrix,
    validated_kernel,
)
from pipeline.imaging.geometry import as_pixel_scales, pixel_centre_coordinates
from pipeline.imaging.mask import Mask2D

__all__ = ["Convolver"]


class Convolver:
    """A PSF kernel sampled at pixel centres, with masked true convolution.

    Parameters
    ----------
    kernel
        Unmasked ``Array2D`` or 2-D array, odd shape; copied, never modified.
    state
        PyAutoArray's precomputed ``ConvolverState``, accepted only as None: lenspipe derives the
        padded frame from each call's mask and caches what it needs.
    normalize
        Divide the kernel by its sum (which must be non-zero).
    use_fft
        The convolution method of :meth:`convolved_image_from` and
        :meth:`convolved_mapping_matrix_from` when their ``method`` is not given: True = FFT,
        False = real space (direct), None = the cheaper of the two for each call ("auto"). As in
        the reference both give the same values (FFT to ~1e-16 of the peak); unlike the reference,
        the kernel must have odd shape either way.
    convolve_over_sample_size
        Only 1 is supported (kept for PyAutoArray compatibility).
    pixel_scales
        Keyword only: arcsec per pixel of a plain-array kernel (default 1.0); must agree with an
        ``Array2D``'s.
    """

    def __init__(
        self,
        kernel: Array2D | np.ndarray,
        state: object | None = None,
        normalize: bool = False,
        use_fft: bool | None = None,
        convolve_over_sample_size: int = 1,
        *,
        pixel_scales: float | tuple[float, float] | None = None,
    ):
        refuse_unless(
            state is None,
            KernelError,
            "Convolver",
            "state",
            state,
            "lenspipe's convolver needs no precomputed ConvolverState (it derives the frame from "
            "the mask of each call); omit it",
        )
        if use_fft is not None and not isinstance(use_fft, bool | np.bool_):
            raise KernelError(f"Convolver: use_fft must be True, False or None, got {use_fft!r}")
        if isinstance(convolve_over_sample_size, bool) or convolve_over_sample_size != 1:
            raise KernelError(
                f"convolve_over_sample_size={convolve_over_sample_size!r} is not supported: "
                "lenspipe convolves at image resolution only (1)"
            )
        if isinstance(kernel, Array2D):
            if not kernel.mask.is_all_false:
                raise KernelError("the PSF kernel Array2D must be unmasked (Array2D.no_mask)")
            scales = kernel.pixel_scales
            origin = kernel.origin
            if pixel_scales is not None and as_pixel_scales(pixel_scales) != scales:
                raise KernelError(
                    f"pixel_scales {pixel_scales!r} disagree with the kernel's {scales} arcsec"
                )
            values: np.ndarray = kernel.native
        else:
            scales = as_pixel_scales(1.0 if pixel_scales is None else pixel_scales)
            origin = (0.0, 0.0)
            values = kernel
        native = validated_kernel(values)
        if normalize:
            total = float(native.sum())
            if total == 0.0:
                raise KernelError("cannot normalize a PSF kernel whose values sum to zero")
            native = native / total
            native.flags.writeable = False
        self._native = native
        self._is_normalized = bool(normalize)
        self._pixel_scales = scales
        self._origin = origin
        self._use_fft = None if use_fft is None else bool(use_fft)
        self.convolve_over_sample_size = 1
        self._matrix_cache: tuple | None = None

    # ------------------------------------------------------------------ factories
    @classmethod
    def from_normalized_kernel(
        cls,
        kernel: np.ndarray,
        pixel_scales: float | tuple[float, float],
        *,
        use_fft: bool | None = None,
    ) -> Convolver:
        """A kernel that is already normalised (e.g. read back from a store): kept bit for bit and
        marked normalised, so ``use_normalized_psf`` never re-divides it. ``use_fft`` as in the
        constructor."""
        convolver = cls(kernel, use_fft=use_fft, pixel_scales=pixel_scales)
        convolver._is_normalized = True
        return convolver

    @classmethod
    def no_blur(cls, pixel_scales: float | tuple[float, float]) -> Convolver:
        """A 3x3 delta kernel: convolution is the identity."""
        kernel = np.zeros((3, 3))
        kernel[1, 1] = 1.0
        return cls(kernel, pixel_scales=pixel_scales)

    @classmethod
    def from_gaussian(
        cls,
        shape_native: tuple[int, int],
        pixel_scales: float | tuple[float, float],
        sigma: float,
        centre: tuple[float, float] = (0.0, 0.0),
        axis_ratio: float = 1.0,
        angle: float = 0.0,
        normalize: bool = False,
        convolve_over_sample_size: int = 1,
    ) -> Convolver:
        """An elliptical Gaussian ``exp(-r² / 2σ²) / (σ √(2π))`` at the pixel centres.

        Coordinates are arcsec, y up (row 0 on top), relative to ``centre`` ``(y, x)``; with
        ``angle`` φ in degrees counter-clockwise from +x, ``x' = x cos φ + y sin φ``,
        ``y' = -x sin φ + y cos φ`` and ``r² = x'² + (y' / axis_ratio)²`` (the reference's formula,
        which it evaluates through ``arctan2``; values agree to rounding).
        """
        if not (isinstance(sigma, numbers.Real) and sigma > 0):
            raise KernelError(f"sigma must be positive (arcsec), got {sigma!r}")
        if not axis_ratio > 0:
            raise KernelError(f"axis_ratio must be positive, got {axis_ratio!r}")
        scales = as_pixel_scales(pixel_scales)
        y, x = pixel_centre_coordinates(tuple(shape_native), scales)
        y, x = y - centre[0], x - centre[1]
        phi = np.radians(angle)
        xr = x * np.cos(phi) + y * np.sin(phi)
        yr = -x * np.sin(phi) + y * np.cos(phi)
        r2 = xr**2 + (yr / axis_ratio) ** 2
        values = np.exp(-0.5 * r2 / sigma**2) / (sigma * np.sqrt(2.0 * np.pi))
        return cls(
            values,
            normalize=normalize,
            convolve_over_sample_size=convolve_over_sample_size,
            pixel_scales=scales,
        )

    @classmethod
    def from_fits(
        cls,
        file_path: str | os.PathLike,
        hdu: int | str = 0,
        pixel_scales: float | tuple[float, float] = 1.0,
        origin: tuple[float, float] = (0.0, 0.0),
        normalize: bool = False,
    ) -> Convolver:
        """Read the kernel from a FITS image HDU (index or EXTNAME); ``origin`` ``(y, x)`` arcsec is
        that of :attr:`kernel` (it does not change convolution)."""
        from pipeline.io.fits import read_fits_array  # all FITS I/O lives in pipeline.io

        kernel = Array2D.no_mask(read_fits_array(file_path, hdu=hdu), pixel_scales, origin=origin)
        return cls(kernel, normalize=normalize)

    # ------------------------------------------------------------------ properties
    @property
    def kernel(self) -> Array2D:
        """The kernel as an unmasked ``Array2D`` (``.native`` is ``(ky, kx)``)."""
        return Array2D.no_mask(self._native, self._pixel_scales, origin=self._origin)

    @property
    def shape_native(self) -> tuple[int, int]:
        return (int(self._native.shape[0]), int(self._native.shape[1]))

    @property
    def kernel_shape_image_resolution(self) -> tuple[int, int]:
        """Same as :attr:`shape_native` (no PSF over-sampling)."""
        return self.shape_native

    @property
    def pixel_scales(self) -> tuple[float, float]:
        return self._pixel_scales

    @property
    def use_fft(self) -> bool | None:
        """The default convolution method: True = FFT, False = direct, None = auto."""
        return self._use_fft

    @property
    def is_normalized(self) -> bool:
        """True if this kernel was produced by normalisation (it is then never re-divided)."""
        return self._is_normalized

    @property
    def normalized(self) -> Convolver:
        """A Convolver with the kernel divided by its sum; this one is unchanged.

        Normalising a normalised kernel returns it as is: re-dividing by a sum that is 1 only to
        rounding would drift the values by ulps on every dataset rebuild (a reference bug).
        """
        if self._is_normalized:
            return self
        return Convolver(
            self.kernel, normalize=True, use_fft=self._use_fft, pixel_scales=self._pixel_scales
        )

    def __getstate__(self) -> dict:
        # the cached operator can be large: never ship it to Dask workers
        return {**self.__dict__, "_matrix_cache": None}

    def __repr__(self) -> str:
        return f"Convolver(shape_native={self.shape_native}, pixel_scales={self._pixel_scales})"

    # ------------------------------------------------------------------ convolution
    def convolved_image_from(
        self,
        image: Array2D | np.ndarray,
        blurring_image: Array2D | np.ndarray | None = None,
        jax_method: str = "direct",
        use_mixed_precision: bool = False,
        mask: Mask2D | None = None,
        xp: object = np,
        *,
        method: str | None = None,
    ) -> Array2D:
        """Convolve a masked image, adding the light of ``blurring_image`` from outside the mask.

        Parameters
        ----------
        image
            ``Array2D`` on mask M, or slim values with ``mask``.
        blurring_image
            ``Array2D`` on ``M.blurring_mask_from(self.shape_native)`` (possibly a padded frame),
            or slim values over that mask. None: the light outside M is zero.
        jax_method, use_mixed_precision, xp
            PyAutoArray's JAX options, accepted only at their defaults (``"direct"``, False,
            numpy): lenspipe convolves with numpy in float64; choose the method with ``method``.
        mask
            M, when ``image`` is a plain array (else it must equal ``image.mask``).
        method
            Keyword only: ``"direct"`` (real-space ``scipy.signal.convolve``), ``"fft"`` (errors
            ~1e-16 of the peak) or ``"auto"`` (the cheaper of the two for this kernel and mask).
            None: the convolver's ``use_fft`` choice.

        Returns
        -------
        Array2D
            The convolved image on M, slim order.
        """
        method = self._method(method, jax_method, use_mixed_precision, xp, "convolved_image_from")
        if isinstance(image, Array2D):
            if mask is not None and not np.array_equal(np.asarray(mask), np.asarray(image.mask)):
                raise ArrayError("mask differs from image.mask")
            mask = image.mask
        elif mask is None:
            raise ArrayError("convolved_image_from: a plain-array image needs mask=")
        values = np.asarray(image, dtype=np.float64)
        if values.shape != (mask.pixels_in_mask,):
            raise ArrayError(
                f"image has shape {values.shape}, the mask has {mask.pixels_in_mask} pixels"
            )
        given = blurring_image.mask if isinstance(blurring_image, Array2D) else None
        frame_mask, bmask = frame_for(mask, self.shape_native, given, blurring_image is not None)
        if blurring_image is not None:
            assert bmask is not None  # _frame derives one whenever a blurring image is given
            blur = np.asarray(blurring_image, dtype=np.float64)
            if blur.shape != (int((~bmask).sum()),):
                raise ArrayError(f"blurring_image of shape {blur.shape} does not fit its mask")
            values = np.concatenate([values, blur])
        src, tgt = frame_pixels(frame_mask, bmask)
        out = convolve_columns(self._native, values[:, None], src, tgt, method)
        return Array2D(out[:, 0], mask)

    def convolved_mapping_matrix_from(
        self,
        mapping_matrix: np.ndarray | sp.sparray | sp.spmatrix,
        mask: Mask2D,
        blurring_mapping_matrix: np.ndarray | sp.sparray | sp.spmatrix | None = None,
        blurring_mask: Mask2D | None = None,
        jax_method: str = "direct",
        use_mixed_precision: bool = False,
        xp: object = np,
        *,
        method: str | None = None,
    ) -> np.ndarray:
        """Convolve every column of a mapping matrix (each column a slim image on ``mask``).

        Parameters
        ----------
        mapping_matrix
            ``(N, S)`` dense or scipy.sparse; rows in the slim order of ``mask``.
        mask
            True = masked, ``N`` unmasked pixels.
        blurring_mapping_matrix
            ``(N_blur, S)`` rows over ``blurring_mask`` (default
            ``mask.blurring_mask_from(self.shape_native)``). None: no light from outside the mask.
        jax_method, use_mixed_precision, xp
            PyAutoArray's JAX options, accepted only at their defaults (``"direct"``, False,
            numpy).
        method
            Keyword only: ``"direct"``: ``B @ [A; A_blur]`` with :func:`convolution_matrix_from`;
            ``"fft"``: batched real FFTs; ``"auto"``: the cheaper. Both agree to ~1e-16 relative.
            None: the convolver's ``use_fft`` choice.

        Returns
        -------
        numpy.ndarray
            ``(N, S)`` float64 blurred mapping matrix.
        """
        method = self._method(
            method, jax_method, use_mixed_precision, xp, "convolved_mapping_matrix_from"
        )
        n = int(np.count_nonzero(~np.asarray(mask, dtype=bool)))
        if mapping_matrix.ndim != 2 or mapping_matrix.shape[0] != n:
            raise ArrayError(f"mapping_matrix of shape {mapping_matrix.shape} needs {n} rows")
        frame_mask, bmask = frame_for(
            mask, self.shape_native, blurring_mask, blurring_mapping_matrix is not None
        )
        values = mapping_matrix
        if blurring_mapping_matrix is not None:
            assert bmask is not None  # _frame derives one whenever a blurring matrix is given
            n_blur = int((~bmask).sum())
            if blurring_mapping_matrix.shape != (n_blur, mapping_matrix.shape[1]):
                raise ArrayError(
                    f"blurring_mapping_matrix of shape {blurring_mapping_matrix.shape} needs shape "
                    f"{(n_blur, mapping_matrix.shape[1])}"
                )
            if sp.issparse(mapping_matrix) or sp.issparse(blurring_mapping_matrix):
                values = sp.vstack([mapping_matrix, blurring_mapping_matrix], format="csr")
            else:
                values = np.vstack([mapping_matrix, blurring_mapping_matrix])
        if not sp.issparse(values):
            values = np.asarray(values, dtype=np.float64)
        src, tgt = frame_pixels(frame_mask, bmask)
        return convolve_columns(
            self._native, values, src, tgt, method, lambda: self._matrix(frame_mask, bmask)
        )

    def _method(
        self,
        method: str | None,
        jax_method: str,
        use_mixed_precision: bool,
        xp: object,
        where: str,
    ) -> str:
        where = f"Convolver.{where}"
        refuse_unless(
            jax_method == "direct",
            KernelError,
            where,
            "jax_method",
            jax_method,
            "it picks jax.scipy.signal.convolve's method on the reference's JAX path, which "
            "lenspipe does not have; choose the method with method='direct'/'fft'/'auto' or "
            "Convolver(use_fft=...)",
        )
        refuse_unless(
            not use_mixed_precision,
            KernelError,
            where,
            "use_mixed_precision",
            use_mixed_precision,
            "lenspipe convolves in float64 only",
        )
        check_xp(xp, KernelError, where)
        if method is not None:
            return method
        return {None: "auto", True: "fft", False: "direct"}[self._use_fft]

    def _matrix(self, frame_mask: np.ndarray, bmask: np.ndarray | None) -> sp.csr_matrix:
        # one entry: an inversion blurs a new mapping matrix on the same mask at every step
        key = (frame_mask.shape, frame_mask.tobytes(), None if bmask is None else bmask.tobytes())
        cached = self._matrix_cache
        if cached is None or cached[0] != key:
            src, tgt = frame_pixels(frame_mask, bmask)
            cached = (key, sparse_convolution_matrix(self._native, src, tgt, frame_mask.shape))
            self._matrix_cache = cached
        return cached[1]
