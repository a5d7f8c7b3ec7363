"""The one exception hierarchy of lenspipe.

Every error raised on purpose by the package derives from :class:`PipelineError`. Each subclass
also derives from the closest builtin, so callers may catch either (``except ValueError`` keeps
working for code ported from PyAutoLens, whose exceptions are plain ``Exception`` subclasses).

Messages name what is wrong and where: the dataset, the file and HDU, the array and pixel.
"""

from __future__ import annotations

__all__ = [
    "PipelineError",
    "MaskError",
    "ArrayError",
    "GridError",
    "KernelError",
    "DatasetError",
    "OverSamplingError",
    "InvalidValueError",
    "FitsReadError",
    "FitsWriteError",
    "OperatorError",
    "StoreError",
    "ConfigError",
    "ClusterError",
]


class PipelineError(Exception):
    """Base class of every error raised on purpose by lenspipe."""


class MaskError(PipelineError, ValueError):
    """A mask is invalid or incompatible (shape, pixel scales, no unmasked pixel, radii)."""


class ArrayError(PipelineError, ValueError):
    """An array has the wrong shape or dtype for its mask."""


class GridError(PipelineError, ValueError):
    """A grid of coordinates is invalid."""


class KernelError(PipelineError, ValueError):
    """A PSF kernel is invalid (even or non-2-D shape, zero sum, non-finite values)."""


class DatasetError(PipelineError, ValueError):
    """An imaging dataset is inconsistent (shapes, noise, masks, PSF state)."""


class OverSamplingError(DatasetError):
    """An over-sampling size is invalid (not an integer, < 1, wrong shape)."""


class InvalidValueError(DatasetError):
    """NaN, infinite, zero or negative values where they are not allowed.

    The message names the dataset, the array and the first offending pixel (row, col).
    """


class FitsReadError(PipelineError, OSError):
    """A FITS file could not be read: the message names the file and the HDU."""


class FitsWriteError(PipelineError, OSError):
    """A FITS file could not be written."""


class OperatorError(PipelineError, ValueError):
    """The sparse operator cannot be built or applied (layout, shapes, backend)."""


class StoreError(PipelineError, OSError):
    """A Zarr survey store is missing, incompatible, locked or incomplete."""


class ConfigError(PipelineError, ValueError):
    """A configuration file is invalid: the message names the key and the fix."""


class ClusterError(PipelineError, ConnectionError):
    """The Dask cluster cannot be started or reached."""
