"""The in-memory dataset model: masks, arrays, grids, over-sampling, PSF, imaging, fit, simulator.

Pure numpy/scipy: nothing here imports Dask or Zarr. FITS reading and writing is delegated to
:mod:`pipeline.io.fits` at call time.
"""

from pipeline.imaging.arrays import Array2D
from pipeline.imaging.convolver import Convolver
from pipeline.imaging.dataset import Imaging
from pipeline.imaging.fit import FitImaging
from pipeline.imaging.grids import Grid2D, GridsDataset
from pipeline.imaging.mask import Mask2D
from pipeline.imaging.over_sampling import (
    OverSampler,
    over_sample_size_via_adapt_from,
    over_sample_size_via_radial_bins_from,
    over_sample_size_via_snr_from,
)
from pipeline.imaging.simulator import SimulatorImaging

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
    "over_sample_size_via_adapt_from",
    "over_sample_size_via_radial_bins_from",
    "over_sample_size_via_snr_from",
]
