"""Progress of a real ``lenspipe run`` off a terminal (stderr captured, as in a SLURM log): plain
timestamped lines, never bars; failures recorded with their error type (shown by ``status``)."""

from __future__ import annotations

import re

import numpy as np

from pipeline.io.fits import read_fits_array, write_fits_array
from tests.flow.test_cli import cli, make_survey


def test_a_run_off_a_terminal_logs_lines_and_status_shows_the_error_type(tmp_path, capsys):
    config = make_survey(tmp_path, n=3)
    noise_file = tmp_path / "lens_00002" / "noise_map.fits"
    noise = read_fits_array(noise_file)
    write_fits_array(noise_file, np.zeros_like(noise), pixel_scales=0.1, overwrite=True)
    code, out, err = cli(capsys, "run", config)
    assert code == 3, out + err
    assert "\r" not in err and "%|" not in err  # no bars in a log
    lines = [line for line in err.splitlines() if " lenspipe: " in line]
    assert lines, err
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d lenspipe: 0/3 datasets done", lines[0])
    assert re.search(
        r"lenspipe: 3/3 datasets done \(1 failed\), \d+ operator batches computed$", lines[-1]
    )

    code, out, _ = cli(capsys, "status", tmp_path / "survey.zarr")
    assert code == 0
    line = next(x for x in out.splitlines() if x.startswith("  lens_00002: "))
    assert line.startswith("  lens_00002: failed: DatasetError: ")
    assert "noise_map" in line
