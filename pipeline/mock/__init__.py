"""Mock strong lenses: analytic profiles, random lenses and their datasets, a survey on disk.

For demos, tests, benchmarks and `lenspipe simulate`; the data path (flow/, io/) never imports it.
"""

from pipeline.mock.euclid import EUCLID_BANDS, MockBand, simulate_euclid_cutouts
from pipeline.mock.lenses import random_mock_lens, simulate_lens
from pipeline.mock.profiles import (
    ExternalShear,
    Isothermal,
    MassProfile,
    MockLens,
    Sersic,
    sersic_constant,
    trace_to_source,
)
from pipeline.mock.survey import simulate_survey

__all__ = [
    "EUCLID_BANDS",
    "ExternalShear",
    "Isothermal",
    "MassProfile",
    "MockBand",
    "MockLens",
    "Sersic",
    "random_mock_lens",
    "sersic_constant",
    "simulate_euclid_cutouts",
    "simulate_lens",
    "simulate_survey",
    "trace_to_source",
]
