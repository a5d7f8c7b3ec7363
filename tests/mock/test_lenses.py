"""Mock lenses through the simulator: the over-sampled lens image binned to pixels, deterministic
``simulate_lens`` datasets and the ranges of ``random_mock_lens``."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.imaging.grids import Grid2D
from pipeline.imaging.simulator import SimulatorImaging
from pipeline.mock import Isothermal, MockLens, Sersic, random_mock_lens, simulate_lens

PIXEL_SCALES = (0.1, 0.1)


def test_via_lens_from_bins_the_over_sampled_lens_image():
    lens = MockLens(
        lens_light=Sersic(intensity=0.1, effective_radius=0.5),
        mass=Isothermal(axis_ratio=0.8, einstein_radius=0.8),
        source=Sersic(centre=(0.05, 0.0), intensity=0.3, effective_radius=0.15, sersic_index=1.0),
    )
    grid = Grid2D.uniform((24, 24), PIXEL_SCALES, over_sample_size=3)
    sim = SimulatorImaging(
        exposure_time=100.0,
        add_poisson_noise_to_data=False,
        include_poisson_noise_in_noise_map=False,
    )
    dataset = sim.via_lens_from(lens, grid)
    values = lens.image_2d_from(np.asarray(grid.over_sampled)).reshape(-1, 9).mean(axis=1)
    np.testing.assert_allclose(dataset.data.slim, values, rtol=1e-13)


def test_simulate_lens_is_deterministic_and_has_signal():
    a = simulate_lens((40, 40), 0.1, psf_shape=(7, 7), seed=4)
    b = simulate_lens((40, 40), 0.1, psf_shape=(7, 7), seed=4)
    c = simulate_lens((40, 40), 0.1, psf_shape=(7, 7), seed=5)
    np.testing.assert_array_equal(a.data.native, b.data.native)
    np.testing.assert_array_equal(a.noise_map.native, b.noise_map.native)
    assert not np.array_equal(a.data.native, c.data.native)
    assert a.shape_native == (40, 40) and a.pixel_scales == (0.1, 0.1)
    assert a.psf.shape_native == (7, 7)
    assert a.psf.kernel.native.sum() == pytest.approx(1.0, rel=1e-14)
    assert np.all(a.noise_map.native > 0.0)
    assert a.signal_to_noise_max > 10.0


def test_random_mock_lens_stays_in_its_ranges():
    rng = np.random.default_rng(0)
    for _ in range(50):
        lens = random_mock_lens(rng)
        assert 0.6 <= lens.mass.einstein_radius <= 1.6
        assert np.hypot(lens.shear.gamma_1, lens.shear.gamma_2) <= 0.05
        assert lens.lens_light is not None and 3.5 <= lens.lens_light.sersic_index <= 4.5
