"""Config + dataset spec -> :class:`~pipeline.imaging.Imaging`: load a dataset's FITS files,
check them, mask them (every mask kind, with the manifest's per-dataset overrides) and over-sample
them (every over-sampling kind).

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
    AnnularMask,
    CircularMask,
    Config,
    EllipticalMask,
    FileMask,
    MaskConfig,
    OverSamplingConfig,
    PsfConfig,
    RadialOverSampling,
)
from pipeline.flow.discover import DatasetSpec
from pipeline.imaging import (
    Array2D,
    Convolver,
    Imaging,
    Mask2D,
    over_sample_size_via_adapt_from,
    over_sample_size_via_radial_bins_from,
)
from pipeline.imaging.geometry import as_pixel_scales
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

    @classmethod
    def from_config(cls, config: Config) -> PrepareSettings:
        return cls(
            config.pixel_scales,
            config.mask,
            config.over_sampling,
            config.dataset_settings(),
            config.psf,
        )


def _trimmed(kernel: np.ndarray, config: PsfConfig) -> np.ndarray:
    """The kernel as ``psf`` says: whole, its central ``trim_to`` box, or the smallest box
    holding ``trim_fraction`` of its light (:mod:`pipeline.imaging.trimming`)."""
    if config.trim_to is not None:
        return trimmed_kernel(kernel, (config.trim_to[0], config.trim_to[1]))
    if config.trim_fraction is not None:
        return trimmed_kernel(kernel, trim_shape_for_fraction(kernel, config.trim_fraction))
    return kernel


def _mask_for(
    spec: DatasetSpec,
    settings: PrepareSettings,
    shape: tuple[int, int],
    scales: tuple[float, float],
) -> Mask2D:
    config = settings.mask
    if isinstance(config, FileMask):
        if spec.mask is None:
            raise DatasetError(
                f"mask.kind is 'file' but the dataset of data '{spec.data.path}' has no mask file "
                "(folders: mask:, manifest: mask column, MEF: band mask EXTNAME)"
            )
        mask = Mask2D.from_fits(spec.mask.path, scales, hdu=spec.mask.hdu)
        if mask.shape_native != shape:
            raise DatasetError(
                f"mask file '{spec.mask.path}' HDU {spec.mask.hdu!r} has shape {mask.shape_native} "
                f"but the data are {shape}"
            )
        return mask
    centre = spec.mask_centre or config.centre
    if isinstance(config, CircularMask):
        return Mask2D.circular(
            shape_native=shape,
            pixel_scales=scales,
            radius=spec.mask_radius or config.radius,
            centre=centre,
        )
    if isinstance(config, AnnularMask):
        outer = spec.mask_radius or config.outer_radius
        return Mask2D.circular_annular(
            shape_native=shape,
            pixel_scales=scales,
            inner_radius=config.inner_radius,
            outer_radius=outer,
            centre=centre,
        )
    if isinstance(config, EllipticalMask):
        return Mask2D.elliptical(
            shape_native=shape,
            pixel_scales=scales,
            major_axis_radius=spec.mask_radius or config.major_axis_radius,
            axis_ratio=config.axis_ratio,
            angle=config.angle,
            centre=centre,
        )
    raise DatasetError(f"unsupported mask settings {config!r}")


def _describe_mask(spec: DatasetSpec, settings: PrepareSettings) -> str:
    """The mask as the user specified it: its file, or its kind and parameters (with the
    dataset's manifest overrides)."""
    config = settings.mask
    if isinstance(config, FileMask):
        file = spec.mask
        return f"file '{file.path}' HDU {file.hdu!r}" if file is not None else "file"
    params = config.model_dump(exclude={"kind"})
    if spec.mask_centre:
        params["centre"] = tuple(spec.mask_centre)
    if spec.mask_radius:
        key = {"circular": "radius", "annular": "outer_radius"}.get(
            config.kind, "major_axis_radius"
        )
        params[key] = spec.mask_radius
    return f"{config.kind} ({', '.join(f'{k}={v}' for k, v in params.items())}; arcsec)"


@dataclass(frozen=True)
class PreparedDataset:
    """A prepared dataset and what preparing it found: ``bad_pixels``, the pixels masked by
    ``bad_pixels: mask`` counted by kind (``nonfinite_data``, ``unusable_noise``; a pixel with
    both counts once, as data), ``None`` under ``bad_pixels: fail``."""

    imaging: Imaging
    bad_pixels: dict[str, int] | None = None


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
    from pipeline.io.fits import pixel_scales_from_header, read_fits_array
    from pipeline.operators.precision import inverse_variance_from

    name = spec.name
    data = read_fits_array(spec.data.path, spec.data.hdu, dataset=name)
    noise = read_fits_array(spec.noise_map.path, spec.noise_map.hdu, dataset=name)
    kernel = read_fits_array(spec.psf.path, spec.psf.hdu, dataset=name)
    if data.shape != noise.shape:
        raise DatasetError(
            f"data '{spec.data.path}' HDU {spec.data.hdu!r} is {data.shape} but noise map "
            f"'{spec.noise_map.path}' HDU {spec.noise_map.hdu!r} is {noise.shape}"
        )
    pixel_scales = spec.pixel_scales or settings.pixel_scales
    if pixel_scales == "header":
        pixel_scales = pixel_scales_from_header(spec.data.path, spec.data.hdu, dataset=name)
    scales = as_pixel_scales(
        tuple(pixel_scales) if isinstance(pixel_scales, list) else pixel_scales
    )
    mask = _mask_for(spec, settings, data.shape, scales)
    bad_pixels: dict[str, int] | None = None
    if (spec.bad_pixels or settings.mask.bad_pixels) == "mask":
        mask, bad_pixels = _mask_bad_pixels(mask, data, noise)
    if mask.pixels_in_mask == 0:
        raise DatasetError(
            f"the mask {_describe_mask(spec, settings)} leaves no unmasked pixel of data "
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
    return PreparedDataset(imaging, bad_pixels)
