"""Bad inputs, one per dataset, in surveys with good ones: each bad dataset fails with a message
naming its file and the problem (status ``failed`` in the store where its name is a valid key),
every good dataset completes, ``lenspipe run`` exits 3 (partial) and its summary lists every
failure."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np

from pipeline.cli import main
from pipeline.imaging import Mask2D
from pipeline.io.fits import read_fits_array, write_fits_array, write_fits_hdus
from pipeline.io.store import dataset_attrs, list_datasets
from pipeline.mock import simulate_survey
from tests.reliability.support import summary_counts, write_config

COLUMNS = [
    "name",
    "data",
    "noise_map",
    "psf",
    "data_hdu",
    "noise_map_hdu",
    "psf_hdu",
    "mask",
    "mask_hdu",
    "pixel_scale",
    "mask_radius",
    "mask_centre_y",
    "mask_centre_x",
]
SHAPE = (64, 64)
CENTRE = (32, 32)  # an unmasked pixel of every mask used here


class Inputs:
    """A good lens's arrays and a folder to write variants of them into."""

    def __init__(self, folder: Path):
        simulate_survey(folder / "sim", 1, seed=20, shape_range=SHAPE, psf_shapes=(11,))
        sim = folder / "sim" / "lens_00020"
        self.data = read_fits_array(sim / "data.fits")
        self.noise = read_fits_array(sim / "noise_map.fits")
        self.psf = read_fits_array(sim / "psf.fits")
        self.folder = folder
        self.rows: list[dict] = []
        # name -> (file the message must name, words the message must contain)
        self.bad: dict[str, tuple[str, list[str]]] = {}
        self.good: list[str] = []

    def files(self, name: str, data=None, noise=None, psf=None) -> dict[str, str]:
        """Write a dataset's three FITS files (variants where given); returns their paths."""
        out = {}
        for role, array, default in (
            ("data", data, self.data),
            ("noise_map", noise, self.noise),
            ("psf", psf, self.psf),
        ):
            path = self.folder / name / f"{role}.fits"
            write_fits_array(path, default if array is None else array, overwrite=True)
            out[role] = str(path)
        return out

    def add(self, name: str, *, expect: tuple[str, list[str]] | None = None, **row) -> None:
        self.rows.append({"name": name, **row})
        if expect is None:
            self.good.append(name)
        else:
            self.bad[name] = expect

    def manifest(self) -> Path:
        path = self.folder / "manifest.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)
        return path


def _set(array: np.ndarray, value: float, at=CENTRE) -> np.ndarray:
    out = array.copy()
    out[at] = value
    return out


def _run(config: Path, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["run", str(config), "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def _failures(stdout: str) -> dict[str, str]:
    """``{name: message}`` of the summary's Failures section."""
    assert "Failures:" in stdout, stdout
    section = stdout[stdout.index("Failures:") :].splitlines()[1:]
    out = {}
    for line in section:
        match = re.match(r"^  (\S+?): (.*)$", line)
        assert match, line
        out.setdefault(match.group(1), match.group(2))
    return out


def check_outcome(
    inputs: Inputs, store: Path, code: int, stdout: str, unsafe: set[str] = frozenset()
):
    assert code == 3, stdout  # partial: the run finished, some datasets failed
    failures = _failures(stdout)
    assert set(failures) == set(inputs.bad), stdout
    statuses = list_datasets(store)
    for name in inputs.good:
        assert statuses[name] == "complete", (name, dataset_attrs(store, name).get("error"))
    for name, (file, words) in inputs.bad.items():
        message = failures[name]
        assert file in message, (name, message)
        for word in words:
            assert word.lower() in message.lower(), (name, word, message)
        if name in unsafe:
            assert name not in statuses  # never written under an unsafe name
            continue
        if name in inputs.good:  # a duplicate: the first entry of that name completed
            continue
        assert statuses[name] == "failed", name
        error = dataset_attrs(store, name)["error"]
        assert file in error and all(w.lower() in error.lower() for w in words), error
    counts = {line.split()[0]: line for line in stdout.splitlines() if line.startswith("  failed")}
    assert counts["failed"].split()[-1] == str(len(inputs.bad))


def test_bad_inputs_fail_alone_with_clear_messages(tmp_path, capsys):
    s = Inputs(tmp_path)
    s.add("good_a", **s.files("good_a"))
    s.add("good_nan_border", **s.files("good_nan_border", data=_set(s.data, np.nan, (0, 0))))
    mef = tmp_path / "good_mef" / "cutout.fits"
    write_fits_hdus(mef, {"DATA": s.data, "NOISE": s.noise, "PSF": s.psf})
    mef_row = dict(data=str(mef), noise_map=str(mef), psf=str(mef))
    s.add("good_mef", **mef_row, data_hdu="DATA", noise_map_hdu="NOISE", psf_hdu="PSF")

    missing = str(tmp_path / "missing_file" / "no-such-data.fits")
    s.add(
        "missing_file",
        **{**s.files("missing_file"), "data": missing},
        expect=(missing, ["file not found"]),
    )
    files = s.files("not_fits")
    Path(files["data"]).write_text("SIMPLE? no: this is a text file\n" * 100)
    s.add("not_fits", **files, expect=(files["data"], ["not a readable FITS file"]))
    files = s.files("truncated_fits")
    raw = Path(files["data"]).read_bytes()
    Path(files["data"]).write_bytes(raw[: len(raw) // 2])
    s.add("truncated_fits", **files, expect=(files["data"], ["truncated"]))
    s.add(
        "missing_hdu",
        **mef_row,
        data_hdu="SCI",
        noise_map_hdu="NOISE",
        psf_hdu="PSF",
        expect=(str(mef), ["'SCI'", "no such HDU", "'DATA'"]),
    )
    files = s.files("hdu_3d")
    cube = tmp_path / "hdu_3d" / "cube.fits"
    from astropy.io import fits

    fits.PrimaryHDU(np.stack([s.data, s.data])).writeto(cube)
    s.add("hdu_3d", **{**files, "data": str(cube)}, expect=(str(cube), ["not 2-D"]))
    files = s.files("shape_mismatch", noise=s.noise[:60])
    s.add(
        "shape_mismatch",
        **files,
        expect=(files["noise_map"], ["(64, 64)", "(60, 64)"]),
    )
    for label, value, word in (
        ("noise_zero", 0.0, "noise"),
        ("noise_negative", -1.0, "noise"),
        ("noise_nan", np.nan, "noise"),
        ("noise_inf", np.inf, "noise"),
    ):
        files = s.files(label, noise=_set(s.noise, value))
        s.add(label, **files, expect=(files["noise_map"], [word, "32"]))
    files = s.files("data_nan", data=_set(s.data, np.nan))
    s.add("data_nan", **files, expect=(files["data"], ["data", "nan", "32"]))
    files = s.files("psf_even", psf=s.psf[:10, :10])
    s.add("psf_even", **files, expect=(files["psf"], ["odd"]))
    files = s.files("psf_zero", psf=np.zeros_like(s.psf))
    s.add("psf_zero", **files, expect=(files["psf"], ["zero"]))
    big = np.zeros((81, 81))
    big[40, 40] = 1.0
    files = s.files("psf_too_big", psf=big)
    s.add("psf_too_big", **files, expect=(files["psf"], ["(81, 81)", "larger than the image"]))
    files = s.files("mask_empty")
    s.add(
        "mask_empty",
        **files,
        mask_radius=0.01,
        expect=(files["data"], ["no unmasked pixel", "radius=0.01"]),
    )
    # duplicate names: the first entry completes, the second is reported (naming both files)
    s.add("dup_name", **s.files("dup_name"))
    files = s.files("dup_name_2")
    s.add(
        "dup_name",
        **files,
        expect=(files["data"], ["duplicate dataset name", str(tmp_path / "dup_name")]),
    )
    files = s.files("unsafe")
    s.add("sub/dir", **files, expect=(files["data"], ["not a safe store key"]))
    s.add("../escape", **files, expect=(files["data"], ["not a safe store key"]))

    store = tmp_path / "circular.zarr"
    config = write_config(tmp_path / "circular.yaml", s.manifest(), store, n_workers=2)
    code, stdout, _ = _run(config, capsys)
    check_outcome(s, store, code, stdout, unsafe={"sub/dir", "../escape"})
    assert not (tmp_path / "escape").exists() and not (store / "datasets" / "sub").exists()
    # a rerun retries only the failed ones (inputs may have been fixed) and is partial again;
    # complete datasets are skipped: their input files are only stat'ed (same size and mtime)
    code, stdout, _ = _run(config, capsys)
    check_outcome(s, store, code, stdout, unsafe={"sub/dir", "../escape"})
    assert summary_counts(stdout)["skipped (already complete)"] == len(s.good) == 4
    assert summary_counts(stdout)["changed inputs (prepared again)"] == 0
    # inputs of a complete dataset deleted: its result no longer matches any input, so it is
    # prepared again, which fails naming the missing file (never silently kept)
    shutil.rmtree(tmp_path / "good_a")
    code, stdout, _ = _run(config, capsys)
    counts = summary_counts(stdout)
    assert code == 3
    assert counts["skipped (already complete)"] == 3
    assert counts["changed inputs (prepared again)"] == 1
    assert re.search(r"good_a: .*good_a/data\.fits", stdout), stdout
    assert list_datasets(store)["good_a"] == "failed"


def test_bad_mask_files_fail_alone(tmp_path, capsys):
    s = Inputs(tmp_path)
    circle = Mask2D.circular(shape_native=SHAPE, pixel_scales=0.1, radius=2.5)

    def mask_file(name: str, mask: np.ndarray) -> str:
        path = tmp_path / name / "mask.fits"
        write_fits_array(path, np.asarray(mask, dtype=float), overwrite=True)
        return str(path)

    s.add("good_mask", **s.files("good_mask"), mask=mask_file("good_mask", circle))
    path = mask_file("mask_all_ones", np.ones(SHAPE))
    s.add(
        "mask_all_ones",
        **s.files("mask_all_ones"),
        mask=path,
        expect=(path, ["no unmasked pixel"]),
    )
    path = mask_file("mask_wrong_shape", np.zeros((32, 32)))
    s.add(
        "mask_wrong_shape",
        **s.files("mask_wrong_shape"),
        mask=path,
        expect=(path, ["(32, 32)", "(64, 64)"]),
    )
    missing = str(tmp_path / "mask_missing" / "nope.fits")
    s.add("mask_missing", **s.files("mask_missing"), mask=missing, expect=(missing, ["not found"]))
    files = s.files("mask_not_given")
    s.add("mask_not_given", **files, expect=(files["data"], ["no mask file"]))

    store = tmp_path / "file-masks.zarr"
    config = write_config(
        tmp_path / "file-masks.yaml", s.manifest(), store, n_workers=1, mask={"kind": "file"}
    )
    code, stdout, _ = _run(config, capsys)
    check_outcome(s, store, code, stdout)
