"""lenspipe: survey-scale preparation of strong-lensing imaging data for pixelized modelling.

The in-memory API follows ``autolens.Imaging``::

    import pipeline as lp

    dataset = lp.Imaging.from_fits(pixel_scales=0.1, data_path=..., noise_map_path=..., psf_path=...)
    dataset = dataset.apply_mask(lp.Mask2D.circular(dataset.shape_native, 3.0, 0.1))

The package's front door is lazy (PEP 562): ``import pipeline`` loads nothing but this file, and
each name below loads its module on first use, so that ``import pipeline.imaging`` or
``pipeline.operators`` (numpy only) never pays for Zarr, fsspec or Dask (tests/test_layers.py).
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("lenspipe")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

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
    "__version__",
    "exc",
    "from_autoarray",
    "list_datasets",
    "open_imaging",
    "open_operator",
    "over_sample_size_via_adapt_from",
    "over_sample_size_via_radial_bins_from",
    "over_sample_size_via_snr_from",
    "to_autoarray",
    "to_autoarray_from_store",
    "write_imaging",
]

# public name -> the module that defines it (all of __all__ but these and exc, __version__)
_STORE_NAMES = frozenset({"list_datasets", "open_imaging", "open_operator", "write_imaging"})
_INTEROP_NAMES = frozenset({"from_autoarray", "to_autoarray", "to_autoarray_from_store"})
_HOMES = {
    name: "pipeline.io.store"
    if name in _STORE_NAMES
    else "pipeline.interop"
    if name in _INTEROP_NAMES
    else "pipeline.imaging"
    for name in __all__
    if name not in ("exc", "__version__")
}

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads them
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
    from pipeline.interop import from_autoarray, to_autoarray, to_autoarray_from_store
    from pipeline.io.store import list_datasets, open_imaging, open_operator, write_imaging


def __getattr__(name: str) -> Any:
    if name == "exc":
        return importlib.import_module("pipeline.exc")
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
