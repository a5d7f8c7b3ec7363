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
"""

from __future__ import annotations

import math
import numbers
import os

import numpy as np
import scipy.fft
import scipy.signal
import scipy.sparse as sp

from pipeline.exc import ArrayError, KernelError
from pipeline.imaging.arrays import Array2D
from pipeline.imaging.compat import check_xp, refuse_unless
from pipeline.imaging.frames import blurring_mask_from, required_shape_for_kernel
from pipeline.imaging.geometry import as_pixel_scales, pixel_centre_coordinates
from pipeline.imaging.mask import Mask2D

__all__ = ["Convolver", "convolution_matrix_from"]

_METHODS = ("auto", "direct", "fft")
_FFT_BATCH_BYTES = 64 * 2**20  # bounds the complex (batch, Ly, Lx // 2 + 1) stack of the FFT path


def _validated_kernel(values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 2:
        raise KernelError(f"PSF kernel must be 2-D, got an array of shape {arr.shape}")
    if arr.shape[0] % 2 == 0 or arr.shape[1] % 2 == 0:
        raise KernelError(
            f"PSF kernel shape {arr.shape} must be odd in both axes so that it has a centre pixel "
            "(ky // 2, kx // 2); crop or pad it by one row/column"
        )
    arr = np.array(arr, dtype=np.float64, copy=True)
    bad = ~np.isfinite(arr)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise KernelError(f"PSF kernel has {int(bad.sum())} NaN/inf values, first at {(row, col)}")
    if not arr.any():
        raise KernelError(f"PSF kernel of shape {arr.shape} is all zeros")
    arr.flags.writeable = False
    return arr


def _frame(
    mask: np.ndarray, kernel_shape: tuple[int, int], blurring_mask: np.ndarray | None, derive: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """The mask embedded in the blurring mask's frame, and that blurring mask (derived without a
    warning when ``derive`` and none is given)."""
    mask = np.asarray(mask, dtype=bool)
    if blurring_mask is None and derive:
        shape = required_shape_for_kernel(mask, kernel_shape)
    elif blurring_mask is not None:
        blurring_mask = np.asarray(blurring_mask, dtype=bool)
        shape = blurring_mask.shape
    else:
        return mask, None
    dy, dx = shape[0] - mask.shape[0], shape[-1] - mask.shape[1]
    if blurring_mask is not None and (blurring_mask.ndim != 2 or dy < 0 or dx < 0):
        raise ArrayError(
            f"blurring mask of shape {blurring_mask.shape} cannot hold the {mask.shape} mask; "
            "derive it with mask.blurring_mask_from(psf.shape_native)"
        )
    if dy or dx:
        pad = ((dy // 2, dy - dy // 2), (dx // 2, dx - dx // 2))
        mask = np.pad(mask, pad, constant_values=True)
    if blurring_mask is None:
        # the mask is already padded, so this derivation neither pads nor warns
        blurring_mask = blurring_mask_from(mask, kernel_shape)
    elif np.any(~mask & ~blurring_mask):
        raise ArrayError("blurring mask unmasks pixels that are unmasked in the image mask")
    return mask, blurring_mask


def _pixels(frame_mask: np.ndarray, blurring_mask: np.ndarray | None):
    """(row, col) of the sources (unmasked then blurring pixels, slim order) and of the targets."""
    tgt = np.nonzero(~frame_mask)
    if blurring_mask is None:
        return tgt, tgt
    b = np.nonzero(~blurring_mask)
    return (np.concatenate([tgt[0], b[0]]), np.concatenate([tgt[1], b[1]])), tgt


def _matrix(kernel: np.ndarray, src, tgt, frame_shape: tuple[int, int]) -> sp.csr_matrix:
    cy, cx = kernel.shape[0] // 2, kernel.shape[1] // 2
    # slim index of each target in a frame padded by the kernel half-width: -1 = no target there
    slim = np.full((frame_shape[0] + 2 * cy, frame_shape[1] + 2 * cx), -1, dtype=np.int64)
    slim[tgt[0] + cy, tgt[1] + cx] = np.arange(tgt[0].size)
    a, b = np.nonzero(kernel)
    targets = slim[src[0][:, None] + a[None, :], src[1][:, None] + b[None, :]]  # (n_src, nnz K)
    hit = targets >= 0
    # column-major assembly needs no sort: each source's entries are contiguous
    indptr = np.concatenate([[0], np.cumsum(hit.sum(axis=1))])
    vals = np.broadcast_to(kernel[a, b], targets.shape)[hit]
    return sp.csc_matrix((vals, targets[hit], indptr), shape=(tgt[0].size, src[0].size)).tocsr()


def _convolve(kernel, values, src, tgt, method: str, matrix=None) -> np.ndarray:
    """Convolve the columns of ``values`` (n_src, S) given at pixels ``src`` and read them at
    ``tgt``. ``matrix()`` returns the sparse operator for the direct path of a mapping matrix;
    without it (an image) the direct path is ``scipy.signal.convolve``."""
    if method not in _METHODS:
        raise KernelError(f"method must be one of {_METHODS}, got {method!r}")
    ky, kx = kernel.shape
    n_cols = values.shape[1]
    if tgt[0].size == 0:
        return np.zeros((0, n_cols))
    y0, x0 = int(src[0].min()), int(src[1].min())
    hy, hx = int(src[0].max()) - y0 + 1, int(src[1].max()) - x0 + 1
    # L >= box + k // 2 keeps circular wrap-around off every target (targets lie inside the box)
    ly = scipy.fft.next_fast_len(max(hy + ky // 2, ky))
    lx = scipy.fft.next_fast_len(max(hx + kx // 2, kx), real=True)
    if method == "auto":
        # unit costs measured with numpy 2.4 / scipy 1.17: a real-space multiply-add costs ~9x
        # (scipy direct) or ~0.4x per column (sparse @ dense) an FFT "L log L" unit; a sparse @
        # sparse product ~20x per stored entry of the mapping matrix
        fft_cost = n_cols * ly * lx * math.log2(ly * lx)
        if matrix is None:
            direct_cost = 9.0 * hy * hx * np.count_nonzero(kernel)
        else:
            per_col = 20.0 * values.nnz / values.shape[0] if sp.issparse(values) else 0.4 * n_cols
            direct_cost = tgt[0].size * np.count_nonzero(kernel) * per_col
        method = "direct" if direct_cost <= fft_cost else "fft"
    if method == "direct" and matrix is not None:
        out = matrix() @ values
        return np.asarray(out.toarray() if sp.issparse(out) else out, dtype=np.float64)
    sr, sc = src[0] - y0, src[1] - x0
    tr, tc = tgt[0] - y0, tgt[1] - x0
    if method == "direct":
        box = np.zeros((hy, hx))
        box[sr, sc] = values[:, 0]
        conv = scipy.signal.convolve(box, kernel, mode="same", method="direct")
        return conv[tr, tc][:, None]
    values = values.tocsc() if sp.issparse(values) else values
    kernel_ft = scipy.fft.rfft2(kernel, s=(ly, lx))
    batch = max(1, _FFT_BATCH_BYTES // (16 * ly * (lx // 2 + 1)))
    out = np.empty((tgt[0].size, n_cols), dtype=np.float64)
    for j0 in range(0, n_cols, batch):
        block = values[:, j0 : j0 + batch]
        block = block.toarray() if sp.issparse(block) else np.asarray(block, dtype=np.float64)
        stack = np.zeros((block.shape[1], ly, lx))
        stack[:, sr, sc] = block.T
        conv = scipy.fft.irfft2(scipy.fft.rfft2(stack) * kernel_ft, s=(ly, lx))
        out[:, j0 : j0 + block.shape[1]] = conv[:, tr + ky // 2, tc + kx // 2].T
    return out


def convolution_matrix_from(
    kernel_native: np.ndarray, mask: np.ndarray, blurring_mask: np.ndarray | None = None
) -> sp.csr_matrix:
    """The sparse true-convolution operator ``B[k, i] = K[k - i + c]`` restricted to a mask.

    Parameters
    ----------
    kernel_native
        ``(ky, kx)`` kernel, odd shape.
    mask
        True = masked; rows ``k`` of ``B`` are its unmasked pixels in slim order.
    blurring_mask
        Optional blurring mask (same frame, or the padded frame of
        :meth:`Mask2D.blurring_mask_from`).

    Returns
    -------
    scipy.sparse.csr_matrix
        ``(N, N)``, or ``(N, N + N_blur)`` with a blurring mask: columns are the unmasked pixels
        (slim order) then the blurring pixels (the blurring mask's slim order). Zero kernel
        pixels and off-array targets give no entry; negative kernel values are kept.
    """
    kernel = _validated_kernel(kernel_native)
    frame_mask, bmask = _frame(mask, kernel.shape, blurring_mask, derive=False)
    src, tgt = _pixels(frame_mask, bmask)
    return _matrix(kernel, src, tgt, frame_mask.shape)


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
        native = _validated_kernel(values)
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
        cls, kernel: np.ndarray, pixel_scales: float | tuple[float, float]
    ) -> Convolver:
        """A kernel that is already normalised (e.g. read back from a store): kept bit for bit and
        marked normalised, so ``use_normalized_psf`` never re-divides it."""
        convolver = cls(kernel, pixel_scales=pixel_scales)
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
        frame_mask, bmask = _frame(mask, self.shape_native, given, blurring_image is not None)
        if blurring_image is not None:
            assert bmask is not None  # _frame derives one whenever a blurring image is given
            blur = np.asarray(blurring_image, dtype=np.float64)
            if blur.shape != (int((~bmask).sum()),):
                raise ArrayError(f"blurring_image of shape {blur.shape} does not fit its mask")
            values = np.concatenate([values, blur])
        src, tgt = _pixels(frame_mask, bmask)
        out = _convolve(self._native, values[:, None], src, tgt, method)
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
        frame_mask, bmask = _frame(
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
        src, tgt = _pixels(frame_mask, bmask)
        return _convolve(
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
            src, tgt = _pixels(frame_mask, bmask)
            cached = (key, _matrix(self._native, src, tgt, frame_mask.shape))
            self._matrix_cache = cached
        return cached[1]
