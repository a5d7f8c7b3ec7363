"""Analytic light and mass profiles for mock strong lenses (pure numpy, vectorised).

Coordinates are ``(M, 2)`` arrays of ``(y, x)`` in arcsec (y up). Every profile has a ``centre``
``(y, x)`` in arcsec, an ``axis_ratio`` q in (0, 1] (minor/major) and an ``angle`` in degrees
counter-clockwise from +x of its major axis. Profile-frame coordinates are

    x' =  (x - xc) cos(angle) + (y - yc) sin(angle)
    y' = -(x - xc) sin(angle) + (y - yc) cos(angle)

The conventions are those of PyAutoGalaxy, so parameters carry over to PyAutoLens models:

* :class:`Sersic` uses the intermediate-axis radius ``R = sqrt(q x'**2 + y'**2 / q)``; its
  ``intensity`` is the surface brightness at ``R = effective_radius`` (electrons per second per
  pixel when evaluated on pixel centres, the unit the simulator uses).
* :class:`Isothermal` is the singular isothermal ellipsoid with PyAutoGalaxy's normalisation,
  convergence ``kappa = b / ((1 + q) sqrt(x'**2 + y'**2 / q**2))`` with ``b = einstein_radius``:
  the critical curve is the ellipse of semi-axes ``2b/(1+q)`` and ``2bq/(1+q)``, so ``b`` is the
  *arithmetic mean* of its semi-axes (exactly the Einstein radius for q = 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.special import gammaincinv

from pipeline.exc import GridError, InvalidValueError

__all__ = [
    "Sersic",
    "Isothermal",
    "ExternalShear",
    "MockLens",
    "MassProfile",
    "sersic_constant",
    "trace_to_source",
]


class MassProfile(Protocol):
    """Anything with deflection angles (arcsec) on a ``(M, 2)`` grid of ``(y, x)`` arcsec."""

    def deflections_yx_2d_from(self, grid: np.ndarray) -> np.ndarray: ...


def sersic_constant(sersic_index: float) -> float:
    """Exact ``b_n`` such that half the total light of a Sersic profile lies inside its effective
    radius: ``Gamma(2n) = 2 gamma(2n, b_n)`` (lower incomplete gamma)."""
    return float(gammaincinv(2.0 * sersic_index, 0.5))


def _as_grid(grid: np.ndarray) -> np.ndarray:
    arr = np.asarray(grid, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise GridError(f"a grid of (y, x) arcsec must have shape (M, 2), got {arr.shape}")
    return arr


def _check_geometry(name: str, axis_ratio: float, angle: float, centre) -> None:
    if not (0.0 < axis_ratio <= 1.0):
        raise InvalidValueError(f"{name}: axis_ratio must be in (0, 1], got {axis_ratio}")
    if not math.isfinite(angle):
        raise InvalidValueError(f"{name}: angle must be finite (degrees), got {angle}")
    if len(centre) != 2 or not all(math.isfinite(c) for c in centre):
        raise InvalidValueError(f"{name}: centre must be a finite (y, x) pair, got {centre!r}")


def _to_profile_frame(grid, centre, angle) -> tuple[np.ndarray, np.ndarray, float, float]:
    grid = _as_grid(grid)
    phi = math.radians(angle)
    cos, sin = math.cos(phi), math.sin(phi)
    dy = grid[:, 0] - centre[0]
    dx = grid[:, 1] - centre[1]
    return cos * dx + sin * dy, -sin * dx + cos * dy, cos, sin


def _vectors_from_profile_frame(ax, ay, cos, sin) -> np.ndarray:
    return np.stack([sin * ax + cos * ay, cos * ax - sin * ay], axis=1)


@dataclass(frozen=True)
class Sersic:
    """Elliptical Sersic light profile.

    ``I(R) = intensity * exp(-b_n ((R / effective_radius)**(1/n) - 1))`` with ``R`` the
    intermediate-axis radius (arcsec) and ``b_n`` from :func:`sersic_constant`.

    Parameters
    ----------
    centre
        ``(y, x)`` arcsec.
    axis_ratio, angle
        Minor/major axis ratio in (0, 1]; major-axis angle in degrees counter-clockwise from +x.
    intensity
        Surface brightness at ``R = effective_radius`` (electrons per second per pixel).
    effective_radius
        Half-light radius along the intermediate axis, arcsec (> 0).
    sersic_index
        ``n`` > 0 (1: exponential, 4: de Vaucouleurs).
    """

    centre: tuple[float, float] = (0.0, 0.0)
    axis_ratio: float = 1.0
    angle: float = 0.0
    intensity: float = 0.1
    effective_radius: float = 0.6
    sersic_index: float = 4.0

    def __post_init__(self) -> None:
        _check_geometry("Sersic", self.axis_ratio, self.angle, self.centre)
        if not (self.effective_radius > 0.0 and math.isfinite(self.effective_radius)):
            raise InvalidValueError(
                f"Sersic: effective_radius must be > 0 arcsec, got {self.effective_radius}"
            )
        if not (self.sersic_index > 0.0 and math.isfinite(self.sersic_index)):
            raise InvalidValueError(f"Sersic: sersic_index must be > 0, got {self.sersic_index}")
        if not math.isfinite(self.intensity):
            raise InvalidValueError(f"Sersic: intensity must be finite, got {self.intensity}")

    @property
    def sersic_constant(self) -> float:
        """``b_n`` (dimensionless)."""
        return sersic_constant(self.sersic_index)

    def image_2d_from(self, grid: np.ndarray) -> np.ndarray:
        """``(M,)`` surface brightness at the ``(M, 2)`` ``(y, x)`` arcsec coordinates."""
        xp, yp, _, _ = _to_profile_frame(grid, self.centre, self.angle)
        q = self.axis_ratio
        radius = np.sqrt(q * xp**2 + yp**2 / q)
        scaled = (radius / self.effective_radius) ** (1.0 / self.sersic_index)
        return self.intensity * np.exp(-self.sersic_constant * (scaled - 1.0))


@dataclass(frozen=True)
class Isothermal:
    """Singular isothermal ellipsoid (SIE) with PyAutoGalaxy's normalisation.

    Convergence ``kappa = b q / ((1 + q) psi)`` with ``psi = sqrt(q**2 x'**2 + y'**2)`` and
    ``b = einstein_radius``; deflections (Kormann et al. 1994; Keeton 2001), for q < 1::

        f = 2 b q / ((1 + q) sqrt(1 - q**2))
        alpha_x' = f arctan (sqrt(1 - q**2) x' / psi)
        alpha_y' = f arctanh(sqrt(1 - q**2) y' / psi)

    and ``alpha = b (x, y) / r`` for q = 1. The deflection at the centre is defined as 0.

    Parameters
    ----------
    centre
        ``(y, x)`` arcsec.
    axis_ratio, angle
        Minor/major axis ratio in (0, 1]; major-axis angle in degrees counter-clockwise from +x.
    einstein_radius
        ``b`` in arcsec (>= 0): the mean of the semi-axes of the critical curve.
    """

    centre: tuple[float, float] = (0.0, 0.0)
    axis_ratio: float = 1.0
    angle: float = 0.0
    einstein_radius: float = 1.0

    def __post_init__(self) -> None:
        _check_geometry("Isothermal", self.axis_ratio, self.angle, self.centre)
        if not (self.einstein_radius >= 0.0 and math.isfinite(self.einstein_radius)):
            raise InvalidValueError(
                f"Isothermal: einstein_radius must be >= 0 arcsec, got {self.einstein_radius}"
            )

    def convergence_2d_from(self, grid: np.ndarray) -> np.ndarray:
        """``(M,)`` convergence (dimensionless); ``inf`` at the centre."""
        xp, yp, _, _ = _to_profile_frame(grid, self.centre, self.angle)
        q = self.axis_ratio
        psi = np.sqrt(q**2 * xp**2 + yp**2)
        with np.errstate(divide="ignore"):
            return self.einstein_radius * q / ((1.0 + q) * psi)

    def deflections_yx_2d_from(self, grid: np.ndarray) -> np.ndarray:
        """``(M, 2)`` deflection angles ``(alpha_y, alpha_x)`` in arcsec."""
        xp, yp, cos, sin = _to_profile_frame(grid, self.centre, self.angle)
        q = self.axis_ratio
        b = self.einstein_radius
        psi = np.sqrt(q**2 * xp**2 + yp**2)
        at_centre = psi == 0.0
        # psi = 0 only at the centre, where both numerators vanish too: any non-zero denominator
        # gives the limit value 0 without a 0/0 warning.
        safe_psi = np.where(at_centre, 1.0, psi)
        if q == 1.0:
            ax, ay = b * xp / safe_psi, b * yp / safe_psi
        else:
            e = math.sqrt(1.0 - q**2)
            factor = 2.0 * b * q / ((1.0 + q) * e)
            ax = factor * np.arctan(e * xp / safe_psi)
            ay = factor * np.arctanh(e * yp / safe_psi)
        return _vectors_from_profile_frame(ax, ay, cos, sin)


@dataclass(frozen=True)
class ExternalShear:
    """External shear about (0, 0): ``alpha_x = g1 x + g2 y``, ``alpha_y = g2 x - g1 y`` (arcsec)
    with ``g1 = gamma_1``, ``g2 = gamma_2`` (dimensionless)."""

    gamma_1: float = 0.0
    gamma_2: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.gamma_1) and math.isfinite(self.gamma_2)):
            raise InvalidValueError(
                "ExternalShear: gamma_1, gamma_2 must be finite, "
                f"got {self.gamma_1}, {self.gamma_2}"
            )

    def deflections_yx_2d_from(self, grid: np.ndarray) -> np.ndarray:
        """``(M, 2)`` deflection angles ``(alpha_y, alpha_x)`` in arcsec."""
        grid = _as_grid(grid)
        y, x = grid[:, 0], grid[:, 1]
        return np.stack(
            [self.gamma_2 * x - self.gamma_1 * y, self.gamma_1 * x + self.gamma_2 * y], axis=1
        )


def trace_to_source(grid: np.ndarray, mass_profiles: Iterable[MassProfile]) -> np.ndarray:
    """Source-plane ``(M, 2)`` ``(y, x)`` arcsec: ``beta = theta - sum(alpha)`` (one lens plane)."""
    grid = _as_grid(grid)
    beta = grid.copy()
    for profile in mass_profiles:
        beta -= profile.deflections_yx_2d_from(grid)
    return beta


@dataclass(frozen=True)
class MockLens:
    """A single-plane strong lens: optional lens light, an SIE, optional shear, a Sersic source."""

    mass: Isothermal
    source: Sersic
    lens_light: Sersic | None = None
    shear: ExternalShear | None = None

    @property
    def mass_profiles(self) -> tuple[MassProfile, ...]:
        return tuple(p for p in (self.mass, self.shear) if p is not None)

    def image_2d_from(self, grid: np.ndarray) -> np.ndarray:
        """``(M,)`` surface brightness (electrons per second per pixel): lens light at ``theta``
        plus source light at ``beta(theta)``."""
        grid = _as_grid(grid)
        image = self.source.image_2d_from(trace_to_source(grid, self.mass_profiles))
        if self.lens_light is not None:
            image = image + self.lens_light.image_2d_from(grid)
        return image
