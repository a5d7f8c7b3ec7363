"""The ``lenspipe`` command line.

Exit codes: 0 success, 1 unexpected error, 2 usage or input error (a :class:`PipelineError`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np

from pipeline.exc import PipelineError

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lenspipe")
def cli() -> None:
    """lenspipe: prepare strong-lensing imaging surveys for pixelized lens modelling."""


@cli.command()
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("lenspipe-demo"),
    show_default=True,
    help="Folder for the simulated survey.",
)
@click.option(
    "--n",
    "n",
    type=click.IntRange(1, 10_000),
    default=4,
    show_default=True,
    help="Number of mock lenses.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the first lens.")
def demo(out: Path, n: int, seed: int) -> None:
    """Simulate a small survey to FITS, load every lens back, mask it and inspect it."""
    from pipeline.imaging import FitImaging, Imaging, Mask2D
    from pipeline.imaging.simulator import simulate_lens

    rows = []
    for i in range(n):
        name = f"lens_{i:04d}"
        shape = (64, 64) if i % 2 == 0 else (80, 72)
        psf_shape = (11, 11) if i % 2 == 0 else (21, 21)
        simulated = simulate_lens(shape, 0.1, psf_shape=psf_shape, psf_sigma=0.1, seed=seed + i)
        folder = out / name
        simulated.data.output_to_fits(folder / "data.fits", overwrite=True)
        simulated.noise_map.output_to_fits(folder / "noise_map.fits", overwrite=True)
        simulated.psf.kernel.output_to_fits(folder / "psf.fits", overwrite=True)

        dataset = Imaging.from_fits(
            pixel_scales="header",
            data_path=folder / "data.fits",
            noise_map_path=folder / "noise_map.fits",
            psf_path=folder / "psf.fits",
            name=name,
        )
        mask = Mask2D.circular(dataset.shape_native, dataset.pixel_scales, radius=2.6)
        masked = dataset.apply_mask(mask)
        mask.output_to_fits(folder / "mask.fits", overwrite=True)
        model = np.zeros(masked.shape_slim)
        fit = FitImaging(masked, model)
        rows.append(
            (
                name,
                dataset.shape_native,
                masked.shape_slim,
                masked.psf.shape_native,
                masked.signal_to_noise_max,
                fit.chi_squared / masked.shape_slim,
            )
        )

    click.echo(f"Simulated {n} lenses into {out}/ (data, noise_map, psf, mask FITS per lens)\n")
    click.echo(
        f"{'dataset':<11} {'frame':>9} {'N pixels':>9} {'PSF':>7} {'max S/N':>8} {'chi2/N (no model)':>18}"
    )
    for name, shape, npix, psf, snr, chi in rows:
        click.echo(
            f"{name:<11} {shape[0]:>4}x{shape[1]:<4} {npix:>9} {psf[0]:>3}x{psf[1]:<3} "
            f"{snr:>8.1f} {chi:>18.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lenspipe`` console script."""
    try:
        cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 1
    except click.ClickException as err:
        err.show()
        return 2
    except PipelineError as err:
        click.echo(f"error: {err}", err=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
