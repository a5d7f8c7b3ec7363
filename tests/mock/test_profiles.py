from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import gamma, gammainc

from pipeline.exc import GridError, InvalidValueError
from pipeline.mock.profiles import (
    ExternalShear,
    Isothermal,
    MockLens,
    Sersic,
    sersic_constant,
    trace_to_source,
)

POINTS = np.array([[0.9, 0.3], [-0.4, 1.2], [1.5, -0.7], [-1.1, -0.8], [0.05, -2.0]])


def _rotate(grid: np.ndarray, degrees: float) -> np.ndarray:
    phi = math.radians(degrees)
    y, x = grid[:, 0], grid[:, 1]
    return np.stack(
        [math.sin(phi) * x + math.cos(phi) * y, math.cos(phi) * x - math.sin(phi) * y], axis=1
    )


# ---------------------------------------------------------------------------------- Sersic
@pytest.mark.parametrize("n", [0.5, 1.0, 2.5, 4.0, 8.0])
def test_sersic_constant_satisfies_its_definition(n):
    b = sersic_constant(n)
    assert gammainc(2 * n, b) == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize("q, angle", [(1.0, 0.0), (0.6, 0.0), (0.6, 37.0)])
def test_sersic_equals_intensity_at_effective_radius(q, angle):
    s = Sersic(centre=(0.2, -0.3), axis_ratio=q, angle=angle, intensity=0.7, effective_radius=0.8)
    # on the major axis the intermediate-axis radius R_e sits at x' = R_e / sqrt(q)
    major = s.effective_radius / math.sqrt(q)
    phi = math.radians(angle)
    point = np.array([[0.2 + major * math.sin(phi), -0.3 + major * math.cos(phi)]])
    assert s.image_2d_from(point)[0] == pytest.approx(0.7, rel=1e-12)


@pytest.mark.parametrize("n", [1.0, 4.0])
def test_sersic_half_light_inside_effective_radius(n):
    s = Sersic(intensity=1.3, effective_radius=0.7, sersic_index=n)

    def ring(r: float) -> float:
        return 2.0 * math.pi * r * s.image_2d_from(np.array([[0.0, r]]))[0]

    kw = {"epsabs": 0.0, "epsrel": 1e-12, "limit": 500}
    inner = quad(ring, 0.0, s.effective_radius, **kw)[0]
    outer = quad(ring, s.effective_radius, np.inf, **kw)[0]
    assert inner / (inner + outer) == pytest.approx(0.5, rel=1e-6)
    # and the total agrees with the closed form 2 pi n R_e^2 I_e e^b b^(-2n) Gamma(2n)
    b = s.sersic_constant
    total = 2 * math.pi * n * 0.7**2 * 1.3 * math.exp(b) * b ** (-2 * n) * gamma(2 * n)
    assert inner + outer == pytest.approx(total, rel=1e-8)


def test_sersic_ellipse_follows_intermediate_axis_radius():
    s = Sersic(axis_ratio=0.5, angle=0.0, effective_radius=1.0, sersic_index=1.0)
    # R = sqrt(q x^2 + y^2 / q): (y=0, x=2) and (y=0.5, x=0) both have R = sqrt(2) and sqrt(0.5)
    values = s.image_2d_from(np.array([[0.0, 2.0], [1.0, 0.0], [0.0, 1.0 / 0.5**0.5]]))
    ref = Sersic(effective_radius=1.0, sersic_index=1.0).image_2d_from(
        np.array([[0.0, math.sqrt(2.0)], [0.0, math.sqrt(2.0)], [0.0, 1.0]])
    )
    np.testing.assert_allclose(values, ref, rtol=1e-13)


def test_sersic_is_finite_at_its_centre():
    s = Sersic(centre=(0.1, 0.1), axis_ratio=0.7, sersic_index=4.0)
    value = s.image_2d_from(np.array([[0.1, 0.1]]))[0]
    assert value == pytest.approx(s.intensity * math.exp(s.sersic_constant), rel=1e-12)


# ---------------------------------------------------------------------------------- Isothermal
def test_sis_deflection_is_b_times_unit_vector():
    sis = Isothermal(centre=(0.3, -0.2), einstein_radius=1.4)
    d = POINTS - np.array([0.3, -0.2])
    expected = 1.4 * d / np.hypot(d[:, 0], d[:, 1])[:, None]
    np.testing.assert_allclose(sis.deflections_yx_2d_from(POINTS), expected, rtol=1e-14)


def test_sie_tends_to_sis_as_q_tends_to_one():
    sie = Isothermal(axis_ratio=1.0 - 1e-9, angle=20.0, einstein_radius=1.2)
    sis = Isothermal(einstein_radius=1.2)
    np.testing.assert_allclose(
        sie.deflections_yx_2d_from(POINTS), sis.deflections_yx_2d_from(POINTS), rtol=1e-7
    )


def test_sie_matches_pyautogalaxy_reference_values():
    # test_autogalaxy/profiles/mass/total/test_isothermal.py: ell_comps=(0, 0.333333) is
    # q = (1 - 1/3) / (1 + 1/3) = 0.5 at angle 0
    sie = Isothermal(axis_ratio=(1 - 0.333333) / (1 + 0.333333), angle=0.0, einstein_radius=1.0)
    alpha = sie.deflections_yx_2d_from(np.array([[0.1625, 0.1625]]))[0]
    assert alpha[0] == pytest.approx(0.79421, rel=1e-3)
    assert alpha[1] == pytest.approx(0.50734, rel=1e-3)
    assert sie.convergence_2d_from(np.array([[0.0, 1.0]]))[0] == pytest.approx(0.66666, rel=1e-3)
    sis = Isothermal(centre=(-0.7, 0.5), einstein_radius=1.3)
    alpha = sis.deflections_yx_2d_from(np.array([[0.1875, 0.1625]]))[0]
    np.testing.assert_allclose(alpha, [1.21510, -0.46208], rtol=1e-4)


def _deflection_via_homoeoid_integrals(sie: Isothermal, y: float, x: float) -> tuple[float, float]:
    """Independent deflection of an axis-aligned elliptical kappa(xi), xi^2 = x^2 + y^2/q^2
    (Keeton 2001, eqs. 27-28), with u = t^2 to remove the endpoint singularity."""
    q = sie.axis_ratio
    b_q = sie.einstein_radius / (1.0 + q)  # kappa = b_q / xi

    def integrand(t: float, n: float) -> float:
        s = 1.0 - (1.0 - q**2) * t**2
        # kappa(xi(u)) du with xi(u) = t sqrt(x^2 + y^2 / s), du = 2 t dt
        return 2.0 * b_q / math.sqrt(x**2 + y**2 / s) / s ** (n + 0.5)

    kw = {"epsabs": 0.0, "epsrel": 1e-12}
    ax = q * x * quad(integrand, 0.0, 1.0, args=(0.0,), **kw)[0]
    ay = q * y * quad(integrand, 0.0, 1.0, args=(1.0,), **kw)[0]
    return ay, ax


@pytest.mark.parametrize("q", [0.3, 0.7, 0.95])
def test_sie_matches_independent_integral_of_its_convergence(q):
    sie = Isothermal(axis_ratio=q, einstein_radius=1.1)
    alpha = sie.deflections_yx_2d_from(POINTS)
    for (y, x), a in zip(POINTS, alpha, strict=True):
        np.testing.assert_allclose(a, _deflection_via_homoeoid_integrals(sie, y, x), rtol=1e-9)


@pytest.mark.parametrize("q, angle", [(0.4, 0.0), (0.75, 63.0), (1.0, 0.0)])
def test_sie_divergence_is_twice_convergence_and_curl_vanishes(q, angle):
    sie = Isothermal(centre=(0.1, -0.2), axis_ratio=q, angle=angle, einstein_radius=1.3)
    h = 1e-5
    dy, dx = np.array([h, 0.0]), np.array([0.0, h])

    def alpha(offset):
        return sie.deflections_yx_2d_from(POINTS + offset)

    d_ay_dy = (alpha(dy)[:, 0] - alpha(-dy)[:, 0]) / (2 * h)
    d_ax_dx = (alpha(dx)[:, 1] - alpha(-dx)[:, 1]) / (2 * h)
    d_ax_dy = (alpha(dy)[:, 1] - alpha(-dy)[:, 1]) / (2 * h)
    d_ay_dx = (alpha(dx)[:, 0] - alpha(-dx)[:, 0]) / (2 * h)
    kappa = sie.convergence_2d_from(POINTS)
    np.testing.assert_allclose(d_ax_dx + d_ay_dy, 2.0 * kappa, rtol=1e-6)
    np.testing.assert_allclose(d_ax_dy - d_ay_dx, 0.0, atol=1e-6 * kappa.max())


@pytest.mark.parametrize("q", [1.0, 0.6])
def test_sie_rotating_grid_and_angle_rotates_deflections(q):
    turn = 71.0
    sie = Isothermal(axis_ratio=q, angle=15.0, einstein_radius=0.9)
    turned = Isothermal(axis_ratio=q, angle=15.0 + turn, einstein_radius=0.9)
    np.testing.assert_allclose(
        turned.deflections_yx_2d_from(_rotate(POINTS, turn)),
        _rotate(sie.deflections_yx_2d_from(POINTS), turn),
        rtol=1e-12,
        atol=1e-14,
    )
    light = Sersic(axis_ratio=q, angle=15.0)
    light_turned = Sersic(axis_ratio=q, angle=15.0 + turn)
    np.testing.assert_allclose(
        light_turned.image_2d_from(_rotate(POINTS, turn)), light.image_2d_from(POINTS), rtol=1e-12
    )


@pytest.mark.parametrize("q", [1.0, 0.5])
def test_sie_deflection_is_zero_not_nan_at_its_centre(q):
    sie = Isothermal(centre=(0.25, -0.5), axis_ratio=q, angle=30.0)
    grid = np.array([[0.25, -0.5], [0.25, 0.5], [-0.75, -0.5]])
    alpha = sie.deflections_yx_2d_from(grid)
    assert np.all(np.isfinite(alpha))
    np.testing.assert_array_equal(alpha[0], [0.0, 0.0])


def test_sie_normalisation_b_is_the_mean_semi_axis_of_the_critical_curve():
    # kappa = 1/2 (the SIE critical curve) on the ellipse of semi-axes 2b/(1+q) and 2bq/(1+q)
    q, b = 0.4, 1.3
    sie = Isothermal(centre=(0.2, 0.1), axis_ratio=q, angle=30.0, einstein_radius=b)
    t = np.linspace(0.0, 2.0 * math.pi, 17)
    xp, yp = 2 * b / (1 + q) * np.cos(t), 2 * b * q / (1 + q) * np.sin(t)
    phi = math.radians(30.0)
    grid = np.stack(
        [
            0.2 + math.sin(phi) * xp + math.cos(phi) * yp,
            0.1 + math.cos(phi) * xp - math.sin(phi) * yp,
        ],
        axis=1,
    )
    np.testing.assert_allclose(sie.convergence_2d_from(grid), 0.5, rtol=1e-13)


def test_sie_axis_points_deflect_along_the_axis():
    sie = Isothermal(axis_ratio=0.5, einstein_radius=1.0)
    alpha = sie.deflections_yx_2d_from(np.array([[0.0, 2.0], [3.0, 0.0]]))
    assert alpha[0, 0] == 0.0 and alpha[0, 1] > 0.0
    assert alpha[1, 1] == 0.0 and alpha[1, 0] > 0.0


# ---------------------------------------------------------------------------------- shear, lens
def test_external_shear_formulas():
    shear = ExternalShear(gamma_1=0.03, gamma_2=-0.02)
    alpha = shear.deflections_yx_2d_from(np.array([[2.0, 1.0], [0.0, 0.0]]))
    # alpha_y = g2 x - g1 y, alpha_x = g1 x + g2 y
    np.testing.assert_allclose(alpha[0], [-0.02 * 1.0 - 0.03 * 2.0, 0.03 * 1.0 - 0.02 * 2.0])
    np.testing.assert_array_equal(alpha[1], [0.0, 0.0])


def test_trace_to_source_subtracts_every_deflection():
    sie = Isothermal(axis_ratio=0.8, angle=10.0, einstein_radius=1.2)
    shear = ExternalShear(0.02, 0.01)
    beta = trace_to_source(POINTS, [sie, shear])
    expected = POINTS - sie.deflections_yx_2d_from(POINTS) - shear.deflections_yx_2d_from(POINTS)
    np.testing.assert_allclose(beta, expected, rtol=1e-15)
    np.testing.assert_array_equal(trace_to_source(POINTS, []), POINTS)


def test_mock_lens_image_is_lens_light_plus_lensed_source():
    light = Sersic(intensity=0.2, effective_radius=0.8, sersic_index=4.0)
    source = Sersic(centre=(0.05, 0.1), intensity=0.3, effective_radius=0.2, sersic_index=1.0)
    mass = Isothermal(axis_ratio=0.8, einstein_radius=1.0)
    shear = ExternalShear(0.01, 0.02)
    lens = MockLens(lens_light=light, mass=mass, shear=shear, source=source)
    grid = np.vstack([POINTS, [[0.0, 0.0]]])
    expected = light.image_2d_from(grid) + source.image_2d_from(
        trace_to_source(grid, [mass, shear])
    )
    np.testing.assert_allclose(lens.image_2d_from(grid), expected, rtol=1e-15)
    no_light = MockLens(mass=mass, source=source)
    np.testing.assert_allclose(
        no_light.image_2d_from(grid), source.image_2d_from(trace_to_source(grid, [mass]))
    )


def test_einstein_ring_of_a_sis_is_at_b():
    # a source at the origin behind a SIS is imaged onto |theta| = b
    lens = MockLens(mass=Isothermal(einstein_radius=1.2), source=Sersic(effective_radius=0.05))
    radii = np.linspace(0.6, 1.8, 121)
    image = lens.image_2d_from(np.stack([np.zeros_like(radii), radii], axis=1))
    assert radii[np.argmax(image)] == pytest.approx(1.2, abs=1e-9)


# ---------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "make",
    [
        lambda: Sersic(axis_ratio=0.0),
        lambda: Sersic(axis_ratio=1.2),
        lambda: Sersic(effective_radius=0.0),
        lambda: Sersic(sersic_index=-1.0),
        lambda: Isothermal(einstein_radius=-1.0),
        lambda: Isothermal(angle=float("nan")),
        lambda: ExternalShear(gamma_1=float("inf")),
    ],
)
def test_invalid_parameters_are_rejected(make):
    with pytest.raises(InvalidValueError):
        make()


def test_grid_must_be_m_by_2():
    with pytest.raises(GridError, match=r"\(M, 2\)"):
        Sersic().image_2d_from(np.zeros((3, 3)))
