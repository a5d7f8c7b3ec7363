"""``lenspipe validate`` and ``run --dry-run`` check every input file before anything runs (issue
14 scope 2): every problem of every dataset at once, exit 2 on any error, 0 with warnings alone,
no cluster started; and the PSF-trimming saving (scope 7). Real FITS files, the real command."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from astropy.io import fits

from pipeline.cli import main
from pipeline.flow.preflight import format_bytes
from pipeline.io.fits import write_fits_array, write_fits_hdus
from tests.flow.test_preflight import (
    SHAPE,
    band_width,
    unmasked_in_circle,
    write_lens,
)

BROKEN = ("no_psf", "bad_hdu", "cube", "bad_noise", "no_scale")


def cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def write_survey(root: Path, rows: list[dict], **settings) -> Path:
    """manifest.csv of ``rows`` and survey.yaml (``pixel_scales: header`` unless given)."""
    columns = sorted({key for row in rows for key in row}, key=lambda k: (k != "name", k))
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    config = {
        "inputs": {"kind": "manifest", "path": "manifest.csv"},
        "pixel_scales": "header",
        "mask": {"kind": "circular", "radius": 0.8},
        "output": {"store": "out.zarr"},
        "cluster": {"kind": "local", "n_workers": 1},
        **settings,
    }
    path = root / "survey.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def broken_survey(root: Path) -> Path:
    """Two good lenses and one of each of the issue's five kinds of broken input."""
    rows = [write_lens(root / name) for name in ("good_1", "good_2", *BROKEN)]
    (root / "no_psf" / "psf.fits").unlink()
    write_fits_hdus(root / "bad_hdu" / "mef.fits", {"IMAGE": np.ones(SHAPE)}, pixel_scales=0.1)
    rows[3].update(data="bad_hdu/mef.fits", data_hdu="SCI")
    fits.PrimaryHDU(np.zeros((3, *SHAPE))).writeto(root / "cube" / "data.fits", overwrite=True)
    write_fits_array(root / "bad_noise" / "noise_map.fits", np.ones((20, 25)), overwrite=True)
    write_fits_array(root / "no_scale" / "data.fits", np.ones(SHAPE), overwrite=True)
    return write_survey(root, rows)


def test_validate_lists_all_five_broken_inputs_in_seconds_and_starts_no_cluster(tmp_path):
    """In a fresh interpreter: no Dask module is even imported, so no cluster can start."""
    config = broken_survey(tmp_path)
    script = (
        "import sys; from pipeline.cli import main; code = main(['validate', sys.argv[1]]); "
        "print('loaded:', sorted(m for m in ('dask', 'distributed') if m in sys.modules)); "
        "sys.exit(code)"
    )
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script, str(config)], capture_output=True, text=True, timeout=120
    )
    elapsed = time.monotonic() - start
    assert done.returncode == 2, done.stdout + done.stderr
    out = done.stdout
    assert "loaded: []" in out
    assert "config valid. 7 datasets found" in out
    assert "inputs: 21 files of 7 datasets read in" in out and "5 errors, 0 warnings" in out
    lines = [line.strip() for line in out.splitlines() if line.startswith("  error: ")]
    assert [line.split(":")[1].strip() for line in lines] == list(BROKEN)
    assert f"error: no_psf: psf '{tmp_path / 'no_psf' / 'psf.fits'}' HDU 0: file not found" in out
    assert "error: bad_hdu: data" in out and "no such HDU; the file has HDU 0 'PRIMARY', 1 " in out
    assert "HDU 0 'PRIMARY' is 3-D (shape (3, 20, 24))" in out
    assert "error: bad_noise: noise_map" in out and "shape (20, 25) differs" in out
    assert "error: no_scale: data" in out and "no pixel scale" in out
    assert "good_" not in out.split("inputs:")[1]
    assert "error: 5 errors in 5 datasets (listed above)" in done.stderr
    assert elapsed < 60  # in seconds, Python's start included (about 4 s here)
    assert not (tmp_path / "out.zarr").exists()


def test_dry_run_checks_the_inputs_too(tmp_path, capsys):
    config = broken_survey(tmp_path)
    code, out, err = cli(capsys, "run", config, "--dry-run")
    assert code == 2, out + err
    assert "plan: 7 datasets to prepare into a new store" in out
    assert "cluster: embedded LocalCluster, 1 worker process(es)" in out
    assert sum(line.startswith("  error: ") for line in out.splitlines()) == 5
    assert not (tmp_path / "out.zarr").exists()


def test_discovery_problems_also_exit_2(tmp_path, capsys):
    rows = [write_lens(tmp_path / "good"), {**write_lens(tmp_path / "x"), "name": "bad/name"}]
    code, out, err = cli(capsys, "validate", write_survey(tmp_path, rows))
    assert code == 2
    assert "problem: bad/name" in out and "0 errors" in out
    assert "error: 1 error in 1 dataset" in err


def test_a_scale_mismatch_warns_and_fails_when_strict(tmp_path, capsys):
    rows = [write_lens(tmp_path / "jwst", scale=0.03), write_lens(tmp_path / "fine")]
    config = write_survey(tmp_path, rows, pixel_scales=0.1)
    code, out, err = cli(capsys, "validate", config)
    assert code == 0, out + err
    assert "0 errors, 1 warning" in out
    assert (
        "  warning: jwst: data '" in out
        and "pixel scale 0.1 arcsec from the config's pixel_scales differs by 233% from the "
        "header's 0.03 arcsec"
        in out
    )
    write_survey(tmp_path, rows, pixel_scales=0.1, pixel_scales_check="strict")
    code, out, err = cli(capsys, "validate", config)
    assert code == 2
    assert "1 error, 0 warnings" in out and "  error: jwst: data '" in out
    assert "fine" not in out.split("inputs:")[1]


def test_the_trimming_line_matches_an_independent_count(tmp_path, capsys):
    shapes = {"one": ((30, 30), (21, 21)), "two": ((26, 34), (15, 11))}
    rows = [write_lens(tmp_path / n, shape=s, psf_shape=k) for n, (s, k) in shapes.items()]
    config = write_survey(tmp_path, rows, psf={"trim_to": [9, 9]})
    code, out, err = cli(capsys, "validate", config)
    assert code == 0, out + err
    whole = trimmed = 0
    for shape, (ky, kx) in shapes.values():
        n = unmasked_in_circle(shape, 0.1, 0.8)
        whole += n * band_width(ky, kx) * 8  # float64 values
        trimmed += n * band_width(min(ky, 9), min(kx, 9)) * 8
    line = (
        f"PSF trimming: operator ~{format_bytes(whole)} -> {format_bytes(trimmed)} "
        f"(-{1 - trimmed / whole:.0%}) over 2 datasets (N: the unmasked pixels of the "
        "geometric mask; before compression)"
    )
    assert line in out.splitlines()
    # 208 pixels each; 841 and 305 offsets per row -> 145 (9x9): 1.9 MB -> 0.48 MB
    assert (whole, trimmed) == (1_906_944, 482_560)


def test_trim_fraction_on_an_unreadable_psf_is_a_problem_not_a_crash(tmp_path, capsys):
    rows = [write_lens(tmp_path / "zero"), write_lens(tmp_path / "fine")]
    write_fits_array(tmp_path / "zero" / "psf.fits", np.zeros((5, 5)), overwrite=True)
    code, out, _ = cli(
        capsys, "validate", write_survey(tmp_path, rows, psf={"trim_fraction": 0.99})
    )
    assert code == 2
    assert "error: zero: psf" in out and "the kernel is all zeros" in out
    assert "over 1 dataset (" in out  # the other lens is sized


def test_help_says_what_is_checked(capsys):
    code, out, _ = cli(capsys, "validate", "--help")
    assert code == 0
    for words in ("missing HDUs", "pixel_scales_check: strict", "starts no cluster", "Exit codes"):
        assert words in " ".join(out.split()), words
    code, out, _ = cli(capsys, "--help")
    assert "hdus" in out
