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
    "StoreNotFoundError",
    "NotAStoreError",
    "StoreLockedError",
    "InvalidDatasetNameError",
    "DatasetExistsError",
    "DatasetNotFoundError",
    "DatasetNotCompleteError",
    "DamagedDatasetError",
    "UnsafeStoreError",
    "StoreVersionError",
    "InputFileError",
    "ConfigError",
    "ClusterError",
    "OptionalDependencyError",
    "RunInterrupted",
    "LenspipeWarning",
    "MaskPaddedWarning",
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

    def __str__(self) -> str:
        # one plain message: OSError formats ``(errno, strerror)`` pairs, KeyError (a base of
        # DatasetNotFoundError) quotes its argument
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class StoreNotFoundError(StoreError, FileNotFoundError):
    """No Zarr store at the location (nothing to open for reading): a run would create one."""


class NotAStoreError(StoreError):
    """The location holds a Zarr group, but not a lenspipe store (no ``lenspipe`` attribute)."""


class StoreLockedError(StoreError):
    """Another run holds the store's run lock (or took it at the same time, or took it over from
    this run): the message names the other run, its host and pid."""


class InvalidDatasetNameError(StoreError, ValueError):
    """A dataset name is not a safe store key (characters, length, a reserved name)."""


class DatasetExistsError(StoreError):
    """A dataset of that name is already in the store and overwriting it was not asked for."""


class DatasetNotFoundError(StoreError, KeyError):
    """No dataset of that name in the store (nothing at all at its path)."""


class DatasetNotCompleteError(StoreError):
    """A reader asked for a dataset whose status is not ``complete`` (prepared, failed, being
    prepared): the message gives the status and, for a failed dataset, its error."""


class DamagedDatasetError(StoreError):
    """A dataset's stored data cannot be trusted: a node its status promises is missing, a
    metadata document or a chunk does not decode (checksum mismatch, torn file), or arrays
    disagree with the attributes. The message names the dataset, the node and the repair."""


class UnsafeStoreError(StoreError):
    """Writing there could destroy what is not the store's own: an empty location or the current
    folder, an existing file or non-empty folder that is not a lenspipe store, a node that is not
    a lenspipe dataset group where one would be (over)written."""


class StoreVersionError(StoreError):
    """The store was written with a newer store schema than this lenspipe reads."""


class InputFileError(PipelineError, OSError):
    """An input file cannot be used: missing, not a regular file (a FIFO, a device, a folder),
    or unreadable. The message names the file."""


class ConfigError(PipelineError, ValueError):
    """A configuration file is invalid: the message names the key and the fix."""


class OptionalDependencyError(PipelineError, ImportError):
    """An optional dependency is not installed: the message names the ``pip install`` command
    (e.g. ``pip install "lenspipe[autoarray]"``)."""


class ClusterError(PipelineError, ConnectionError):
    """The Dask cluster cannot be started or reached."""


class RunInterrupted(KeyboardInterrupt):
    """A stop signal (SIGINT, SIGTERM, SIGHUP) reached the driver before its tasks were
    submitted; ``exit_code`` is 128 + the signal number. Not a :class:`PipelineError`: like
    Ctrl-C's ``KeyboardInterrupt``, it must pass through ``except Exception``."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


class LenspipeWarning(UserWarning):
    """Base class of every warning lenspipe issues (``warnings.simplefilter`` on it silences or
    raises all of them)."""


class MaskPaddedWarning(LenspipeWarning):
    """A mask was padded with masked pixels so that it holds the blurring region of a PSF."""
