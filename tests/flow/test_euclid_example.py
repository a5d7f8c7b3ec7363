"""The Euclid example config (configs/euclid_mef.yaml), unchanged, on made-up 8-band MEF cutouts
with NaN edges, a flagged saturated star and dead pixels (`lenspipe simulate --kind euclid-mef`,
pipeline.mock.euclid): `lenspipe run`
completes every band, with the bad pixels masked and counted as numpy alone says."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from pipeline.cli import main
from pipeline.io.store import dataset_records, open_imaging
from pipeline.mock.euclid import (
    DEAD_PIXEL_OFFSET,
    EUCLID_BANDS,
    SATURATED_BIT,
    STAR_OFFSET,
)

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "euclid_mef.yaml"
RADIUS = 2.5  # arcsec, the config's circle


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """The config copied beside made-up cutouts at its ``../euclid/cutouts``, and run."""
    root = tmp_path_factory.mktemp("euclid")
    (root / "configs").mkdir()
    config = root / "configs" / CONFIG.name
    shutil.copy(CONFIG, config)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        simulated = main(["simulate", str(root / "euclid" / "cutouts"), "--kind", "euclid-mef",
                          "--n", "1", "--seed", "3"])  # fmt: skip
        assert simulated == 0, err.getvalue()
        (cutout,) = (root / "euclid" / "cutouts").glob("EUC_MER_*.fits")
        validated = main(["validate", str(config)])
        code = main(["run", str(config), "--no-progress", "--workers", "1"])
    return root, cutout, validated, code, out.getvalue(), err.getvalue()


def expected(hdul: fits.HDUList, band: str) -> tuple[np.ndarray, dict[str, int]]:
    """The band's final mask (True = masked) and bad-pixel counts, from the file and numpy."""
    data = hdul[f"{band}_BGSUB"].data.astype(np.float64)
    noise = hdul[f"{band}_RMS"].data.astype(np.float64)
    flags = hdul[f"{band}_FLAG"].data
    scale = hdul[f"{band}_BGSUB"].header["PIXSCAY"]
    ny, nx = data.shape
    y = ((ny - 1) / 2 - np.arange(ny))[:, None] * scale
    x = (np.arange(nx) - (nx - 1) / 2)[None, :] * scale
    outside = y**2 + x**2 >= RADIUS**2  # unmasked iff d² < r² (as autoarray)
    saturated = (flags & (1 << SATURATED_BIT)) != 0
    unmasked = ~(outside | saturated)
    nonfinite = unmasked & ~np.isfinite(data)
    with np.errstate(invalid="ignore"):
        bad_noise = unmasked & ~nonfinite & ~(np.isfinite(noise) & (noise > 0))
    counts = {"nonfinite_data": int(nonfinite.sum()), "unusable_noise": int(bad_noise.sum())}
    return outside | saturated | nonfinite | bad_noise, counts


def test_validate_and_run_complete_every_band(survey):
    _, _, validated, code, out, err = survey
    assert validated == 0, out + err
    assert "8 datasets found" in out and "0 errors" in out
    assert code == 0, err
    assert "Bad pixels masked" in out


def test_bad_pixels_are_masked_and_counted_as_numpy_says(survey):
    root, cutout, *_ = survey
    store = root / "euclid" / "survey.zarr"
    records = dataset_records(store)
    lens = cutout.name.removesuffix(".fits")
    assert sorted(records) == sorted(f"{lens}_{band}" for band in EUCLID_BANDS)
    with fits.open(cutout) as hdul:
        for band, made in EUCLID_BANDS.items():
            name = f"{lens}_{band}"
            record = records[name]
            want, counts = expected(hdul, band)
            # the mock's edge reaches into the circle, its dead pixels lie inside it
            assert counts["nonfinite_data"] > 0 and counts["unusable_noise"] == 2
            assert dict(record.bad_pixels) == counts, name
            assert (record.bunit, record.band, record.lens) == (made.bunit, band, lens)
            assert record.n_pixels == int((~want).sum())
            imaging = open_imaging(store, name)
            np.testing.assert_array_equal(np.asarray(imaging.mask), want)
            data = hdul[f"{band}_BGSUB"].data.astype(np.float64)
            np.testing.assert_array_equal(imaging.data.native[~want], data[~want])
            # the saturated star is masked by the flag map, not counted as a bad pixel
            scale = made.pixel_scale
            row = int(round((want.shape[0] - 1) / 2 - STAR_OFFSET[0] / scale))
            col = int(round((want.shape[1] - 1) / 2 + STAR_OFFSET[1] / scale))
            assert want[row, col] and hdul[f"{band}_RMS"].data[row, col] == 0
            row = int(round((want.shape[0] - 1) / 2 - DEAD_PIXEL_OFFSET[0] / scale))
            col = int(round((want.shape[1] - 1) / 2 + DEAD_PIXEL_OFFSET[1] / scale))
            assert want[row, col] and hdul[f"{band}_FLAG"].data[row, col] == 0


def test_the_psf_is_trimmed_to_the_configured_fraction(survey):
    root, cutout, *_ = survey
    records = dataset_records(root / "euclid" / "survey.zarr")
    lens = cutout.name.removesuffix(".fits")
    with fits.open(cutout) as hdul:
        for band in EUCLID_BANDS:
            kernel = np.abs(hdul[f"{band}_PSF"].data.astype(np.float64))
            ky, kx = records[f"{lens}_{band}"].psf_shape
            assert ky % 2 == kx % 2 == 1 and ky <= kernel.shape[0] and kx <= kernel.shape[1]
            # the smallest centred odd box (by area) holding 99.9% of |K|, by brute force
            cy, cx = kernel.shape[0] // 2, kernel.shape[1] // 2
            boxes = [
                ((2 * hy + 1) * (2 * hx + 1), (2 * hy + 1, 2 * hx + 1))
                for hy in range(cy + 1)
                for hx in range(cx + 1)
                if kernel[cy - hy : cy + hy + 1, cx - hx : cx + hx + 1].sum()
                >= 0.999 * kernel.sum()
            ]
            smallest = min(area for area, _ in boxes)
            assert (ky, kx) in [shape for area, shape in boxes if area == smallest], band
            assert ky * kx < kernel.size  # every band's kernel is trimmed
