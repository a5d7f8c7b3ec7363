"""A small multi-extension FITS survey on disk, as Euclid MER cutouts come: one file per lens with
named HDUs per band (``VIS_BGSUB``, ``VIS_RMS``, ``VIS_PSF``, ``NIR_H_…``) carrying BUNIT cards,
and a config that runs it. One band of one lens has a NaN at its centre, so that dataset fails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from astropy.io import fits

from pipeline.mock import simulate_lens

# band: (pixel scale in arcsec, frame side in pixels, PSF side, BUNIT)
BANDS = {
    "VIS": (0.1, 44, 5, "electron/s"),
    "NIR_H": (0.2, 24, 3, "MJy/sr"),
}
BROKEN_BAND = "NIR_H"  # of the last lens: a NaN at the centre of its data
SCALES = (1.0, 0.8, 1.2)  # lens i's pixel scales: the band's times SCALES[i % 3]


def write_mef_survey(folder: Path, n_lenses: int = 3, *, seed: int = 20) -> Path:
    """``folder/cutouts/lens<i>.fits`` for ``n_lenses`` lenses and ``folder/survey.yaml`` (store
    ``folder/survey.zarr``); returns the config path. Datasets are ``lens<i>_<band>``; the last
    lens's ``NIR_H`` fails (NaN data at an unmasked pixel). Lens ``i`` is exposed 300·4^i s."""
    cutouts = folder / "cutouts"
    cutouts.mkdir(parents=True, exist_ok=True)
    for i in range(n_lenses):
        hdus: list[fits.PrimaryHDU | fits.ImageHDU] = [fits.PrimaryHDU()]
        # pixel scales and depths differ per lens, so the mask's unmasked pixels and the S/N
        # differ and sort in other orders than the names
        zoom = SCALES[i % len(SCALES)]
        for b, (band, (scale, side, k, bunit)) in enumerate(BANDS.items()):
            scale = round(scale * zoom, 4)
            lens = simulate_lens(
                (side, side),
                scale,
                psf_shape=(k, k),
                psf_sigma=1.2 * scale,
                seed=seed + 10 * i + b,
                exposure_time=300.0 * 4**i,
            )
            data = np.array(lens.data.native)
            if i == n_lenses - 1 and band == BROKEN_BAND:
                data[side // 2, side // 2] = np.nan
            cards = {"BUNIT": bunit, "PIXSCAY": scale, "PIXSCAX": scale}
            for suffix, array in (
                ("BGSUB", data),
                ("RMS", lens.noise_map.native),
                ("PSF", lens.psf.kernel.native),  # type: ignore[union-attr]
            ):
                header = fits.Header(cards if suffix != "PSF" else {**cards, "BUNIT": ""})
                hdus.append(fits.ImageHDU(np.asarray(array), header, name=f"{band}_{suffix}"))
        fits.HDUList(hdus).writeto(cutouts / f"lens{i}.fits")
    config = {
        "inputs": {
            "kind": "mef",
            "root": "cutouts",
            "pattern": "*.fits",
            "bands": {
                band: {"data": f"{band}_BGSUB", "noise_map": f"{band}_RMS", "psf": f"{band}_PSF"}
                for band in BANDS
            },
        },
        "pixel_scales": "header",
        "mask": {"kind": "circular", "radius": 1.6},
        "over_sampling": {"kind": "uniform", "lp": 1, "pixelization": 1},
        "sparse_operator": {"backend": "numpy", "batch_size": "auto", "dtype": "float64"},
        "output": {"store": "survey.zarr"},
        "cluster": {"kind": "local", "n_workers": 1},
        "run": {"progress": False},
    }
    path = folder / "survey.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
