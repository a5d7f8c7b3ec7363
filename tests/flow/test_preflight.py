"""The checks of every input file before a run (:mod:`pipeline.flow.preflight`, issue 14 scope 2),
on real FITS files written here and datasets found by the real discovery: each kind of broken
input is one problem record naming the dataset, file and HDU, all of them at once; explicit pixel
scales are compared with the header's; the PSF-trimming estimate matches an independent count."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from pipeline.flow.config import config_from_dict
from pipeline.flow.discover import discover
from pipeline.flow.preflight import Problem, format_bytes, preflight
from pipeline.io.fits import write_fits_array, write_fits_hdus

SHAPE = (20, 24)
COLUMNS = ("name", "data", "noise_map", "psf", "data_hdu", "noise_map_hdu", "psf_hdu")
COLUMNS += ("pixel_scale", "mask", "flags")


def gaussian_psf(shape: tuple[int, int], sigma: float = 1.0) -> np.ndarray:
    y, x = np.indices(shape, dtype=float)
    kernel = np.exp(-((y - shape[0] // 2) ** 2 + (x - shape[1] // 2) ** 2) / (2 * sigma**2))
    return kernel / kernel.sum()


def write_lens(
    folder: Path, *, shape=SHAPE, psf_shape=(5, 5), scale: float | None = 0.1, sigma=1.0
) -> dict[str, str]:
    """data/noise_map/psf.fits in ``folder``; returns the manifest row (paths relative)."""
    rng = np.random.default_rng(len(folder.name))
    write_fits_array(folder / "data.fits", rng.normal(size=shape), pixel_scales=scale)
    write_fits_array(folder / "noise_map.fits", np.ones(shape), pixel_scales=scale)
    write_fits_array(folder / "psf.fits", gaussian_psf(psf_shape, sigma), pixel_scales=scale)
    name = folder.name
    return {"name": name, **{r: f"{name}/{r}.fits" for r in ("data", "noise_map", "psf")}}


def manifest_config(root: Path, rows: list[dict], **settings):
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return config_from_dict(
        {
            "inputs": {"kind": "manifest", "path": "manifest.csv"},
            "pixel_scales": "header",
            "mask": {"kind": "circular", "radius": 0.8},
            "output": {"store": "out.zarr"},
            **settings,
        },
        base_dir=root,
    )


def check(config, **options):
    found = discover(config)
    assert found.problems == []
    return preflight(config, found.specs, **options)


def by_dataset(problems: list[Problem]) -> dict[str, Problem]:
    named = {p.dataset: p for p in problems}
    assert len(named) == len(problems), problems
    return named


# ---------------------------------------------------------------------------------------- broken
@pytest.fixture
def broken(tmp_path) -> tuple:
    """A manifest survey with one good lens and the issue's five kinds of broken input."""
    rows = [write_lens(tmp_path / n) for n in ("good", "no_psf", "cube", "bad_noise", "no_scale")]
    (tmp_path / "no_psf" / "psf.fits").unlink()
    cube = tmp_path / "cube" / "data.fits"
    fits.PrimaryHDU(np.zeros((3, *SHAPE))).writeto(cube, overwrite=True)
    write_fits_array(tmp_path / "bad_noise" / "noise_map.fits", np.ones((20, 25)), overwrite=True)
    write_fits_array(tmp_path / "no_scale" / "data.fits", np.ones(SHAPE), overwrite=True)
    mef = tmp_path / "mef.fits"
    write_fits_hdus(
        mef,
        {"IMAGE": np.ones(SHAPE), "RMS": np.ones(SHAPE), "PSF": gaussian_psf((5, 5))},
        pixel_scales=0.1,
    )
    rows.append(
        {
            "name": "bad_hdu",
            "data": "mef.fits",
            "noise_map": "mef.fits",
            "psf": "mef.fits",
            "data_hdu": "SCI",
            "noise_map_hdu": "RMS",
            "psf_hdu": "psf",  # EXTNAMEs are matched case-insensitively
        }
    )
    return tmp_path, manifest_config(tmp_path, rows)


def test_every_broken_input_is_reported_at_once(broken):
    root, config = broken
    checked = check(config)
    assert checked.warnings == []
    errors = by_dataset(checked.errors)
    assert sorted(errors) == ["bad_hdu", "bad_noise", "cube", "no_psf", "no_scale"]

    missing = errors["no_psf"]
    assert (missing.role, missing.file, missing.hdu) == ("psf", str(root / "no_psf/psf.fits"), 0)
    assert missing.message.startswith("file not found; fix the path")

    hdu = errors["bad_hdu"]
    assert (hdu.role, hdu.file, hdu.hdu) == ("data", str(root / "mef.fits"), "SCI")
    assert "no such HDU; the file has HDU 0 'PRIMARY', 1 'IMAGE', 2 'RMS', 3 'PSF'" in hdu.message

    cube = errors["cube"]
    assert cube.role == "data" and "HDU 0 'PRIMARY' is 3-D (shape (3, 20, 24))" in cube.message

    shape = errors["bad_noise"]
    assert shape.role == "noise_map" and shape.file == str(root / "bad_noise/noise_map.fits")
    assert "shape (20, 25) differs from the data's (20, 24)" in shape.message

    scale = errors["no_scale"]
    assert scale.role == "data" and scale.message.startswith("no pixel scale: neither PIXSCAY")
    assert "under pixel_scales: header" in scale.message
    # one line each, naming the dataset, file and HDU
    assert str(hdu).startswith(f"bad_hdu: data '{root / 'mef.fits'}' HDU 'SCI': no such HDU")
    assert checked.n_files == 16  # 5 lenses x 3 files and the MEF file once for its 3 roles


def test_threads_give_the_serial_result(broken):
    _, config = broken
    assert check(config, max_threads=1) == check(config, max_threads=16)


def test_tables_empty_hdus_even_psfs_and_unreadable_files(tmp_path):
    rows = [write_lens(tmp_path / n) for n in ("table", "empty", "even", "text")]
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=np.ones(3))])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(tmp_path / "table" / "t.fits")
    rows[0]["data"], rows[0]["data_hdu"] = "table/t.fits", "1"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones(SHAPE), name="SCI")]).writeto(
        tmp_path / "empty" / "mef.fits"
    )
    rows[1]["data"] = "empty/mef.fits"  # HDU 0: the empty primary
    write_fits_array(tmp_path / "even" / "psf.fits", np.ones((4, 5)), overwrite=True)
    (tmp_path / "text" / "data.fits").write_text("SIMPLE? no, a text file\n")
    errors = by_dataset(check(manifest_config(tmp_path, rows, pixel_scales=0.1)).errors)
    assert "HDU 1 '' is a table, not an image" in errors["table"].message
    assert errors["empty"].message == (
        "HDU 0 'PRIMARY' has no data (NAXIS = 0); the images in this file are HDU 1 'SCI': name one"
    )
    assert errors["even"].role == "psf" and "(4, 5) is not odd in both axes" in str(errors["even"])
    assert errors["text"].message.startswith("not a readable FITS file")


def test_a_psf_larger_than_the_image_unless_trimmed(tmp_path):
    rows = [write_lens(tmp_path / "big", psf_shape=(25, 25))]
    (error,) = check(manifest_config(tmp_path, rows)).problems
    assert (error.dataset, error.role) == ("big", "psf")
    assert error.message.startswith("the PSF kernel (25, 25) is larger than the image (20, 24)")
    assert check(manifest_config(tmp_path, rows, psf={"trim_to": [19, 19]})).problems == []
    (error,) = check(manifest_config(tmp_path, rows, psf={"trim_to": [21, 21]})).problems
    assert "the PSF kernel (21, 21) (trimmed by psf) is larger" in error.message


def test_mask_files_are_checked_like_every_input(tmp_path):
    """Roles come from DatasetSpec.files(): a mask file (mask.kind: file) must have the data's
    shape; with a geometric mask the manifest's mask column is not an input."""
    rows = [write_lens(tmp_path / n) for n in ("fits", "wrong")]
    write_fits_array(tmp_path / "fits" / "mask.fits", np.zeros(SHAPE))
    write_fits_array(tmp_path / "wrong" / "mask.fits", np.zeros((SHAPE[0], 3)))
    rows[0]["mask"], rows[1]["mask"] = "fits/mask.fits", "wrong/mask.fits"
    (error,) = check(manifest_config(tmp_path, rows, mask={"kind": "file"})).problems
    assert (error.dataset, error.role) == ("wrong", "mask")
    assert error.file == str(tmp_path / "wrong" / "mask.fits")
    assert check(manifest_config(tmp_path, rows)).problems == []


def test_flag_maps_are_checked_like_every_input(tmp_path):
    """The flags role (a flags member of mask.combine) must have the data's shape too."""
    rows = [write_lens(tmp_path / n) for n in ("good", "wrong", "floats")]
    fits.PrimaryHDU(np.zeros(SHAPE, dtype=np.uint16)).writeto(tmp_path / "good" / "flags.fits")
    fits.PrimaryHDU(np.zeros((4, 4), dtype=np.int16)).writeto(tmp_path / "wrong" / "flags.fits")
    write_fits_array(tmp_path / "floats" / "flags.fits", np.zeros(SHAPE))
    for row in rows:
        row["flags"] = f"{row['name']}/flags.fits"
    mask = {"combine": [{"kind": "circular", "radius": 0.8}, {"kind": "flags", "bits": [0]}]}
    wrong, floats = check(manifest_config(tmp_path, rows, mask=mask)).problems
    assert (wrong.dataset, wrong.role, wrong.hdu) == ("wrong", "flags", 0)
    assert "shape (4, 4) differs from the data's (20, 24)" in wrong.message
    assert (floats.dataset, floats.role) == ("floats", "flags")
    assert floats.message.startswith(
        "a flag map must be an integer image, not float64 (BITPIX=-64)"
    )


def test_compressed_and_other_header_scales_pass(tmp_path):
    """gzip and fpack files, a PIXSCALE card and a WCS are read as a run reads them."""
    rows = [write_lens(tmp_path / n, scale=None) for n in ("gz", "fz", "wcs")]
    data = np.ones(SHAPE)
    gz = tmp_path / "gz" / "data.fits.gz"
    buffer = tmp_path / "gz" / "plain.fits"
    fits.PrimaryHDU(data, fits.Header({"PIXSCALE": 0.1})).writeto(buffer)
    gz.write_bytes(gzip.compress(buffer.read_bytes()))
    rows[0]["data"] = "gz/data.fits.gz"
    compressed = fits.CompImageHDU(data, fits.Header({"PIXSCALE": 0.1}), quantize_level=0.0)
    fits.HDUList([fits.PrimaryHDU(), compressed]).writeto(tmp_path / "fz" / "data.fits.fz")
    rows[1]["data"] = "fz/data.fits.fz"  # HDU 0: fpack's layout, the compressed image
    wcs = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN"})
    wcs["CD1_1"], wcs["CD2_2"], wcs["CD1_2"], wcs["CD2_1"] = -0.1 / 3600, 0.1 / 3600, 0.0, 0.0
    fits.PrimaryHDU(data, wcs).writeto(tmp_path / "wcs" / "data.fits", overwrite=True)
    assert check(manifest_config(tmp_path, rows)).problems == []
    # and against an explicit scale they agree: no warning either
    assert check(manifest_config(tmp_path, rows, pixel_scales=0.1)).problems == []


# ---------------------------------------------------------------------------------- pixel scales
def test_an_explicit_scale_far_from_the_header_warns_or_errors_when_strict(tmp_path):
    """JWST loaded at 0.1 arcsec where the header says 0.03 (issue 14)."""
    rows = [write_lens(tmp_path / "jwst", scale=0.03), write_lens(tmp_path / "close", scale=0.1)]
    rows.append(write_lens(tmp_path / "bare", scale=None))  # nothing to compare with
    write_fits_array(  # 0.5% off: within the tolerance
        tmp_path / "close" / "data.fits", np.ones(SHAPE), pixel_scales=0.1005, overwrite=True
    )
    (warning,) = check(manifest_config(tmp_path, rows, pixel_scales=0.1)).problems
    assert (warning.dataset, warning.severity, warning.role) == ("jwst", "warning", "data")
    assert warning.message.startswith(
        "pixel scale 0.1 arcsec from the config's pixel_scales differs by 233% from the "
        "header's 0.03 arcsec"
    )
    assert "pixel_scales_check: strict makes this an error" in warning.message
    strict = manifest_config(tmp_path, rows, pixel_scales=0.1, pixel_scales_check="strict")
    (error,) = check(strict).problems
    assert error.severity == "error" and error.dataset == "jwst"
    assert "strict makes" not in error.message
    # not a dataset setting: changing it recomputes nothing
    assert "pixel_scales_check" not in strict.dataset_settings()


def test_per_dataset_scales_are_compared_and_named(tmp_path):
    rows = [write_lens(tmp_path / "a", scale=0.03)]
    rows[0]["pixel_scale"] = "0.05"
    (warning,) = check(manifest_config(tmp_path, rows)).problems
    assert "pixel scale 0.05 arcsec from the manifest's pixel_scale column" in warning.message

    write_lens(tmp_path / "lenses" / "b", scale=(0.03, 0.04))
    (tmp_path / "lenses" / "b" / "info.json").write_text(json.dumps({"pixel_scales": 0.04}))
    config = config_from_dict(
        {
            "inputs": {"kind": "folders", "root": "lenses", "pixel_scales_file": "info.json"},
            "pixel_scales": "header",
            "mask": {"kind": "circular", "radius": 0.8},
            "output": {"store": "out.zarr"},
        },
        base_dir=tmp_path,
    )
    (warning,) = check(config).problems
    info = tmp_path / "lenses" / "b" / "info.json"
    assert f"pixel scale 0.04 arcsec from pixel_scales_file '{info}' differs by 33%" in str(warning)
    assert "header's [0.03, 0.04] arcsec" in warning.message


def test_a_mask_that_leaves_no_pixel_is_an_error(tmp_path):
    rows = [write_lens(tmp_path / "far")]
    config = manifest_config(tmp_path, rows, mask={"kind": "circular", "radius": 0.3,
                                                   "centre": [5.0, 5.0]})  # fmt: skip
    (error,) = check(config).problems
    assert (error.dataset, error.role, error.file) == ("far", None, None)
    assert "circular mask leaves no pixel of the 20x24 data unmasked at 0.1x0.1" in str(error)


# ---------------------------------------------------------------------------------- PSF trimming
def unmasked_in_circle(shape, scale, radius) -> int:
    """DESIGN §3: y = ((ny-1)/2 - row) s, x = (col - (nx-1)/2) s; unmasked where r < radius."""
    rows, cols = np.indices(shape)
    y = ((shape[0] - 1) / 2 - rows) * scale
    x = (cols - (shape[1] - 1) / 2) * scale
    return int(np.count_nonzero(y**2 + x**2 < radius**2))


def band_width(ky: int, kx: int) -> int:
    """Offsets (dy, dx) with |dy| <= 2(ky//2), |dx| <= 2(kx//2), dy > 0 or (dy == 0, dx >= 0)."""
    ry, rx = 2 * (ky // 2), 2 * (kx // 2)
    return sum(
        1
        for dy in range(-ry, ry + 1)
        for dx in range(-rx, rx + 1)
        if dy > 0 or (dy == 0 and dx >= 0)
    )


def smallest_box(kernel: np.ndarray, fraction: float) -> tuple[int, int]:
    """By brute force: the odd centred box of least area (then squarest) holding the fraction."""
    total, (cy, cx) = np.abs(kernel).sum(), (kernel.shape[0] // 2, kernel.shape[1] // 2)
    boxes = [
        (ky * kx, abs(ky - kx), ky, kx)
        for ky in range(1, kernel.shape[0] + 1, 2)
        for kx in range(1, kernel.shape[1] + 1, 2)
        if np.abs(kernel[cy - ky // 2 : cy + ky // 2 + 1, cx - kx // 2 : cx + kx // 2 + 1]).sum()
        >= fraction * total * (1 - 1e-12)
    ]
    return min(boxes)[2:]


@pytest.fixture
def trimming_survey(tmp_path):
    """Three lenses of different shapes and PSFs (one narrower than trim_to in x)."""
    lenses = {"wide": ((30, 30), (21, 21), 1.0), "big": ((40, 36), (15, 15), 2.0),
              "thin": ((25, 31), (9, 5), 0.7)}  # fmt: skip
    rows = [
        write_lens(tmp_path / n, shape=s, psf_shape=k, sigma=sg) for n, (s, k, sg) in lenses.items()
    ]
    return tmp_path, rows, lenses


def test_trim_to_estimate_matches_an_independent_count(trimming_survey):
    root, rows, lenses = trimming_survey
    config = manifest_config(
        root, rows, psf={"trim_to": [7, 7]}, sparse_operator={"dtype": "float32"}
    )
    estimate = check(config).trimming
    n = {name: unmasked_in_circle(shape, 0.1, 0.8) for name, (shape, _, _) in lenses.items()}
    whole = sum(n[k] * band_width(*lenses[k][1]) * 4 for k in n)
    trimmed = sum(
        n[k] * band_width(min(7, lenses[k][1][0]), min(7, lenses[k][1][1])) * 4 for k in n
    )
    assert estimate is not None
    assert (estimate.whole_bytes, estimate.trimmed_bytes) == (whole, trimmed)
    assert (estimate.n_datasets, estimate.n_exact) == (3, 3)
    assert estimate.line() == (
        f"PSF trimming: operator ~{format_bytes(whole)} -> {format_bytes(trimmed)} "
        f"(-{1 - trimmed / whole:.0%}) over 3 datasets (N: the unmasked pixels of the "
        "geometric mask; before compression)"
    )


def test_trim_fraction_reads_the_kernels_and_mask_files_bound_n(trimming_survey):
    root, rows, lenses = trimming_survey
    for row in rows:
        write_fits_array(root / row["name"] / "mask.fits", np.zeros(lenses[row["name"]][0]))
        row["mask"] = f"{row['name']}/mask.fits"
    config = manifest_config(root, rows, psf={"trim_fraction": 0.99}, mask={"kind": "file"})
    estimate = check(config).trimming
    whole = trimmed = 0
    for shape, psf_shape, sigma in lenses.values():
        n = shape[0] * shape[1]  # mask files are not read: every pixel
        whole += n * band_width(*psf_shape) * 8
        trimmed += n * band_width(*smallest_box(gaussian_psf(psf_shape, sigma), 0.99)) * 8
    assert estimate is not None and estimate.n_exact == 0
    assert (estimate.whole_bytes, estimate.trimmed_bytes) == (whole, trimmed)
    assert "N: an upper bound, mask files and flag maps are not read" in estimate.line()


def test_a_combined_mask_counts_its_geometric_members(trimming_survey):
    """circle + annulus: N is exact, the pixels inside both; circle + flag map: N is the
    circle's, an upper bound (flag maps are not read)."""
    root, rows, lenses = trimming_survey
    circle = {"kind": "circular", "radius": 0.8}
    annulus = {"kind": "annular", "inner_radius": 0.3, "outer_radius": 1.5}
    shapes = manifest_config(
        root, rows, psf={"trim_to": [3, 3]}, mask={"combine": [circle, annulus]}
    )
    n = {
        k: unmasked_in_circle(s, 0.1, 0.8) - unmasked_in_circle(s, 0.1, 0.3)
        for k, (s, _, _) in lenses.items()
    }
    whole = sum(n[k] * band_width(*lenses[k][1]) * 8 for k in n)
    estimate = check(shapes).trimming
    assert estimate is not None and (estimate.whole_bytes, estimate.n_exact) == (whole, 3)

    for row in rows:
        write_fits_array(root / row["name"] / "flags.fits", np.zeros(lenses[row["name"]][0]))
        row["flags"] = f"{row['name']}/flags.fits"
    flagged = manifest_config(
        root,
        rows,
        psf={"trim_to": [3, 3]},
        mask={"combine": [circle, {"kind": "flags", "bit_mask": 1}]},
    )
    estimate = check(flagged).trimming
    n = {k: unmasked_in_circle(s, 0.1, 0.8) for k, (s, _, _) in lenses.items()}
    assert estimate is not None and estimate.n_exact == 0
    assert estimate.whole_bytes == sum(n[k] * band_width(*lenses[k][1]) * 8 for k in n)


def test_no_estimate_without_trimming(trimming_survey):
    root, rows, _ = trimming_survey
    assert check(manifest_config(root, rows)).trimming is None


def test_format_bytes():
    assert [format_bytes(n) for n in (999, 1000, 3.14e9, 2.5e13)] == [
        "999 B",
        "1.0 kB",
        "3.1 GB",
        "25.0 TB",
    ]
