"""Discovery: which files make each dataset (folders, manifest CSV, multi-extension FITS).

Discovery reads no pixels, so tiny arrays are enough. Bad entries become ``problems`` and never
raise; only a broken layout (no root folder, manifest without required columns) raises.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.exc import ConfigError
from pipeline.flow.config import config_from_dict
from pipeline.flow.discover import FileRef, discover
from pipeline.io.fits import write_fits_array, write_fits_hdus

TINY = np.ones((4, 4))


def make_config(tmp_path: Path, inputs: dict, mask: dict | None = None):
    return config_from_dict(
        {
            "inputs": inputs,
            "pixel_scales": 0.1,
            "mask": mask or {"kind": "circular", "radius": 1.0},
            "output": {"store": "survey.zarr"},
        },
        base_dir=tmp_path,
    )


FILE_MASK = {"kind": "file"}


def make_lens(folder: Path, names=("data.fits", "noise_map.fits", "psf.fits")) -> None:
    for file in names:
        write_fits_array(folder / file, TINY, pixel_scales=0.1)


def write_csv(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------------------------- folders
def test_folders_one_spec_per_folder_sorted(tmp_path):
    for name in ("lens_c", "lens_a", "lens_b"):
        make_lens(tmp_path / "lenses" / name)
    (tmp_path / "lenses" / "notes.txt").write_text("not a folder")
    found = discover(make_config(tmp_path, {"kind": "folders", "root": "lenses"}))
    assert found.problems == []
    assert [s.name for s in found.specs] == ["lens_a", "lens_b", "lens_c"]
    spec = found.specs[0]
    folder = tmp_path / "lenses" / "lens_a"
    assert spec.data == FileRef(os.fspath(folder / "data.fits"), 0)
    assert spec.noise_map == FileRef(os.fspath(folder / "noise_map.fits"), 0)
    assert spec.psf == FileRef(os.fspath(folder / "psf.fits"), 0)
    assert spec.mask is None
    assert spec.pixel_scales is None and spec.mask_radius is None and spec.mask_centre is None


def test_folders_file_names_and_hdus(tmp_path):
    make_lens(tmp_path / "lenses" / "l1", ("img.fits", "rms.fits", "k.fits", "m.fits"))
    inputs = {
        "kind": "folders",
        "root": "lenses",
        "data": "img.fits",
        "noise_map": "rms.fits",
        "psf": "k.fits",
        "mask": "m.fits",
        "data_hdu": 1,
        "noise_map_hdu": "RMS",
        "mask_hdu": 2,
    }
    (spec,) = discover(make_config(tmp_path, inputs, mask=FILE_MASK)).specs
    folder = tmp_path / "lenses" / "l1"
    assert spec.data == FileRef(os.fspath(folder / "img.fits"), 1)
    assert spec.noise_map == FileRef(os.fspath(folder / "rms.fits"), "RMS")
    assert spec.psf == FileRef(os.fspath(folder / "k.fits"), 0)
    assert spec.mask == FileRef(os.fspath(folder / "m.fits"), 2)


def test_folders_pattern(tmp_path):
    for name in ("lens_1", "lens_2", "calib", "lens_x"):
        make_lens(tmp_path / name)
    config = make_config(tmp_path, {"kind": "folders", "root": ".", "pattern": "lens_[0-9]"})
    assert [s.name for s in discover(config).specs] == ["lens_1", "lens_2"]


def test_folders_missing_root_raises(tmp_path):
    with pytest.raises(ConfigError, match="inputs.root"):
        discover(make_config(tmp_path, {"kind": "folders", "root": "nowhere"}))


def test_folders_unsafe_names_are_problems(tmp_path):
    make_lens(tmp_path / "lenses" / "good")
    make_lens(tmp_path / "lenses" / "has space")
    found = discover(make_config(tmp_path, {"kind": "folders", "root": "lenses"}))
    assert [s.name for s in found.specs] == ["good"]
    assert [name for name, _ in found.problems] == ["has space"]
    assert "not a safe store key" in found.problems[0][1]


# ---------------------------------------------------------------------------------------- manifest
def test_manifest_paths_relative_to_the_csv(tmp_path):
    make_lens(tmp_path / "survey" / "files" / "a")
    write_csv(
        tmp_path / "survey" / "manifest.csv",
        [
            "name,data,noise_map,psf",
            "a,files/a/data.fits,files/a/noise_map.fits,files/a/psf.fits",
            f"b,{tmp_path}/abs.fits,files/a/noise_map.fits,files/a/psf.fits",
        ],
    )
    found = discover(make_config(tmp_path, {"kind": "manifest", "path": "survey/manifest.csv"}))
    assert found.problems == []
    a, b = found.specs
    base = tmp_path / "survey"
    assert a.name == "a"
    assert a.data == FileRef(os.fspath(base / "files/a/data.fits"), 0)
    assert a.noise_map.path == os.fspath(base / "files/a/noise_map.fits")
    assert a.psf.path == os.fspath(base / "files/a/psf.fits")
    assert a.mask is None and a.pixel_scales is None and a.mask_radius is None
    assert b.data.path == os.fspath(tmp_path / "abs.fits")  # absolute paths are kept


def test_manifest_keeps_csv_order(tmp_path):
    write_csv(
        tmp_path / "m.csv",
        ["name,data,noise_map,psf"] + [f"{n},d.fits,n.fits,p.fits" for n in ("z", "a", "m")],
    )
    found = discover(make_config(tmp_path, {"kind": "manifest", "path": "m.csv"}))
    assert [s.name for s in found.specs] == ["z", "a", "m"]


def test_manifest_optional_columns(tmp_path):
    write_csv(
        tmp_path / "m.csv",
        [
            "name,data,data_hdu,noise_map,noise_map_hdu,psf,psf_hdu,mask,mask_hdu,"
            "pixel_scale,mask_radius,mask_centre_y,mask_centre_x",
            "a,d.fits,1,d.fits,RMS,p.fits,PSF,m.fits,2,0.05,2.5,0.1,-0.2",
            "b,d.fits,,d.fits,,p.fits,,,,,,,",
        ],
    )
    config = make_config(tmp_path, {"kind": "manifest", "path": "m.csv"}, mask=FILE_MASK)
    a, b = discover(config).specs
    assert a.data == FileRef(os.fspath(tmp_path / "d.fits"), 1)
    assert a.noise_map == FileRef(os.fspath(tmp_path / "d.fits"), "RMS")
    assert a.psf == FileRef(os.fspath(tmp_path / "p.fits"), "PSF")
    assert a.mask == FileRef(os.fspath(tmp_path / "m.fits"), 2)
    assert a.pixel_scales == 0.05
    assert a.mask_radius == 2.5
    assert a.mask_centre == (0.1, -0.2)
    # empty optional cells fall back to the defaults
    assert b.data.hdu == 0 and b.noise_map.hdu == 0 and b.psf.hdu == 0
    assert b.mask is None and b.pixel_scales is None
    assert b.mask_radius is None and b.mask_centre is None


def test_manifest_with_byte_order_mark(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes("\ufeffname,data,noise_map,psf\na,d.fits,n.fits,p.fits\n".encode())
    found = discover(make_config(tmp_path, {"kind": "manifest", "path": "m.csv"}))
    assert [s.name for s in found.specs] == ["a"]


@pytest.mark.parametrize("column", ["name", "noise_map", "psf"])
def test_manifest_missing_required_column_raises(tmp_path, column):
    header = [c for c in ("name", "data", "noise_map", "psf") if c != column]
    write_csv(tmp_path / "m.csv", [",".join(header), ",".join(["x"] * len(header))])
    with pytest.raises(ConfigError, match=column) as info:
        discover(make_config(tmp_path, {"kind": "manifest", "path": "m.csv"}))
    assert "m.csv" in str(info.value)


def test_manifest_missing_file_raises(tmp_path):
    with pytest.raises(ConfigError, match="inputs.path"):
        discover(make_config(tmp_path, {"kind": "manifest", "path": "none.csv"}))


def test_manifest_bad_number_is_a_problem_naming_the_line(tmp_path):
    write_csv(
        tmp_path / "m.csv",
        [
            "name,data,noise_map,psf,mask_radius",
            "good,d.fits,n.fits,p.fits,2.0",
            "bad,d.fits,n.fits,p.fits,big",
            "also_good,d.fits,n.fits,p.fits,",
        ],
    )
    found = discover(make_config(tmp_path, {"kind": "manifest", "path": "m.csv"}))
    assert [s.name for s in found.specs] == ["good", "also_good"]
    ((name, message),) = found.problems
    assert name == "bad"
    assert "line 3" in message and "mask_radius" in message and "'big'" in message


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("mask_radius", "-1"),
        ("mask_radius", "nan"),
        ("pixel_scale", "0"),
        ("mask_radius", "1e300"),  # the config's bounds hold per row too
        ("pixel_scale", "3601"),
        ("mask_centre_y", "-1e6"),
    ],
)
def test_manifest_non_positive_values_are_problems(tmp_path, column, value):
    write_csv(tmp_path / "m.csv", [f"name,data,noise_map,psf,{column}", f"a,d,n,p,{value}"])
    found = discover(make_config(tmp_path, {"kind": "manifest", "path": "m.csv"}))
    assert found.specs == []
    ((name, message),) = found.problems
    assert name == "a" and column in message and "line 2" in message


@pytest.mark.parametrize("given", ["mask_centre_y", "mask_centre_x"])
def test_manifest_half_a_centre_is_a_problem(tmp_path, given):
    write_csv(tmp_path / "m.csv", [f"name,data,noise_map,psf,{given}", "a,d,n,p,0.5"])
    found = discover(make_config(tmp_path, {"kind": "manifest", "path": "m.csv"}))
    assert found.specs == []
    ((name, message),) = found.problems
    assert name == "a"
    assert "line 2" in message and "mask_centre_y" in message and "mask_centre_x" in message


def test_manifest_empty_file_column_is_a_problem(tmp_path):
    write_csv(tmp_path / "m.csv", ["name,data,noise_map,psf", "a,d.fits,,p.fits"])
    found = discover(make_config(tmp_path, {"kind": "manifest", "path": "m.csv"}))
    assert found.specs == []
    ((name, message),) = found.problems
    assert name == "a" and "noise_map" in message and "line 2" in message


def test_manifest_unsafe_and_duplicate_names_are_problems(tmp_path):
    write_csv(
        tmp_path / "m.csv",
        [
            "name,data,noise_map,psf",
            "a/b,d1.fits,n,p",
            "..,d2.fits,n,p",
            "ok,d3.fits,n,p",
            ",d4.fits,n,p",
            "ok,d5.fits,n,p",
            "ok,d6.fits,n,p",
        ],
    )
    found = discover(make_config(tmp_path, {"kind": "manifest", "path": "m.csv"}))
    (spec,) = found.specs
    assert spec.name == "ok" and spec.data.path.endswith("d3.fits")  # the first is kept
    names = [name for name, _ in found.problems]
    assert names == ["a/b", "..", "", "ok", "ok"]
    messages = dict(zip(range(5), (m for _, m in found.problems), strict=True))
    assert "not a safe store key" in messages[0] and "d1.fits" in messages[0]
    assert "not a safe store key" in messages[1]
    assert "duplicate" in messages[3] and "d5.fits" in messages[3] and "d3.fits" in messages[3]


def test_manifest_name_of_an_invalid_row_is_not_reused(tmp_path):
    write_csv(
        tmp_path / "m.csv",
        ["name,data,noise_map,psf,mask_radius", "a,d1,n,p,x", "a,d2,n,p,1.0"],
    )
    found = discover(make_config(tmp_path, {"kind": "manifest", "path": "m.csv"}))
    assert found.specs == []
    assert [name for name, _ in found.problems] == ["a", "a"]
    assert "duplicate" in found.problems[1][1]


# ---------------------------------------------------------------------------------------- MEF
BANDS = {
    "VIS": {"data": "VIS_BGSUB", "noise_map": "VIS_RMS", "psf": "VIS_PSF"},
    "NIR_H": {"data": "NIR_H_BGSUB", "noise_map": "NIR_H_RMS", "psf": "NIR_H_PSF", "mask": "MSK"},
}


def write_cutout(path: Path) -> None:
    hdus = {ext: TINY for band in BANDS.values() for ext in band.values()}
    write_fits_hdus(path, hdus, pixel_scales=0.1)


def test_mef_one_spec_per_file_and_band(tmp_path):
    for stem in ("EUC_2", "EUC_1"):
        write_cutout(tmp_path / "cutouts" / f"{stem}.fits")
    (tmp_path / "cutouts" / "readme.txt").write_text("ignored by the pattern")
    config = make_config(
        tmp_path, {"kind": "mef", "root": "cutouts", "bands": BANDS}, mask=FILE_MASK
    )
    found = discover(config)
    assert found.problems == []
    assert [s.name for s in found.specs] == ["EUC_1_VIS", "EUC_1_NIR_H", "EUC_2_VIS", "EUC_2_NIR_H"]
    vis, nir = found.specs[:2]
    path = os.fspath(tmp_path / "cutouts" / "EUC_1.fits")
    assert vis.data == FileRef(path, "VIS_BGSUB")
    assert vis.noise_map == FileRef(path, "VIS_RMS")
    assert vis.psf == FileRef(path, "VIS_PSF")
    assert vis.mask is None
    assert nir.data == FileRef(path, "NIR_H_BGSUB")
    assert nir.mask == FileRef(path, "MSK")
    assert (vis.lens, vis.band, nir.lens, nir.band) == ("EUC_1", "VIS", "EUC_1", "NIR_H")


def test_mef_pattern_and_missing_root(tmp_path):
    write_cutout(tmp_path / "c" / "keep.fits")
    write_cutout(tmp_path / "c" / "skip.fit")
    config = make_config(
        tmp_path, {"kind": "mef", "root": "c", "pattern": "*.fits", "bands": BANDS}
    )
    assert {s.name for s in discover(config).specs} == {"keep_VIS", "keep_NIR_H"}
    with pytest.raises(ConfigError, match="inputs.root"):
        discover(make_config(tmp_path, {"kind": "mef", "root": "nope", "bands": BANDS}))


def test_mef_duplicate_names_are_problems(tmp_path):
    # 'a.fits' and 'a.fit' both have the stem 'a': the first (sorted) file keeps 'a_VIS'
    for file in ("a.fits", "a.fit", "b.fits"):
        write_cutout(tmp_path / file)
    bands = {"VIS": BANDS["VIS"]}
    config = make_config(
        tmp_path, {"kind": "mef", "root": ".", "pattern": "*.fit*", "bands": bands}
    )
    found = discover(config)
    assert [s.name for s in found.specs] == ["a_VIS", "b_VIS"]
    assert found.specs[0].data.path == os.fspath(tmp_path / "a.fit")
    ((name, message),) = found.problems
    assert name == "a_VIS" and "duplicate" in message
    assert "a.fits" in message and "a.fit" in message


def test_mef_compressed_names_and_hidden_files(tmp_path):
    """``x.fits.fz`` and ``x.fits.gz`` give dataset ``x``; macOS's ``._x.fits`` (AppleDouble) is
    skipped, listed once with the reason."""
    for file in ("EUC_1.fits.fz", "EUC_2.fits.gz", "EUC_3.fits", "._EUC_3.fits"):
        write_cutout(tmp_path / "c" / file)
    bands = {"VIS": BANDS["VIS"]}
    config = make_config(
        tmp_path, {"kind": "mef", "root": "c", "pattern": "*.fits*", "bands": bands}
    )
    found = discover(config)
    assert [s.name for s in found.specs] == ["EUC_1_VIS", "EUC_2_VIS", "EUC_3_VIS"]
    assert found.specs[0].data == FileRef(os.fspath(tmp_path / "c" / "EUC_1.fits.fz"), "VIS_BGSUB")
    assert found.problems == []
    assert found.skipped == [
        (
            os.fspath(tmp_path / "c" / "._EUC_3.fits"),
            "hidden (its name starts with '.'): never a dataset",
        )
    ]


# ---------------------------------------------------------------------------------------- files
def test_an_unused_mask_column_is_dropped_and_never_examined(tmp_path):
    """With a circular mask, the manifest's mask column is not part of the dataset: a FIFO there
    is neither opened nor reported (opening it would block forever)."""
    os.mkfifo(tmp_path / "m.fifo")
    write_csv(tmp_path / "m.csv", ["name,data,noise_map,psf,mask", "a,d.fits,n.fits,p.fits,m.fifo"])
    (spec,) = discover(make_config(tmp_path, {"kind": "manifest", "path": "m.csv"})).specs
    assert spec.mask is None
    assert [role for role, _ in spec.files()] == ["data", "noise_map", "psf"]


FLAGS_MASK = {"kind": "flags", "bits": [0]}


@pytest.mark.parametrize(
    ("mask", "kept"),
    [
        ({"kind": "circular", "radius": 1.0}, []),
        (FILE_MASK, ["mask"]),
        (FLAGS_MASK, ["flags"]),
        ({"combine": [{"kind": "circular", "radius": 1.0}, FLAGS_MASK]}, ["flags"]),
        (
            {"combine": [FILE_MASK, {"kind": "annular", "inner_radius": 0, "outer_radius": 1}]},
            ["mask"],
        ),
        ({"combine": [FLAGS_MASK, FILE_MASK]}, ["mask", "flags"]),
    ],
)
def test_mask_and_flag_files_are_inputs_only_when_the_mask_uses_them(tmp_path, mask, kept):
    """An unused mask or flags column is dropped, never examined (a FIFO would block)."""
    os.mkfifo(tmp_path / "unused.fifo")
    names = {role: "unused.fifo" for role in ("mask", "flags") if role not in kept}
    names.update({role: f"{role}.fits" for role in kept})
    write_csv(
        tmp_path / "m.csv",
        [
            "name,data,noise_map,psf,mask,flags,flags_hdu",
            f"a,d,n,p,{names['mask']},{names['flags']},3",
        ],
    )
    found = discover(make_config(tmp_path, {"kind": "manifest", "path": "m.csv"}, mask=mask))
    assert found.problems == []
    (spec,) = found.specs
    assert [role for role, _ in spec.files()] == ["data", "noise_map", "psf", *kept]
    assert (spec.mask is not None, spec.flags is not None) == ("mask" in kept, "flags" in kept)
    if "flags" in kept:
        assert spec.flags == FileRef(os.fspath(tmp_path / "flags.fits"), 3)


def test_folders_and_mef_flag_maps(tmp_path):
    make_lens(tmp_path / "lenses" / "l1", ("data.fits", "noise_map.fits", "psf.fits", "f.fits.gz"))
    inputs = {"kind": "folders", "root": "lenses", "flags": "f.fits", "flags_hdu": "FLAG"}
    (spec,) = discover(make_config(tmp_path, inputs, mask=FLAGS_MASK)).specs
    assert spec.flags == FileRef(os.fspath(tmp_path / "lenses" / "l1" / "f.fits.gz"), "FLAG")
    assert spec.files()[-1] == ("flags", spec.flags)
    assert spec.band is spec.lens is None
    bands = {"VIS": {**BANDS["VIS"], "flags": "VIS_FLAG"}}
    write_cutout(tmp_path / "cutouts" / "EUC_1.fits")
    config = make_config(tmp_path, {"kind": "mef", "root": "cutouts", "bands": bands}, FLAGS_MASK)
    (vis,) = discover(config).specs
    path = os.fspath(tmp_path / "cutouts" / "EUC_1.fits")
    assert vis.flags == FileRef(path, "VIS_FLAG") and vis.mask is None
    assert [role for role, _ in vis.files()] == ["data", "noise_map", "psf", "flags"]


@pytest.mark.parametrize(
    ("target", "kind"),
    [("fifo", "a FIFO (named pipe)"), ("/dev/zero", "a character device"), ("dir", "a folder")],
)
def test_inputs_that_are_not_regular_files_are_problems(tmp_path, target, kind):
    make_lens(tmp_path / "lenses" / "good")
    make_lens(tmp_path / "lenses" / "odd", ("data.fits", "psf.fits"))
    noise = tmp_path / "lenses" / "odd" / "noise_map.fits"
    if target == "fifo":
        os.mkfifo(noise)
    elif target == "dir":
        noise.mkdir()
    else:
        noise.symlink_to(target)  # a link is followed: what it points to must be a regular file
    found = discover(make_config(tmp_path, {"kind": "folders", "root": "lenses"}))
    assert [s.name for s in found.specs] == ["good"]
    ((name, message),) = found.problems
    assert name == "odd"
    assert f"noise_map '{noise}' is {kind}, not a regular file" in message


def test_a_manifest_that_is_a_fifo_is_refused_without_opening_it(tmp_path):
    os.mkfifo(tmp_path / "m.csv")
    with pytest.raises(ConfigError, match="is a FIFO"):
        discover(make_config(tmp_path, {"kind": "manifest", "path": "m.csv"}))
