"""The folders input on survey folders as people keep them (issue 14): the input root also holds
a Zarr store, Jupyter's ``.ipynb_checkpoints``, empty and unrelated folders, gzip and fpack files
and a PyAutoLens-style ``info.json`` per lens. Everything is a real file written here; one test
runs the survey through the command line on a local cluster."""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.io import fits

from pipeline.cli import main
from pipeline.exc import ConfigError, FitsReadError
from pipeline.flow.config import config_from_dict, load_config
from pipeline.flow.discover import FileRef, discover
from pipeline.flow.folders import fits_name_forms
from pipeline.flow.plan import plan_run
from pipeline.flow.prepare import PrepareSettings, prepare_imaging
from pipeline.io.fits import write_fits_array
from pipeline.io.store import create_store, dataset_record, list_datasets, open_store
from pipeline.mock import simulate_survey

IMAGE, PSF = np.ones((5, 5)), np.full((3, 3), 1 / 9)
FILES = ("data.fits", "noise_map.fits", "psf.fits")


def make_config(tmp_path: Path, store: str = "out.zarr", pixel_scales=0.1, **inputs):
    return config_from_dict(
        {
            "inputs": {"kind": "folders", "root": "lenses", **inputs},
            "pixel_scales": pixel_scales,
            "mask": {"kind": "circular", "radius": 0.15},
            "output": {"store": store},
        },
        base_dir=tmp_path,
    )


def make_lens(folder: Path, names=FILES) -> None:
    for file in names:
        array = PSF if file.startswith("psf") else IMAGE
        write_fits_array(folder / file, array, pixel_scales=0.1)


def clutter(root: Path) -> dict[str, str]:
    """What sits beside the lens folders in practice, and the reason each is skipped for."""
    create_store(root / "survey.zarr")  # e.g. the store of `lenspipe simulate`'s manifest run
    (root / "v2.zarr").mkdir()
    (root / "v2.zarr" / ".zgroup").write_text('{"zarr_format": 2}')
    make_lens(root / ".ipynb_checkpoints")  # a copy of a lens: hidden all the same
    (root / "empty").mkdir()
    (root / "plots").mkdir()
    (root / "plots" / "lens_0.png").write_bytes(b"\x89PNG")
    (root / "notes.txt").write_text("a file: never a dataset folder")
    return {
        ".ipynb_checkpoints": "hidden (its name starts with '.')",
        "empty": "holds none of data.fits, noise_map.fits, psf.fits",
        "plots": "holds none of data.fits, noise_map.fits, psf.fits",
        "survey.zarr": "a Zarr store (it holds zarr.json)",
        "v2.zarr": "a Zarr store (it holds .zgroup)",
    }


# ------------------------------------------------------------------------------ what is skipped
def test_only_lens_folders_are_datasets_and_each_skip_is_listed_once(tmp_path, caplog):
    root = tmp_path / "lenses"
    names = [f"lens_{i}" for i in range(7)]
    for name in names:
        make_lens(root / name)
    reasons = clutter(root)
    create_store(root / "own.zarr")
    reasons["own.zarr"] = "the run's own output store (output.store)"
    config = make_config(tmp_path, store="lenses/own.zarr")
    with caplog.at_level(logging.INFO, logger="pipeline.flow.discover"):
        found = discover(config)
    assert [s.name for s in found.specs] == names
    assert found.problems == []
    assert [Path(path).name for path, _ in found.skipped] == sorted(reasons)
    for path, reason in found.skipped:
        assert Path(path).parent == root
        assert reasons[Path(path).name] in reason, reason
    logged = [r.getMessage() for r in caplog.records if r.name == "pipeline.flow.discover"]
    assert len(logged) == len(reasons)
    for name in reasons:
        assert sum(f"'{root / name}'" in line for line in logged) == 1


def test_a_nested_pattern_does_not_enter_a_store(tmp_path):
    root = tmp_path / "lenses"
    make_lens(root / "field_a" / "lens_1")
    create_store(root / "survey.zarr")
    found = discover(make_config(tmp_path, pattern="*/*"))
    assert [s.name for s in found.specs] == ["lens_1"]
    ((path, reason),) = found.skipped  # survey.zarr/datasets
    assert path == os.fspath(root / "survey.zarr" / "datasets")
    assert reason == f"inside the Zarr store '{root / 'survey.zarr'}'"


def test_a_folder_with_some_of_the_files_is_a_dataset_whose_missing_file_is_named(tmp_path):
    """Not skipped: a lens that lost its PSF must fail loudly, never vanish from the survey."""
    make_lens(tmp_path / "lenses" / "lens_1", ("data.fits", "noise_map.fits"))
    config = make_config(tmp_path)
    (spec,) = discover(config).specs
    assert spec.psf.path == os.fspath(tmp_path / "lenses" / "lens_1" / "psf.fits")
    with pytest.raises(FitsReadError, match="psf.fits.*file not found"):
        prepare_imaging(spec, PrepareSettings.from_config(config))


def _summary_count(stdout: str, label: str) -> int:
    match = re.search(rf"^\s*{re.escape(label)}\s+(\d+)\s*$", stdout, re.MULTILINE)
    assert match, stdout
    return int(match.group(1))


@pytest.mark.timeout(300)
def test_validate_and_run_agree_on_a_root_holding_a_store(tmp_path, capsys):
    """The issue's survey: 7 lens folders beside a store, checkpoints and an empty folder.
    ``validate`` counts 7 and a real run completes those 7 (it found 8 and exited 3). A lens's
    ``info.json`` is recorded with its inputs: editing it prepares that lens again."""
    root = tmp_path / "lenses"
    simulate_survey(root, 7, seed=3, shape_range=(24, 24), psf_shapes=(3,))
    info = root / "lens_00004" / "info.json"
    info.write_text('{"pixel_scales": 0.1}')
    config_path = tmp_path / "folders.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "inputs": {"kind": "folders", "root": "lenses", "pixel_scales_file": "info.json"},
                "pixel_scales": "header",
                "mask": {"kind": "circular", "radius": 0.8},
                "sparse_operator": {"backend": "numpy"},
                "output": {"store": "out.zarr"},
                "cluster": {"kind": "local", "n_workers": 1},
                "run": {"progress": False},
            }
        )
    )
    create_store(root / "survey.zarr")  # the manifest survey's store, inside the root
    shutil.copytree(root / "lens_00003", root / ".ipynb_checkpoints")
    (root / "empty").mkdir()
    assert len(discover(load_config(config_path)).skipped) == 3

    capsys.readouterr()
    assert main(["validate", str(config_path)]) == 0
    assert "config valid. 7 datasets found" in capsys.readouterr().out
    code = main(["run", str(config_path), "--no-progress"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    assert _summary_count(stdout, "datasets") == 7
    assert _summary_count(stdout, "failed") == 0
    names = {f"lens_{3 + i:05d}" for i in range(7)}
    store = tmp_path / "out.zarr"
    assert list_datasets(store) == dict.fromkeys(sorted(names), "complete")
    sources = {s.role: s.path for s in dataset_record(store, "lens_00004").sources}
    assert sources["pixel_scales_file"] == os.fspath(info)
    info.write_text('{"pixel_scales": 0.1, "redshift": 0.3}')
    config = load_config(config_path)
    plan = plan_run(config, open_store(store))
    assert (
        list(plan.changed) == ["lens_00004"] and "pixel_scales_file" in plan.changed["lens_00004"]
    )


# ------------------------------------------------------------------------------ compressed files
def _gzip(path: Path) -> Path:
    target = path.with_name(path.name + ".gz")
    target.write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    return target


def _fpack(path: Path, target_name: str) -> Path:
    """fpack's layout: an empty primary HDU, the image as a lossless CompImageHDU."""
    with fits.open(path) as hdul:
        image, header = hdul[0].data, hdul[0].header
        compressed = fits.CompImageHDU(
            image, header=header, compression_type="GZIP_2", quantize_level=0.0
        )
        target = path.with_name(target_name)
        fits.HDUList([fits.PrimaryHDU(), compressed]).writeto(target, checksum=True)
    path.unlink()
    return target


def test_fits_name_forms():
    assert fits_name_forms("data.fits") == ("data.fits", "data.fits.gz", "data.fits.fz", "data.fz")
    assert fits_name_forms("img_drz.fit") == ("img_drz.fit", "img_drz.fit.gz", "img_drz.fit.fz")
    assert fits_name_forms("data.fits.fz") == ("data.fits.fz",)
    assert fits_name_forms("data.fits.GZ") == ("data.fits.GZ",)


def test_gzip_and_fpack_files_are_found_and_read(tmp_path):
    """data.fits.gz, noise_map.fits.fz and psf.fz stand for the configured .fits names; the
    prepared dataset is the one made from the plain files (fpack's image is HDU 0's)."""
    simulate_survey(tmp_path / "plain", 1, seed=9, shape_range=(20, 20), psf_shapes=(3,))
    plain = tmp_path / "plain" / "lens_00009"
    packed = tmp_path / "lenses" / "lens_00009"
    shutil.copytree(plain, packed)
    data = _gzip(packed / "data.fits")
    noise = _fpack(packed / "noise_map.fits", "noise_map.fits.fz")
    psf = _fpack(packed / "psf.fits", "psf.fz")
    config = make_config(tmp_path, pixel_scales="header")
    found = discover(config)
    assert found.problems == [] and found.skipped == []
    (spec,) = found.specs
    assert spec.data == FileRef(os.fspath(data), 0)
    assert spec.noise_map == FileRef(os.fspath(noise), 0)
    assert spec.psf == FileRef(os.fspath(psf), 0)
    settings = PrepareSettings.from_config(config)
    got = prepare_imaging(spec, settings)
    reference_spec = discover(make_config(tmp_path, pixel_scales="header", root="plain")).specs[0]
    expected = prepare_imaging(reference_spec, settings)
    np.testing.assert_array_equal(got.data.native, expected.data.native)
    np.testing.assert_array_equal(got.noise_map.native, expected.noise_map.native)
    np.testing.assert_array_equal(got.psf.kernel.native, expected.psf.kernel.native)
    assert got.mask.pixel_scales == expected.mask.pixel_scales == (0.1, 0.1)


def test_the_configured_name_wins_over_its_compressed_forms(tmp_path):
    folder = tmp_path / "lenses" / "lens_1"
    make_lens(folder)
    (folder / "data.fits.gz").write_bytes(gzip.compress((folder / "data.fits").read_bytes()))
    (spec,) = discover(make_config(tmp_path)).specs
    assert spec.data.path == os.fspath(folder / "data.fits")


def test_two_compressed_forms_without_the_configured_name_are_a_problem(tmp_path):
    folder = tmp_path / "lenses" / "lens_1"
    make_lens(folder, ("data.fits.gz", "data.fits.fz", "noise_map.fits", "psf.fits"))
    make_lens(tmp_path / "lenses" / "lens_2")
    found = discover(make_config(tmp_path))
    assert [s.name for s in found.specs] == ["lens_2"]
    ((name, message),) = found.problems
    assert name == "lens_1"
    assert f"folder '{folder}' has no data.fits" in message
    assert "data.fits.gz, data.fits.fz" in message and "inputs.data" in message


# ------------------------------------------------------------------------------ per-folder scales
def test_pixel_scales_file_per_folder(tmp_path):
    root = tmp_path / "lenses"
    for name in ("lens_a", "lens_b", "lens_c", "lens_d"):
        make_lens(root / name)
    (root / "lens_a" / "info.json").write_text(json.dumps({"redshift": 0.5, "pixel_scales": 0.05}))
    (root / "lens_b" / "info.json").write_text(json.dumps({"pixel_scales": [0.05, 0.04]}))
    (root / "lens_c" / "info.json").write_text(json.dumps({"redshift_source": 2.0}))  # no key
    config = make_config(tmp_path, pixel_scales=0.1, pixel_scales_file="info.json")
    found = discover(config)
    assert found.problems == []
    a, b, c, d = found.specs
    assert (a.pixel_scales, b.pixel_scales, c.pixel_scales, d.pixel_scales) == (
        0.05,
        (0.05, 0.04),
        None,  # the top-level pixel_scales
        None,
    )
    assert a.pixel_scales_file == FileRef(os.fspath(root / "lens_a" / "info.json"))
    assert c.pixel_scales_file is None and d.pixel_scales_file is None
    assert [role for role, _ in a.files()][-1] == "pixel_scales_file"  # recorded and hashed
    assert [role for role, _ in c.files()] == ["data", "noise_map", "psf"]
    settings = PrepareSettings.from_config(config)
    scales = [prepare_imaging(spec, settings).mask.pixel_scales for spec in found.specs]
    assert scales == [(0.05, 0.05), (0.05, 0.04), (0.1, 0.1), (0.1, 0.1)]


def test_pixel_scales_file_overrides_the_header(tmp_path):
    make_lens(tmp_path / "lenses" / "a")  # PIXSCAY/PIXSCAX = 0.1
    (tmp_path / "lenses" / "a" / "info.json").write_text('{"pixel_scales": 0.2}')
    config = make_config(tmp_path, pixel_scales="header", pixel_scales_file="info.json")
    (spec,) = discover(config).specs
    imaging = prepare_imaging(spec, PrepareSettings.from_config(config))
    assert imaging.mask.pixel_scales == (0.2, 0.2)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"pixel_scales": "0.05"}', "has pixel_scales '0.05'"),
        ('{"pixel_scales": -1}', "has pixel_scales -1"),
        ('{"pixel_scales": 0}', "has pixel_scales 0"),
        ('{"pixel_scales": NaN}', "has pixel_scales nan"),
        ('{"pixel_scales": 1e6}', "at most 3600"),
        ('{"pixel_scales": [0.1, 0.1, 0.1]}', "a pair [sy, sx]"),
        ('{"pixel_scales": true}', "has pixel_scales True"),
        ('{"pixel_scales": null}', "has pixel_scales None"),
        ('{"pixel_scale": 0.05}', "has a key pixel_scale: name it pixel_scales"),
        ("[0.05, 0.05]", "must hold a JSON object"),
        ('{"pixel_scales": 0.05', "is not valid JSON"),
        ("[" * 100_000, "is not valid JSON"),
        (b"\xff\xfe", "is not UTF-8 text"),
        ("fifo", "is a FIFO (named pipe), not a regular file"),
        ("folder", "is a folder, not a regular file"),
        ("dangling", "cannot be read"),
        ("huge", "is larger than 1048576 bytes"),
    ],
)
def test_a_bad_pixel_scales_file_is_a_problem_naming_it(tmp_path, content, expected):
    root = tmp_path / "lenses"
    make_lens(root / "good")
    make_lens(root / "bad")
    path = root / "bad" / "info.json"
    if content == "fifo":
        os.mkfifo(path)  # never opened: reading it would block
    elif content == "folder":
        path.mkdir()
    elif content == "dangling":
        path.symlink_to(root / "nowhere.json")
    elif content == "huge":
        path.write_text('{"pixel_scales": 0.05, "pad": "' + "x" * 2**20 + '"}')
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    found = discover(make_config(tmp_path, pixel_scales_file="info.json"))
    assert [s.name for s in found.specs] == ["good"]
    ((name, message),) = found.problems
    assert name == "bad"
    assert message.startswith(f"dataset 'bad': pixel_scales_file '{path}' ")
    assert expected in message, message
    assert "top-level pixel_scales" in message


@pytest.mark.parametrize("value", ["", "  ", "/etc/info.json"])
def test_pixel_scales_file_must_be_a_name_inside_each_folder(tmp_path, value):
    with pytest.raises(ConfigError, match="pixel_scales_file"):
        make_config(tmp_path, pixel_scales_file=value)
