"""Combined masks and flag maps (issue 14), on real FITS files written here: every member kind
against an independent numpy computation, their union, flag bit masks, the errors that name the
dataset, file, HDU and fix, and a multi-extension cutout with a flag HDU and NaN edges run to
completion by ``lenspipe run``, its unit, band and lens recorded in the store."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.io import fits

from pipeline.cli import main
from pipeline.exc import DatasetError
from pipeline.flow.config import config_from_dict
from pipeline.flow.discover import discover
from pipeline.flow.prepare import PrepareSettings, prepare_dataset
from pipeline.io.store import dataset_records, open_imaging

SCALE = 0.1  # arcsec per pixel
SHAPE = (30, 34)
FLAG_BITS = 6  # bits 0..5 set at random, and bit 31 (negative int32) at a few pixels


def yx(shape=SHAPE, scale=SCALE) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) arcsec of every pixel centre, y up, the frame centred on (0, 0) (DESIGN §3)."""
    rows, cols = np.indices(shape, dtype=float)
    return ((shape[0] - 1) / 2 - rows) * scale, (cols - (shape[1] - 1) / 2) * scale


def circle_masked(radius, centre=(0.0, 0.0)) -> np.ndarray:
    y, x = yx()
    return (y - centre[0]) ** 2 + (x - centre[1]) ** 2 >= radius**2


def annulus_masked(inner, outer, centre=(0.0, 0.0)) -> np.ndarray:
    y, x = yx()
    d2 = (y - centre[0]) ** 2 + (x - centre[1]) ** 2
    return (d2 < inner**2) | (d2 > outer**2)


def ellipse_masked(major, ratio, angle, centre=(0.0, 0.0)) -> np.ndarray:
    y, x = yx()
    dy, dx = y - centre[0], x - centre[1]
    a = np.radians(angle)
    along = dx * np.cos(a) + dy * np.sin(a)
    across = -dx * np.sin(a) + dy * np.cos(a)
    return np.sqrt(along**2 + (across / ratio) ** 2) > major


def flagged(flags: np.ndarray, bits, width: int = 32) -> np.ndarray:
    """Where any of ``bits`` is set, reading each value as a ``width``-bit integer (Python ints,
    one pixel at a time)."""
    out = np.zeros(flags.shape, dtype=bool)
    for index, value in np.ndenumerate(flags):
        word = int(value) & ((1 << width) - 1)
        out[index] = any((word >> bit) & 1 for bit in bits)
    return out


def images(seed: int = 3) -> dict[str, np.ndarray]:
    """Data, noise, PSF, a mask file (values 0, 1 and 7) and an int32 flag map."""
    rng = np.random.default_rng(seed)
    y, x = yx()
    data = np.exp(-(y**2 + x**2) / 0.5) + 0.05 * rng.standard_normal(SHAPE)
    psf = np.exp(-((np.indices((5, 5)) - 2.0) ** 2) / 1.5).prod(axis=0)
    mask = rng.choice([0, 0, 0, 0, 0, 0, 0, 0, 1, 7], size=SHAPE).astype(np.int16)
    flags = rng.integers(0, 2, size=(FLAG_BITS, *SHAPE)) * rng.random((FLAG_BITS, *SHAPE)) > 0.8
    words = (flags * (1 << np.arange(FLAG_BITS))[:, None, None]).sum(axis=0).astype(np.int32)
    words[rng.random(SHAPE) < 0.03] |= np.int32(-(2**31))  # bit 31: a negative int32
    return {
        "data": data,
        "noise_map": np.full(SHAPE, 0.05),
        "psf": psf / psf.sum(),
        "mask": mask,
        "flags": words,
    }


@pytest.fixture(scope="module")
def lens(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """A folders survey of one lens ``lenses/lens_a`` with every file, and its arrays."""
    root = tmp_path_factory.mktemp("combine")
    arrays = images()
    folder = root / "lenses" / "lens_a"
    folder.mkdir(parents=True)
    for name, array in arrays.items():
        fits.PrimaryHDU(array).writeto(folder / f"{name}.fits")
    return root, arrays


def _prepare(root: Path, mask: dict, **inputs):
    config = config_from_dict(
        {
            "inputs": {
                "kind": "folders",
                "root": "lenses",
                "mask": "mask.fits",
                "flags": "flags.fits",
                **inputs,
            },
            "pixel_scales": SCALE,
            "mask": mask,
            "output": {"store": "survey.zarr"},
        },
        base_dir=root,
    )
    found = discover(config)
    assert found.problems == []
    (spec,) = found.specs
    return prepare_dataset(spec, PrepareSettings.from_config(config))


CIRCLE = {"kind": "circular", "radius": 1.23, "centre": [0.2, -0.1]}
ANNULUS = {"kind": "annular", "inner_radius": 0.35, "outer_radius": 1.1, "centre": [0.0, 0.15]}
ELLIPSE = {
    "kind": "elliptical",
    "major_axis_radius": 1.3,
    "axis_ratio": 0.6,
    "angle": 30.0,
    "centre": [-0.1, 0.1],
}
FLAGS = {"kind": "flags", "bits": [1, 4]}


def expected_member(member: dict, arrays: dict[str, np.ndarray]) -> np.ndarray:
    if member["kind"] == "circular":
        return circle_masked(member["radius"], member["centre"])
    if member["kind"] == "annular":
        return annulus_masked(member["inner_radius"], member["outer_radius"], member["centre"])
    if member["kind"] == "elliptical":
        return ellipse_masked(
            member["major_axis_radius"], member["axis_ratio"], member["angle"], member["centre"]
        )
    if member["kind"] == "file":
        return arrays["mask"] != 0
    return flagged(arrays["flags"], member["bits"])


MEMBERS = [CIRCLE, ANNULUS, ELLIPSE, {"kind": "file"}, FLAGS]


@pytest.mark.parametrize("member", MEMBERS, ids=lambda m: m["kind"])
@pytest.mark.parametrize("form", ["alone", "combined"])
def test_each_member_masks_what_numpy_says(lens, member, form):
    root, arrays = lens
    mask = member if form == "alone" else {"combine": [member]}
    got = _prepare(root, mask)
    want = expected_member(member, arrays)
    assert 0 < want.sum() < want.size
    np.testing.assert_array_equal(np.asarray(got.imaging.mask), want)
    counts = None if form == "alone" and member["kind"] != "flags" else [int(want.sum())]
    assert got.mask_members == (
        None if counts is None else [{"kind": member["kind"], "masked": counts[0]}]
    )


def test_the_union_of_every_member_kind(lens):
    root, arrays = lens
    got = _prepare(root, {"combine": MEMBERS})
    each = [expected_member(m, arrays) for m in MEMBERS]
    want = np.logical_or.reduce(each)
    assert want.sum() > max(m.sum() for m in each)  # every member adds pixels
    np.testing.assert_array_equal(np.asarray(got.imaging.mask), want)
    assert got.imaging.shape_slim == int((~want).sum()) > 0
    assert got.bunit is None and "bunit" not in got.metadata()  # no BUNIT card in the data
    assert got.mask_members == [
        {"kind": m["kind"], "masked": int(e.sum())} for m, e in zip(MEMBERS, each, strict=True)
    ]
    np.testing.assert_array_equal(got.imaging.data.native[~want], arrays["data"][~want])


def test_bits_and_bit_mask_are_the_same_mask_and_bit_31_of_a_negative_int32(lens):
    root, arrays = lens
    by_bits = _prepare(root, {"kind": "flags", "bits": [0, 3]})
    by_mask = _prepare(root, {"kind": "flags", "bit_mask": 9})
    np.testing.assert_array_equal(
        np.asarray(by_bits.imaging.mask), np.asarray(by_mask.imaging.mask)
    )
    np.testing.assert_array_equal(
        np.asarray(by_bits.imaging.mask), flagged(arrays["flags"], [0, 3])
    )
    sign = _prepare(root, {"kind": "flags", "bits": [31]})
    want = arrays["flags"] < 0
    assert 0 < want.sum()
    np.testing.assert_array_equal(np.asarray(sign.imaging.mask), want)
    # bits beyond the map's 32 are never set, even in its negative values
    high = _prepare(root, {"combine": [CIRCLE, {"kind": "flags", "bits": [40]}]})
    np.testing.assert_array_equal(np.asarray(high.imaging.mask), circle_masked(1.23, (0.2, -0.1)))
    assert high.mask_members[1] == {"kind": "flags", "masked": 0}


def _lens_with_flags(root: Path, tmp_path: Path, flags: fits.PrimaryHDU) -> Path:
    """``tmp_path/lenses/lens_a``: the lens of ``root`` with ``flags`` as its flag map."""
    folder = tmp_path / "lenses" / "lens_a"
    folder.mkdir(parents=True)
    for name in ("data", "noise_map", "psf", "mask"):
        os.symlink(root / "lenses" / "lens_a" / f"{name}.fits", folder / f"{name}.fits")
    flags.writeto(folder / "flags.fits")
    return folder


def test_blank_flags_are_masked_and_unsigned_maps_read_as_written(lens, tmp_path):
    root, _ = lens
    values = np.zeros(SHAPE, dtype=np.int16)
    values[3, 4], values[5, 6], values[7, 8] = -99, 4, -32768  # -99: BLANK; -32768: bit 15
    hdu = fits.PrimaryHDU(values)
    hdu.header["BLANK"] = -99
    _lens_with_flags(root, tmp_path / "blank", hdu)
    got = _prepare(tmp_path / "blank", {"kind": "flags", "bits": [2, 15]})
    want = np.zeros(SHAPE, dtype=bool)
    want[3, 4] = want[5, 6] = want[7, 8] = True
    np.testing.assert_array_equal(np.asarray(got.imaging.mask), want)
    assert got.mask_members == [{"kind": "flags", "masked": 3}]
    unsigned = np.zeros(SHAPE, dtype=np.uint16)
    unsigned[1, 1], unsigned[2, 2] = 0x8000, 0x8001  # stored as int16 with BZERO = 32768
    _lens_with_flags(root, tmp_path / "unsigned", fits.PrimaryHDU(unsigned))
    got = _prepare(tmp_path / "unsigned", {"kind": "flags", "bits": [0]})
    want = np.zeros(SHAPE, dtype=bool)
    want[2, 2] = True
    np.testing.assert_array_equal(np.asarray(got.imaging.mask), want)


def test_the_manifest_radius_and_centre_apply_to_every_shape_member(lens, tmp_path):
    root, arrays = lens
    folder = root / "lenses" / "lens_a"
    (tmp_path / "manifest.csv").write_text(
        "name,data,noise_map,psf,flags,flags_hdu,mask_radius,mask_centre_y,mask_centre_x\n"
        f"lens_a,{folder}/data.fits,{folder}/noise_map.fits,{folder}/psf.fits,"
        f"{folder}/flags.fits,0,0.8,0.1,-0.2\n"
    )
    config = config_from_dict(
        {
            "inputs": {"kind": "manifest", "path": "manifest.csv"},
            "pixel_scales": SCALE,
            "mask": {"combine": [CIRCLE, ELLIPSE, FLAGS]},
            "output": {"store": "survey.zarr"},
        },
        base_dir=tmp_path,
    )
    (spec,) = discover(config).specs
    got = prepare_dataset(spec, PrepareSettings.from_config(config))
    want = circle_masked(0.8, (0.1, -0.2)) | ellipse_masked(0.8, 0.6, 30.0, (0.1, -0.2))
    want |= flagged(arrays["flags"], FLAGS["bits"])
    np.testing.assert_array_equal(np.asarray(got.imaging.mask), want)


# ---------------------------------------------------------------------------------------- errors
def test_a_float_flag_map_is_refused_naming_dataset_file_and_hdu(lens, tmp_path):
    root, arrays = lens
    flags = fits.PrimaryHDU(arrays["flags"].astype(np.float32))
    folder = _lens_with_flags(root, tmp_path, flags)
    with pytest.raises(DatasetError) as err:
        _prepare(tmp_path, {"combine": [CIRCLE, FLAGS]})
    assert str(err.value).startswith(
        f"dataset 'lens_a': flag map '{folder / 'flags.fits'}' HDU 0 is not an integer image "
        "(BITPIX=-32, BSCALE=1, BZERO=0); flag bits need integers"
    )


def test_a_member_file_of_another_shape_or_missing_names_the_fix(lens, tmp_path):
    root, arrays = lens
    folder = _lens_with_flags(root, tmp_path, fits.PrimaryHDU(arrays["flags"][:-2]))
    with pytest.raises(DatasetError) as err:
        _prepare(tmp_path, {"combine": [{"kind": "file"}, FLAGS]})
    assert str(err.value) == (
        f"dataset 'lens_a': flag map '{folder / 'flags.fits'}' HDU 0 has shape (28, 34) but the "
        f"data '{folder / 'data.fits'}' HDU 0 are (30, 34); give a flag map of the data's cutout "
        "(folders: inputs.flags, manifest: flags column, MEF: the band's flags EXTNAME)"
    )
    with pytest.raises(DatasetError) as err:
        _prepare(tmp_path, {"combine": [CIRCLE, FLAGS]}, flags=None)
    assert str(err.value) == (
        "dataset 'lens_a': the mask uses a flag map (kind 'flags', alone or in mask.combine) but "
        f"the dataset of data '{folder / 'data.fits'}' has no flag map; give one (folders: "
        "inputs.flags, manifest: flags column, MEF: the band's flags EXTNAME) or remove that mask"
    )


def test_a_union_that_masks_everything_is_described_member_by_member(lens):
    root, _ = lens
    apart = [  # two disjoint discs: their union masks every pixel
        {"kind": "circular", "radius": 0.3, "centre": [0.5, 0.0]},
        {"kind": "annular", "inner_radius": 0.0, "outer_radius": 0.3, "centre": [-0.5, 0.0]},
        {"kind": "flags", "bit_mask": 2**63 - 1},
    ]
    with pytest.raises(DatasetError) as err:
        _prepare(root, {"combine": apart})
    flags = root / "lenses" / "lens_a" / "flags.fits"
    assert (
        "the mask union of circular (radius=0.3, centre=(0.5, 0.0); arcsec), annular "
        "(inner_radius=0.0, outer_radius=0.3, centre=(-0.5, 0.0); arcsec), flags "
        f"'{flags}' HDU 0 (bit_mask=9223372036854775807) leaves no unmasked pixel"
    ) in str(err.value)


# ---------------------------------------------------------------------------------------- MEF
BANDS = {
    "VIS": {"data": "VIS_BGSUB", "noise_map": "VIS_RMS", "psf": "VIS_PSF", "flags": "VIS_FLAG"},
    "NIR_H": {"data": "H_BGSUB", "noise_map": "H_RMS", "psf": "H_PSF", "flags": "H_FLAG"},
}
UNITS = {"VIS": "electron/s", "NIR_H": "ADU"}
RADIUS = 1.6  # arcsec: the top and bottom rows' middles (NaN data) are inside the circle


def cutout(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """A Euclid-like cutout: per band, data with NaN edges (two top rows, the left column), RMS
    with a NaN right column, one zero and one negative pixel, a PSF and an int32 flag map."""
    arrays: dict[str, dict[str, np.ndarray]] = {}
    hdus = [fits.PrimaryHDU()]
    for seed, (band, names) in enumerate(BANDS.items()):
        made = images(seed + 10)
        made["data"][:2, :] = np.nan
        made["data"][:, 0] = np.nan
        made["noise_map"][:, -1] = np.nan
        made["noise_map"][15, 17] = 0.0
        made["noise_map"][14, 20] = -1.0
        made["flags"][15, 10:13] = 1  # bit 0: masked
        arrays[band] = made
        for role, extname in names.items():
            hdu = fits.ImageHDU(made[role], name=extname)
            if role == "data":
                hdu.header["BUNIT"] = UNITS[band]
            hdus.append(hdu)
    fits.HDUList(hdus).writeto(path)
    return arrays


def expected_cutout(made: dict[str, np.ndarray]) -> tuple[np.ndarray, dict, list]:
    """(final mask, bad-pixel counts, member counts), computed here with numpy alone."""
    circle = circle_masked(RADIUS)
    flags = flagged(made["flags"], [0])
    unmasked = ~(circle | flags)
    nonfinite = unmasked & ~np.isfinite(made["data"])
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(made["noise_map"]) & (made["noise_map"] > 0)
    bad_noise = unmasked & ~nonfinite & ~usable
    counts = {"nonfinite_data": int(nonfinite.sum()), "unusable_noise": int(bad_noise.sum())}
    members = [
        {"kind": "circular", "masked": int(circle.sum())},
        {"kind": "flags", "masked": int(flags.sum())},
    ]
    return circle | flags | nonfinite | bad_noise, counts, members


def test_a_mef_cutout_with_flag_hdus_and_nan_edges_runs_to_completion(tmp_path):
    (tmp_path / "cutouts").mkdir()
    arrays = cutout(tmp_path / "cutouts" / "EUC_7.fits")
    config = {
        "inputs": {"kind": "mef", "root": "cutouts", "bands": BANDS},
        "pixel_scales": SCALE,
        "mask": {
            "combine": [{"kind": "circular", "radius": RADIUS}, {"kind": "flags", "bits": [0]}],
            "bad_pixels": "mask",
        },
        "output": {"store": "survey.zarr"},
        "sparse_operator": {"backend": "numpy", "batch_size": 200},
        "cluster": {"kind": "local", "n_workers": 1},
        "run": {"progress": False},
    }
    path = tmp_path / "survey.yaml"
    path.write_text(yaml.safe_dump(config))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["run", str(path), "--no-progress"])
    assert code == 0, err.getvalue()
    records = dataset_records(tmp_path / "survey.zarr")
    assert sorted(records) == ["EUC_7_NIR_H", "EUC_7_VIS"]
    cutout_path = os.fspath(tmp_path / "cutouts" / "EUC_7.fits")
    for band, made in arrays.items():
        name = f"EUC_7_{band}"
        record = records[name]
        want, counts, members = expected_cutout(made)
        assert counts["nonfinite_data"] > 0 and counts["unusable_noise"] == 2
        assert (record.bunit, record.band, record.lens) == (UNITS[band], band, "EUC_7")
        assert dict(record.bad_pixels) == counts
        assert record.raw["mask_members"] == members
        assert record.n_pixels == int((~want).sum())
        assert [(s.role, s.path, s.hdu) for s in record.sources] == [
            (role, cutout_path, BANDS[band][role]) for role in ("data", "noise_map", "psf", "flags")
        ]
        imaging = open_imaging(tmp_path / "survey.zarr", name)
        np.testing.assert_array_equal(np.asarray(imaging.mask), want)
        np.testing.assert_array_equal(imaging.data.native[~want], made["data"][~want])
    assert "Bad pixels masked" in out.getvalue()
