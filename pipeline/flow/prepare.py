"""Config + dataset spec -> :class:`~pipeline.imaging.Imaging`: load a dataset's FITS files,
check them, mask them (every mask kind and their unions, with the manifest's per-dataset
overrides: :mod:`pipeline.flow.masks`) and over-sample them (every over-sampling kind).

Pure: it reads the dataset's files and nothing else (no Dask, no store); the prepare task
(:func:`pipeline.flow.tasks.prepare_task`) writes what it returns. Every error is a
:class:`~pipeline.exc.DatasetError` naming the dataset and, where it comes from a file, the file
and HDU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from pipeline.exc import DatasetError, InvalidValueError, KernelError
from pipeline.flow.config import (
    AdaptiveOverSampling,
    Config,
    MaskConfig,
    OverSamplingConfig,
    PsfConfig,
    RadialOverSampling,
)
from pipeline.flow.discover import DatasetSpec
from pipeline.flow.masks import dataset_mask, describe_mask
from pipeline.imaging import (
    Array2D,
    Convolver,
    Imaging,
    Mask2D,
    over_sample_size_via_adapt_from,
    over_sample_size_via_radial_bins_from,
)
from pipeline.imaging.geometry import (
    PIXEL_SCALE_TOLERANCE,
    as_pixel_scales,
    pixel_scale_mismatch,
)
from pipeline.imaging.trimming import trim_shape_for_fraction, trimmed_kernel

__all__ = ["PrepareSettings", "PreparedDataset", "prepare_dataset", "prepare_imaging"]


@dataclass(frozen=True)
class PrepareSettings:
    """The parts of the config that make a dataset (picklable, small); ``recorded``: the
    settings written with each dataset (their hash tells a resume whether they changed)."""

    pixel_scales: float | tuple[float, float] | Literal["header"]
    mask: MaskConfig
    over_sampling: OverSamplingConfig
    recorded: dict[str, Any] = field(default_factory=dict)
    psf: PsfConfig = field(default_factory=PsfConfig)
    pixel_scales_check: Literal["warn", "strict"] = "warn"

    @classmethod
    def from_config(cls, config: Config) -> PrepareSettings:
        return cls(
            config.pixel_scales,
            config.mask,
            config.over_sampling,
            config.dataset_settings(),
            config.psf,
            config.pixel_scales_check,
        )


def _trimmed(kernel: np.ndarray, config: PsfConfig) -> np.ndarray:
    """The kernel as ``psf`` says: whole, its central ``trim_to`` box, or the smallest box
    holding ``trim_fraction`` of its light (:mod:`pipeline.imaging.trimming`)."""
    if config.trim_to is not None:
        return trimmed_kernel(kernel, (config.trim_to[0], config.trim_to[1]))
    if config.trim_fraction is not None:
        return trimmed_kernel(kernel, trim_shape_for_fraction(kernel, config.trim_fraction))
    return kernel


@dataclass(frozen=True)
class PreparedDataset:
    """A prepared dataset and what preparing it found: ``bad_pixels``, the pixels masked by
    ``bad_pixels: mask`` counted by kind (``nonfinite_data``, ``unusable_noise``; a pixel with
    both counts once, as data), ``None`` under ``bad_pixels: fail``; ``bunit``, the data HDU's
    ``BUNIT`` card (``None`` without one); ``mask_members``, the pixels each member of a combined
    or flag-map mask masks (:meth:`~pipeline.flow.masks.DatasetMask.counts`)."""

    imaging: Imaging
    bad_pixels: dict[str, int] | None = None
    bunit: str | None = None
    mask_members: list[dict[str, int | str]] | None = None

    def metadata(self) -> dict[str, Any]:
        """What the store records of it beside the arrays' own metadata: ``bad_pixels``,
        ``bunit`` and ``mask_members``, each only when there is one (older stores hold none)."""
        found: dict[str, Any] = {}
        if self.bad_pixels is not None:
            found["bad_pixels"] = dict(self.bad_pixels)
        if self.bunit is not None:
            found["bunit"] = self.bunit
        if self.mask_members is not None:
            found["mask_members"] = [dict(m) for m in self.mask_members]
        return found


def _bunit(header: Any) -> str | None:
    """The ``BUNIT`` card (stripped), ``None`` when absent, blank or not text."""
    value = header.get("BUNIT")
    return (value.strip() or None) if isinstance(value, str) else None


def _checked_scales(
    spec: DatasetSpec, settings: PrepareSettings, header: Any
) -> tuple[float, float]:
    """The dataset's ``(sy, sx)`` arcsec: the manifest's or folder's, else the config's, else
    (``header``) the data header's. Under ``pixel_scales_check: strict`` an explicit scale more
    than :data:`~pipeline.imaging.geometry.PIXEL_SCALE_TOLERANCE` from the header's (where it
    gives one) fails the dataset (``warn``: only ``validate`` reports it)."""
    from pipeline.exc import FitsReadError
    from pipeline.io.fits import pixel_scales_from_header

    explicit = spec.pixel_scales or settings.pixel_scales
    if explicit == "header":
        return as_pixel_scales(pixel_scales_from_header(header, spec.data.hdu, dataset=spec.name))
    scales = as_pixel_scales(tuple(explicit) if isinstance(explicit, list) else explicit)
    if settings.pixel_scales_check == "strict":
        try:
            in_header = pixel_scales_from_header(header, spec.data.hdu, dataset=spec.name)
        except FitsReadError:
            return scales  # a header without a scale is not compared
        worst = pixel_scale_mismatch(scales, in_header)
        if worst > PIXEL_SCALE_TOLERANCE:
            raise DatasetError(
                f"pixel scales {scales[0]:g}x{scales[1]:g} arcsec differ by {worst:.1%} from "
                f"the {in_header[0]:g}x{in_header[1]:g} arcsec of data '{spec.data.path}' HDU "
                f"{spec.data.hdu!r}'s header (pixel_scales_check: strict): fix whichever is "
                "wrong, or use pixel_scales: header"
            )
    return scales


def prepare_imaging(spec: DatasetSpec, settings: PrepareSettings) -> Imaging:
    """The dataset of :func:`prepare_dataset`, without what preparing it found."""
    return prepare_dataset(spec, settings).imaging


def _mask_bad_pixels(
    mask: Mask2D, data: np.ndarray, noise: np.ndarray
) -> tuple[Mask2D, dict[str, int]]:
    """``mask`` with the unmasked pixels whose data are not finite or whose noise cannot
    weight W (:func:`~pipeline.operators.precision.unusable_noise`) masked too, and their
    counts by kind."""
    from pipeline.operators.precision import unusable_noise

    unmasked = ~np.asarray(mask)
    nonfinite_data = unmasked & ~np.isfinite(data)
    bad_noise = unmasked & ~nonfinite_data & unusable_noise(noise)
    counts = {
        "nonfinite_data": int(nonfinite_data.sum()),
        "unusable_noise": int(bad_noise.sum()),
    }
    if not (counts["nonfinite_data"] or counts["unusable_noise"]):
        return mask, counts
    combined = np.asarray(mask) | nonfinite_data | bad_noise
    return Mask2D(combined, mask.pixel_scales, mask.origin), counts


def prepare_dataset(spec: DatasetSpec, settings: PrepareSettings) -> PreparedDataset:
    """Load, validate, mask and over-sample one dataset (a pure function of its files).

    Only unmasked pixels are validated (NaN borders outside the mask are fine), noise included
    for the operator: ``1/sigma**2`` must be a finite normal float64
    (:func:`~pipeline.operators.precision.inverse_variance_from`); every error names the dataset
    and, where it comes from a file, the file and HDU.
    """
    from pipeline.io.fits import read_fits_array, read_fits_image
    from pipeline.operators.precision import inverse_variance_from

    name = spec.name
    data, header = read_fits_image(spec.data.path, spec.data.hdu, dataset=name)
    noise = read_fits_array(spec.noise_map.path, spec.noise_map.hdu, dataset=name)
    kernel = read_fits_array(spec.psf.path, spec.psf.hdu, dataset=name)
    if data.shape != noise.shape:
        raise DatasetError(
            f"data '{spec.data.path}' HDU {spec.data.hdu!r} is {data.shape} but noise map "
            f"'{spec.noise_map.path}' HDU {spec.noise_map.hdu!r} is {noise.shape}"
        )
    scales = _checked_scales(spec, settings, header)
    built = dataset_mask(spec, settings.mask, data.shape, scales)
    mask = built.mask
    bad_pixels: dict[str, int] | None = None
    if (spec.bad_pixels or settings.mask.bad_pixels) == "mask":
        mask, bad_pixels = _mask_bad_pixels(mask, data, noise)
    if mask.pixels_in_mask == 0:
        raise DatasetError(
            f"the mask {describe_mask(spec, settings.mask)} leaves no unmasked pixel of data "
            f"'{spec.data.path}' HDU {spec.data.hdu!r} ({data.shape[0]}x{data.shape[1]} pixels "
            f"of {scales[0]:g}x{scales[1]:g} arcsec)"
        )
    try:
        psf = Convolver(_trimmed(kernel, settings.psf), pixel_scales=scales)
    except KernelError as err:
        raise DatasetError(f"PSF '{spec.psf.path}' HDU {spec.psf.hdu!r}: {err}") from None
    try:
        masked = Imaging(
            Array2D(data, mask),
            Array2D(noise, mask),
            psf,
            over_sample_size_lp=1,
            over_sample_size_pixelization=1,
            name=name,
        )
        # W needs 1/sigma**2 as a finite normal float64 at every unmasked pixel: refuse here,
        # naming the files, rather than compute inf/0 weights (issue 11)
        inverse_variance_from(
            masked.noise_map.native, np.asarray(mask), label=f"dataset {name!r}: the noise map"
        )
    except KernelError as err:
        raise DatasetError(f"PSF '{spec.psf.path}' HDU {spec.psf.hdu!r}: {err}") from None
    except InvalidValueError as err:
        files = f"data '{spec.data.path}', noise map '{spec.noise_map.path}'"
        raise DatasetError(f"{err} ({files})") from None
    over = settings.over_sampling
    lp: Array2D | int
    if isinstance(over, RadialOverSampling):
        lp = over_sample_size_via_radial_bins_from(
            masked.grid, over.sub_size_list, over.radial_list, centre_list=[mask.mask_centre]
        )
    elif isinstance(over, AdaptiveOverSampling):
        lp = over_sample_size_via_adapt_from(
            masked.data,
            masked.noise_map,
            over.signal_to_noise_cut,
            over.sub_size_lower,
            over.sub_size_upper,
        )
    else:
        lp = over.lp
    imaging = masked.apply_over_sampling(
        over_sample_size_lp=lp, over_sample_size_pixelization=over.pixelization
    )
    return PreparedDataset(imaging, bad_pixels, _bunit(header), built.counts())
