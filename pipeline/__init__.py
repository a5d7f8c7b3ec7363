"""lenspipe: survey-scale preparation of strong-lensing imaging data for pixelized modelling.

The in-memory API follows ``autolens.Imaging``::

    import pipeline as lp

    dataset = lp.Imaging.from_fits(pixel_scales=0.1, data_path=..., noise_map_path=..., psf_path=...)
    dataset = dataset.apply_mask(lp.Mask2D.circular(dataset.shape_native, 0.1, radius=3.0))
"""

from pipeline import exc
from pipeline.imaging import (
    Array2D,
    Convolver,
    FitImaging,
    Grid2D,
    GridsDataset,
    Imaging,
    Mask2D,
    OverSampler,
    SimulatorImaging,
    over_sample_size_via_adapt_from,
    over_sample_size_via_radial_bins_from,
    over_sample_size_via_snr_from,
)

__version__ = "0.1.0"

from pipeline.io.store import list_datasets, open_imaging, open_operator, write_imaging  # noqa: E402

__all__ = [
    "Array2D",
    "Convolver",
    "FitImaging",
    "Grid2D",
    "GridsDataset",
    "Imaging",
    "Mask2D",
    "OverSampler",
    "SimulatorImaging",
    "exc",
    "list_datasets",
    "open_imaging",
    "open_operator",
    "write_imaging",
    "over_sample_size_via_adapt_from",
    "over_sample_size_via_radial_bins_from",
    "over_sample_size_via_snr_from",
]
