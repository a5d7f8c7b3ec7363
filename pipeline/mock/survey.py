"""A mock survey on disk: FITS files per lens, a manifest CSV and a ready config (for demos, tests
and benchmarks)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from pipeline.io.fits import write_fits_array
from pipeline.mock.lenses import simulate_lens

__all__ = ["simulate_survey"]

PIXEL_SCALE = 0.1  # arcsec

CONFIG_TEMPLATE = """\
# A mock survey written by `lenspipe simulate`: run it with `lenspipe run {config_name}`.
inputs:
  kind: manifest          # one row per lens: name, data, noise_map, psf, mask_radius
  path: manifest.csv
pixel_scales: {pixel_scale}       # arcsec per pixel
mask:
  kind: circular
  radius: 3.0             # arcsec; the manifest's mask_radius column overrides it per lens
over_sampling:
  kind: uniform
  lp: 4
  pixelization: 4
sparse_operator:
  backend: numpy          # numpy (BLAS, fastest on CPU) | numba | jax
  batch_size: {batch_size}         # most unmasked pixels (rows of W) per task, or auto: as many
                                   # as fit the memory budget (one task per small dataset)
  dtype: float64
output:
  store: {store}
cluster:
  kind: local{workers}
run:
  retries: 2
  max_tasks_in_flight: 64
"""


def simulate_survey(
    out: str | os.PathLike,
    n: int,
    *,
    seed: int = 0,
    shape_range: tuple[int, int] = (64, 100),
    psf_shapes: tuple[int, ...] = (11, 21),
    batch_size: int | str = "auto",
    n_workers: int | None = None,
) -> Path:
    """Write ``n`` mock lenses to ``out/<name>/{data,noise_map,psf}.fits`` with
    ``out/manifest.csv`` and ``out/survey.yaml`` (store ``out/survey.zarr``); returns the config
    path. Lens ``i`` is deterministic in ``seed + i``."""
    if n < 1:
        raise ValueError(f"simulate_survey needs at least one lens, got n={n}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        rng = np.random.default_rng(seed + i)
        ny = int(rng.integers(shape_range[0], shape_range[1] + 1))
        nx = int(rng.integers(shape_range[0], shape_range[1] + 1))
        k = int(psf_shapes[i % len(psf_shapes)])
        dataset = simulate_lens(
            (ny, nx),
            PIXEL_SCALE,
            psf_shape=(k, k),
            psf_sigma=float(rng.uniform(0.08, 0.15)),
            seed=seed + i,
            exposure_time=float(rng.uniform(500.0, 2000.0)),
        )
        psf = dataset.psf
        assert psf is not None  # simulate_lens always blurs with its Gaussian PSF
        name = f"lens_{seed + i:05d}"
        folder = out / name
        for role, array in (
            ("data", dataset.data.native),
            ("noise_map", dataset.noise_map.native),
            ("psf", psf.kernel.native),
        ):
            write_fits_array(
                folder / f"{role}.fits",
                array,
                pixel_scales=(PIXEL_SCALE, PIXEL_SCALE),
                overwrite=True,
            )
        # the largest circle that keeps the PSF footprint inside the frame
        radius = round(min(3.0, (min(ny, nx) / 2 - k // 2 - 1) * PIXEL_SCALE), 2)
        rows.append(
            {
                "name": name,
                "data": f"{name}/data.fits",
                "noise_map": f"{name}/noise_map.fits",
                "psf": f"{name}/psf.fits",
                "mask_radius": radius,
            }
        )
    with open(out / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    config = out / "survey.yaml"
    workers = f"\n  n_workers: {n_workers}" if n_workers else ""
    config.write_text(
        CONFIG_TEMPLATE.format(
            config_name=config.name,
            pixel_scale=PIXEL_SCALE,
            batch_size=batch_size,
            store="survey.zarr",
            workers=workers,
        )
    )
    return config
