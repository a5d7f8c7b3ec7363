"""Random mock strong lenses and their simulated imaging datasets (deterministic per seed).

Intensities are in electrons per second per pixel, lengths in arcsec; the dataset comes from
:class:`~pipeline.imaging.simulator.SimulatorImaging` (PSF blur, sky, Poisson noise).
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.imaging.convolver import Convolver
from pipeline.imaging.dataset import Imaging
from pipeline.imaging.grids import Grid2D
from pipeline.imaging.simulator import SimulatorImaging
from pipeline.mock.profiles import ExternalShear, Isothermal, MockLens, Sersic

__all__ = ["random_mock_lens", "simulate_lens"]


def random_mock_lens(rng: np.random.Generator) -> MockLens:
    """A plausible galaxy-scale lens drawn from ``rng`` (intensities in electrons per second).

    Einstein radius 0.6-1.6 arcsec, SIE axis ratio 0.6-0.95; lens light a Sersic (n 3.5-4.5)
    aligned with the mass; shear magnitude <= 0.05; an exponential-like source (n 0.8-1.5) of
    radius 0.1-0.3 arcsec within 0.15 arcsec of the optical axis.
    """
    centre = tuple(rng.uniform(-0.05, 0.05, size=2))
    mass_angle = rng.uniform(0.0, 180.0)
    mass = Isothermal(
        centre=centre,
        axis_ratio=rng.uniform(0.6, 0.95),
        angle=mass_angle,
        einstein_radius=rng.uniform(0.6, 1.6),
    )
    lens_light = Sersic(
        centre=centre,
        axis_ratio=rng.uniform(0.6, 0.95),
        angle=mass_angle + rng.uniform(-10.0, 10.0),
        intensity=rng.uniform(0.05, 0.2),
        effective_radius=rng.uniform(0.5, 1.0),
        sersic_index=rng.uniform(3.5, 4.5),
    )
    magnitude, shear_angle = rng.uniform(0.0, 0.05), rng.uniform(0.0, math.pi)
    shear = ExternalShear(
        gamma_1=magnitude * math.cos(2 * shear_angle), gamma_2=magnitude * math.sin(2 * shear_angle)
    )
    source = Sersic(
        centre=tuple(rng.uniform(-0.15, 0.15, size=2)),
        axis_ratio=rng.uniform(0.5, 1.0),
        angle=rng.uniform(0.0, 180.0),
        intensity=rng.uniform(0.2, 0.6),
        effective_radius=rng.uniform(0.1, 0.3),
        sersic_index=rng.uniform(0.8, 1.5),
    )
    return MockLens(lens_light=lens_light, mass=mass, shear=shear, source=source)


def simulate_lens(
    shape_native: tuple[int, int],
    pixel_scales: float | tuple[float, float],
    psf_shape: tuple[int, int] = (11, 11),
    psf_sigma: float = 0.1,
    seed: int = 0,
    *,
    exposure_time: float = 1000.0,
    background_sky_level: float = 0.1,
    over_sample_size: int = 4,
    lens: MockLens | None = None,
) -> Imaging:
    """A mock strong-lens dataset, deterministic for a given ``seed``.

    Parameters
    ----------
    shape_native, pixel_scales
        Frame in pixels and arcsec per pixel.
    psf_shape, psf_sigma
        Gaussian PSF (``Convolver.from_gaussian``, normalised): odd shape in pixels, sigma in
        arcsec.
    seed
        Seeds the one ``numpy.random.Generator`` that draws the lens (:func:`random_mock_lens`)
        and then the Poisson noise.
    exposure_time, background_sky_level
        Seconds; electrons per second per pixel (subtracted from the data, kept in the noise).
    over_sample_size
        Sub-pixels per axis used to integrate the light over each pixel; also the returned
        dataset's ``over_sample_size_lp``.
    lens
        Simulate this lens instead of a random one (the noise is still drawn from ``seed``).

    Returns
    -------
    Imaging
        Unmasked, sky-subtracted, in electrons per second.
    """
    rng = np.random.default_rng(seed)
    # drawn even when a lens is given, so the noise stream for a seed does not depend on it
    drawn = random_mock_lens(rng)
    lens = drawn if lens is None else lens
    psf = Convolver.from_gaussian(psf_shape, pixel_scales, sigma=psf_sigma, normalize=True)
    simulator = SimulatorImaging(
        exposure_time=exposure_time,
        background_sky_level=background_sky_level,
        psf=psf,
        rng=rng,
    )
    grid = Grid2D.uniform(shape_native, pixel_scales, over_sample_size=over_sample_size)
    dataset = simulator.via_lens_from(lens, grid)
    return dataset.apply_over_sampling(over_sample_size_lp=over_sample_size)
