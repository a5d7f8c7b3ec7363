"""``SimulatorImaging``: mock imaging datasets (PSF blur, sky, Poisson noise).

Units: images are in **electrons per second** per pixel, ``exposure_time`` in seconds, so
``image * exposure_time`` is in electrons (counts); noise maps are RMS in electrons per second.

Follows PyAutoArray's ``SimulatorImaging`` (``dataset/imaging/simulator.py``) step for step, except:

* the global numpy RNG is never touched. ``noise_seed >= 0`` draws from a private
  ``numpy.random.RandomState(noise_seed)``: the reference's legacy stream (``np.random.seed``, then
  ``np.random.poisson``), so the same seed gives the reference's noise realisation draw for draw,
  on every call. ``noise_seed=-1`` draws fresh entropy on every call; ``rng=`` (a lenspipe
  addition) shares a caller's ``numpy.random.Generator``, which advances with each call and gives
  a different stream from the reference's;
* negative counts and non-finite values raise :class:`~pipeline.exc.DatasetError` naming the pixel
  (the reference lets ``numpy`` fail or returns NaN noise);
* the dataset keeps the PSF exactly as used (``use_normalized_psf=normalize_psf``).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Protocol

import numpy as np

from pipeline.exc import DatasetError
from pipeline.imaging.arrays import Array2D
from pipeline.imaging.compat import check_xp, refuse_unless
from pipeline.imaging.convolver import Convolver
from pipeline.imaging.dataset import Imaging
from pipeline.imaging.grids import Grid2D
from pipeline.imaging.mask import Mask2D

__all__ = ["LightModel", "SimulatorImaging"]


class LightModel(Protocol):
    """Anything with a surface brightness on a grid, e.g. ``pipeline.mock.MockLens``."""

    def image_2d_from(self, grid: np.ndarray) -> np.ndarray:
        """``(M,)`` electrons per second per pixel at ``(M, 2)`` ``(y, x)`` arcsec."""
        ...


def _finite(
    value: float, name: str, *, positive: bool = False, non_negative: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise DatasetError(f"SimulatorImaging: {name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise DatasetError(f"SimulatorImaging: {name} must be > 0, got {value!r}")
    if non_negative and value < 0:
        raise DatasetError(f"SimulatorImaging: {name} must be >= 0, got {value!r}")
    return float(value)


def _first_pixel(native: np.ndarray, where: np.ndarray) -> tuple[int, int]:
    row, col = np.argwhere(where)[0]
    return int(row), int(col)


class SimulatorImaging:
    """Simulate an ``Imaging`` dataset from a noiseless image.

    Steps: convolve with the PSF (light outside the frame is zero), add the sky, draw Poisson
    counts, build the noise map, subtract the sky.

    Parameters
    ----------
    exposure_time
        Seconds (> 0), uniform over the frame.
    background_sky_level
        Sky in electrons per second per pixel (>= 0), added before the noise is drawn.
    subtract_background_sky
        Subtract the sky from the returned data (the noise map keeps the sky's noise).
    psf
        The PSF ``Convolver``; None: no blurring (``Convolver.no_blur`` at the image's pixel
        scales). Never modified.
    use_real_space_convolution
        True: convolve in real space (``method="direct"``); False: with FFTs (``"fft"``), which
        agree to ~1e-16 of the peak.
    normalize_psf
        Use a unit-sum copy of the PSF (``psf.normalized``).
    add_poisson_noise_to_data
        If False the data are the noiseless blurred image (+ sky before subtraction).
    include_poisson_noise_in_noise_map
        If True the noise map is ``sqrt(|noisy * t|) / t`` of the Poisson draw *including the
        sky* — even when that draw is not added to the data (the reference's diagnostic mode:
        noiseless data, realistic weights). If False the noise map is ``noise_if_add_noise_false``
        everywhere.
    noise_if_add_noise_false
        Uniform noise (electrons per second, > 0) when the Poisson noise map is not used.
    noise_seed
        -1: fresh entropy on every call; an integer in ``[0, 2**32)``: the Poisson draws of
        ``numpy.random.RandomState(noise_seed)``, created anew on every call, so every call gives
        the same noise, and the same noise as PyAutoArray's simulator with that seed (for the same
        blurred image: it uses the legacy global ``np.random.seed``, which we do not touch).
    use_jax
        PyAutoArray's JAX switch, accepted only as False: lenspipe simulates with numpy.
    rng
        Keyword only: a ``numpy.random.Generator`` used instead of ``noise_seed`` (it advances with
        each call).

    Notes
    -----
    A pixel with zero counts gets noise 0, as in the reference; the dataset is built with
    ``check_noise_map=False`` so this is allowed, but such a pixel must be masked (or a sky level
    > 0 used) before fitting.
    """

    exposure_time: float
    background_sky_level: float
    noise_if_add_noise_false: float
    psf: Convolver | None
    normalize_psf: bool
    subtract_background_sky: bool
    add_poisson_noise_to_data: bool
    include_poisson_noise_in_noise_map: bool
    noise_seed: int
    use_real_space_convolution: bool
    rng: np.random.Generator | None

    def __init__(
        self,
        exposure_time: float,
        background_sky_level: float = 0.0,
        subtract_background_sky: bool = True,
        psf: Convolver | None = None,
        use_real_space_convolution: bool = True,
        normalize_psf: bool = True,
        add_poisson_noise_to_data: bool = True,
        include_poisson_noise_in_noise_map: bool = True,
        noise_if_add_noise_false: float = 0.1,
        noise_seed: int = -1,
        use_jax: bool = False,
        *,
        rng: np.random.Generator | None = None,
    ) -> None:
        refuse_unless(
            not use_jax,
            DatasetError,
            "SimulatorImaging",
            "use_jax",
            use_jax,
            "lenspipe simulates with numpy (a seed gives the reference's numpy noise realisation)",
        )
        self.exposure_time = _finite(exposure_time, "exposure_time", positive=True)
        self.background_sky_level = _finite(
            background_sky_level, "background_sky_level", non_negative=True
        )
        self.noise_if_add_noise_false = _finite(
            noise_if_add_noise_false, "noise_if_add_noise_false", positive=True
        )
        if psf is not None and not isinstance(psf, Convolver):
            raise DatasetError(
                f"SimulatorImaging: psf must be a Convolver, got {type(psf).__name__}"
            )
        if isinstance(noise_seed, bool) or not isinstance(noise_seed, numbers.Integral):
            raise DatasetError(
                f"SimulatorImaging: noise_seed must be an integer, got {noise_seed!r}"
            )
        if noise_seed < -1 or noise_seed >= 2**32:
            raise DatasetError(
                "SimulatorImaging: noise_seed must be -1 (random) or in [0, 2**32) (a legacy numpy "
                f"seed, as the reference's), got {noise_seed}"
            )
        if rng is not None:
            if not isinstance(rng, np.random.Generator):
                raise DatasetError(
                    "SimulatorImaging: rng must be a numpy.random.Generator "
                    f"(np.random.default_rng(seed)), got {type(rng).__name__}"
                )
            if noise_seed != -1:
                raise DatasetError("SimulatorImaging: pass either noise_seed or rng, not both")
        self.psf = psf.normalized if (psf is not None and normalize_psf) else psf
        self.use_real_space_convolution = bool(use_real_space_convolution)
        self.normalize_psf = bool(normalize_psf)
        self.subtract_background_sky = bool(subtract_background_sky)
        self.add_poisson_noise_to_data = bool(add_poisson_noise_to_data)
        self.include_poisson_noise_in_noise_map = bool(include_poisson_noise_in_noise_map)
        self.noise_seed = int(noise_seed)
        self.rng = rng

    def _poisson(self, counts: np.ndarray) -> np.ndarray:
        if self.rng is not None:
            return self.rng.poisson(counts)
        if self.noise_seed == -1:
            return np.random.default_rng().poisson(counts)
        # the reference's np.random.seed(seed); np.random.poisson(...) stream, draws in row-major
        # order, without touching the global RNG
        return np.random.RandomState(self.noise_seed).poisson(counts)

    def via_image_from(
        self,
        image: Array2D,
        over_sample_size: int | np.ndarray | Array2D | None = None,
        image_is_convolved: bool = False,
        xp: Any = None,
    ) -> Imaging:
        """Simulate a dataset from a noiseless, unblurred image.

        Parameters
        ----------
        image
            Unmasked ``Array2D`` in electrons per second per pixel; not modified.
        over_sample_size
            If given, the light-profile over-sampling of the returned dataset
            (``apply_over_sampling(over_sample_size_lp=...)``).
        image_is_convolved
            The image is already blurred by the PSF: skip the convolution.
        xp
            PyAutoArray's array module: only None or numpy is accepted.

        Returns
        -------
        Imaging
            Unmasked dataset (``check_noise_map=False``): data and noise map in electrons per
            second, the PSF as used. The Poisson draw is a single ``poisson`` call on the
            native ``(ny, nx)`` counts ``(blurred + sky) * exposure_time`` (row-major order).
        """
        check_xp(xp, DatasetError, "SimulatorImaging.via_image_from")
        if not isinstance(image, Array2D):
            raise DatasetError(
                f"SimulatorImaging: image must be an Array2D, got {type(image).__name__}; wrap it "
                "with Array2D.no_mask(values, pixel_scales)"
            )
        if not image.mask.is_all_false:
            raise DatasetError(
                "SimulatorImaging: the image must be unmasked (a simulated frame has light "
                "everywhere); mask the returned dataset instead"
            )
        bad = ~np.isfinite(image.native)
        if bad.any():
            row, col = _first_pixel(image.native, bad)
            # checked before convolving: an FFT would spread one NaN over the whole frame
            raise DatasetError(
                f"SimulatorImaging: the image has {int(bad.sum())} NaN/inf values (first at row "
                f"{row}, col {col}); fix the input image"
            )
        psf = self.psf if self.psf is not None else Convolver.no_blur(image.pixel_scales)
        if image_is_convolved:
            blurred = np.asarray(image.native, dtype=np.float64)
        else:
            method = "direct" if self.use_real_space_convolution else "fft"
            blurred = np.asarray(
                psf.convolved_image_from(image, method=method).native, dtype=np.float64
            )
        t, sky = self.exposure_time, self.background_sky_level
        signal = blurred + sky

        noisy = signal  # the Poisson draw below whenever data or noise map use it
        if self.add_poisson_noise_to_data or self.include_poisson_noise_in_noise_map:
            counts = signal * t
            if counts.min() < 0.0:
                row, col = _first_pixel(counts, counts == counts.min())
                raise DatasetError(
                    "SimulatorImaging: Poisson noise needs counts >= 0, but the blurred image "
                    f"plus sky is {float(signal[row, col])!r} e-/s (x {t} s = "
                    f"{float(counts[row, col])!r} counts) at row {row}, col {col}, the minimum; "
                    "make the image non-negative, raise background_sky_level, or turn Poisson "
                    "noise off (add_poisson_noise_to_data=False, "
                    "include_poisson_noise_in_noise_map=False)"
                )
            # signal + (draw - signal), not draw alone: the reference's arithmetic, bit for bit
            noisy = signal + (self._poisson(counts) / t - signal)

        data = noisy if self.add_poisson_noise_to_data else signal
        if self.include_poisson_noise_in_noise_map:
            noise = np.abs(noisy * t) ** 0.5 / t
        else:
            noise = np.full(signal.shape, self.noise_if_add_noise_false)
        if self.subtract_background_sky:
            data = data - sky

        mask = Mask2D.all_false(image.shape_native, image.pixel_scales, image.origin)
        dataset = Imaging(
            data=Array2D(data, mask),
            noise_map=Array2D(noise, mask),
            psf=psf,
            use_normalized_psf=self.normalize_psf,
            check_noise_map=False,
        )
        if over_sample_size is not None:
            dataset = dataset.apply_over_sampling(over_sample_size_lp=over_sample_size)
        return dataset

    def via_lens_from(self, lens: LightModel, grid: Grid2D) -> Imaging:
        """Simulate a dataset of ``lens`` on an unmasked ``grid``: the image is the lens image on
        ``grid.over_sampled`` binned to pixels (block mean), then :meth:`via_image_from`."""
        values = lens.image_2d_from(grid.over_sampled)
        image = grid.over_sampler.binned_array_2d_from(values)
        return self.via_image_from(image)
