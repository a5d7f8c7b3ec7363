"""``FitImaging``: goodness of fit of a model image to an ``Imaging`` dataset.

All maps are over the unmasked pixels (slim order). With a noise covariance matrix ``C`` the
chi-squared is ``r^T C^-1 r``; the noise normalisation always uses the diagonal noise map
(``sum log(2 pi sigma^2)``), as in the reference library.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from pipeline.exc import DatasetError
from pipeline.imaging.arrays import Array2D
from pipeline.imaging.dataset import Imaging

__all__ = ["FitImaging"]


class FitImaging:
    """Fit of ``model_data`` to ``dataset``.

    Parameters
    ----------
    dataset
        The masked imaging dataset.
    model_data
        The model image: an ``Array2D`` on the dataset mask, or slim ``(N,)`` / native ``(ny, nx)``
        values.
    background_sky_level
        Subtracted from the data before fitting (same units as the data).
    use_noise_covariance
        Use ``dataset.noise_covariance_matrix`` in the chi-squared when present.
    """

    def __init__(
        self,
        dataset: Imaging,
        model_data: Array2D | np.ndarray,
        background_sky_level: float = 0.0,
        use_noise_covariance: bool = True,
    ):
        self.dataset = dataset
        values = model_data.native if isinstance(model_data, Array2D) else np.asarray(model_data)
        try:
            self.model_data = Array2D(values, dataset.mask)
        except Exception as err:
            raise DatasetError(
                f"FitImaging: model_data does not fit the dataset mask: {err}"
            ) from None
        self.background_sky_level = background_sky_level
        self.use_noise_covariance = use_noise_covariance

    @property
    def mask(self):
        return self.dataset.mask

    @property
    def data(self) -> Array2D:
        return self.dataset.data - self.background_sky_level

    @property
    def noise_map(self) -> Array2D:
        return self.dataset.noise_map

    @property
    def model_image(self) -> Array2D:
        return self.model_data

    @cached_property
    def residual_map(self) -> Array2D:
        """``data - model``."""
        return self.data - self.model_data

    @cached_property
    def normalized_residual_map(self) -> Array2D:
        """``residual / noise``."""
        return self.residual_map / self.noise_map

    @cached_property
    def chi_squared_map(self) -> Array2D:
        """``(residual / noise) ** 2``."""
        return self.normalized_residual_map**2

    @cached_property
    def signal_to_noise_map(self) -> Array2D:
        return self.data / self.noise_map

    @cached_property
    def chi_squared(self) -> float:
        """``sum chi_squared_map``, or ``r^T C^-1 r`` with a noise covariance."""
        if self.use_noise_covariance and self.dataset.noise_covariance_matrix is not None:
            r = np.asarray(self.residual_map.slim)
            return float(r @ self.dataset.noise_covariance_matrix_inv @ r)
        return float(np.sum(self.chi_squared_map.slim))

    @cached_property
    def noise_normalization(self) -> float:
        """``sum log(2 pi sigma^2)`` over unmasked pixels."""
        return float(np.sum(np.log(2.0 * np.pi * np.asarray(self.noise_map.slim) ** 2.0)))

    @cached_property
    def log_likelihood(self) -> float:
        """``-0.5 (chi_squared + noise_normalization)``."""
        return -0.5 * (self.chi_squared + self.noise_normalization)

    @property
    def figure_of_merit(self) -> float:
        return self.log_likelihood
